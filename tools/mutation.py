"""Mutation testing of relay/core and relay/adapters with mutmut, one module at a time.

Each module is mutated in a scratch copy of the project with mutmut told to mutate that module
only and to run only the module's own unit tests (``[tool.mutation.tests]`` in pyproject.toml),
so a mutant is judged by the tests written for it, never by the end-to-end suite. The run prints
a table of killed/total per module, lists every mutant that survived with its diff, and fails if
a module is under the threshold once the mutants named equivalent in the equivalents file are
left out. ``--changed`` runs only the modules whose source or tests differ from the ones the
record (``mutation-scores.json``) was made from; every run rewrites the record's entries for the
modules it ran.

    python tools/mutation.py                       # every module in [tool.mutation.tests]
    python tools/mutation.py relay/core/gaps.py    # the modules named
    python tools/mutation.py --changed             # what CI runs
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent

# Statuses mutmut gives a mutant that a test told apart from the original: a test failed, or
# the mutant ran past its time limit (an endless loop is as caught as a wrong answer).
KILLED_STATUSES = frozenset({"killed", "timeout"})


class MutationConfigError(Exception):
    """The mutation settings, the equivalents file or the command line are wrong."""


class MutationRunError(Exception):
    """mutmut could not measure a module (its tests fail unmutated, or it crashed)."""


@attrs.frozen
class Settings:
    """``[tool.mutation]`` and ``[tool.mutmut]`` of pyproject.toml."""

    threshold: float
    record: Path
    equivalents: Path
    tests_by_module: dict[str, tuple[str, ...]]
    mutmut: dict[str, Any]
    pyproject: dict[str, Any]


@attrs.frozen
class Equivalent:
    """A mutant no test can tell apart from the original, named by what it changes (not by
    mutmut's number for it, which moves whenever the function is edited)."""

    module: str
    function: str
    original: str
    mutated: str
    reason: str


@attrs.frozen
class Mutant:
    """A mutant that was not killed, with the lines it changes."""

    name: str
    function: str
    status: str
    original: str
    mutated: str

    def matches(self, equivalent: Equivalent) -> bool:
        return (equivalent.function, equivalent.original, equivalent.mutated) == (
            self.function,
            self.original,
            self.mutated,
        )


@attrs.frozen
class ModuleResult:
    module: str
    killed: int
    total: int
    not_killed: tuple[Mutant, ...]
    equivalent: tuple[Mutant, ...]
    stale: tuple[Equivalent, ...]
    seconds: float
    measured: dict[str, str]  # the fingerprint of the source and tests that were mutated

    @property
    def score(self) -> float:
        return score_of(self.killed, self.total, len(self.equivalent))

    @property
    def survivors(self) -> tuple[Mutant, ...]:
        return tuple(m for m in self.not_killed if m not in self.equivalent)


def load_settings(root: Path) -> Settings:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
    tool = pyproject.get("tool", {})
    try:
        ours = tool["mutation"]
        tests = ours["tests"]
        return Settings(
            threshold=float(ours["threshold"]),
            record=root / ours["record"],
            equivalents=root / ours["equivalents"],
            tests_by_module={module: tuple(paths) for module, paths in tests.items()},
            mutmut=dict(tool.get("mutmut", {})),
            pyproject=pyproject,
        )
    except KeyError as missing:
        raise MutationConfigError(f"pyproject.toml: [tool.mutation] needs {missing}") from None


def load_equivalents(path: Path) -> list[Equivalent]:
    entries = tomllib.loads(path.read_text("utf-8")).get("mutant", [])
    equivalents = []
    for index, entry in enumerate(entries):
        try:
            equivalents.append(
                Equivalent(
                    module=entry["module"],
                    function=entry["function"],
                    original=entry["original"].strip(),
                    mutated=entry["mutated"].strip(),
                    reason=entry["reason"],
                )
            )
        except KeyError as missing:
            raise MutationConfigError(f"{path}: mutant #{index + 1} has no {missing}") from None
        if not equivalents[-1].reason.strip():
            raise MutationConfigError(f"{path}: mutant #{index + 1} gives no reason")
    return equivalents


def test_files(root: Path, patterns: Iterable[str]) -> list[str]:
    """The module's test files: each entry is a path or a glob (one that matches nothing yet is
    left out, so a table can name test files another branch is still writing)."""
    found: list[str] = []
    for pattern in patterns:
        for match in sorted(root.glob(pattern)):
            path = str(match.relative_to(root))
            if path not in found:
                found.append(path)
    return found


def sha256_of(root: Path, paths: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.encode())
        digest.update(b"\0")
        digest.update((root / path).read_bytes())
    return digest.hexdigest()


def fingerprint(root: Path, settings: Settings, module: str) -> dict[str, str]:
    return {
        "source_sha256": sha256_of(root, [module]),
        "tests_sha256": sha256_of(root, test_files(root, settings.tests_by_module[module])),
    }


def load_record(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    record: dict[str, dict[str, Any]] = json.loads(path.read_text("utf-8"))
    return record


def changed_modules(root: Path, settings: Settings, record: dict[str, dict[str, Any]]) -> list[str]:
    """Modules whose source or tests are not the ones their recorded run measured."""
    changed = []
    for module in settings.tests_by_module:
        recorded = record.get(module, {})
        current = fingerprint(root, settings, module)
        if any(recorded.get(key) != value for key, value in current.items()):
            changed.append(module)
    return changed


def function_of(mutant_name: str) -> str:
    """``relay.core.gaps.xǁGapTrackerǁon_delta__mutmut_3`` -> ``GapTracker.on_delta``."""
    mangled = mutant_name.rpartition(".")[2].rpartition("__mutmut_")[0]
    if mangled.startswith("xǁ"):
        return ".".join(mangled.split("ǁ")[1:])
    return mangled.removeprefix("x_")


def changed_lines(diff: str) -> tuple[str, str]:
    """The lines a mutant's diff removes and the lines it adds, each stripped."""
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith("-") and not line.startswith("---"):
            removed.append(line[1:].strip())
        elif line.startswith("+") and not line.startswith("+++"):
            added.append(line[1:].strip())
    return "\n".join(removed), "\n".join(added)


def make_workdir(
    root: Path, workdir: Path, settings: Settings, module: str, tests: list[str]
) -> None:
    """A copy of the project whose ``[tool.mutmut]`` mutates ``module`` and runs ``tests``."""
    import tomli_w  # the `mutation` extra: imported here so the pure helpers need only attrs

    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "node_modules", "mutants")
    shutil.copytree(root / "relay", workdir / "relay", ignore=ignore)
    shutil.copytree(root / "tests", workdir / "tests", ignore=ignore)
    # Files some tests read (the example configurations); mutmut copies them on (also_copy).
    shutil.copytree(root / "examples", workdir / "examples", ignore=ignore)
    pyproject = dict(settings.pyproject)
    tool = dict(pyproject.get("tool", {}))
    tool["mutmut"] = {
        **settings.mutmut,
        "only_mutate": [module],
        "pytest_add_cli_args_test_selection": tests,
    }
    pyproject["tool"] = tool
    (workdir / "pyproject.toml").write_text(tomli_w.dumps(pyproject), "utf-8")


def mutmut_executable() -> str:
    beside = Path(sys.executable).parent / "mutmut"
    found = str(beside) if beside.exists() else shutil.which("mutmut")
    if found is None:
        raise MutationConfigError("mutmut is not installed (pip install -e '.[mutation]')")
    return found


def run_module(
    root: Path, settings: Settings, module: str, equivalents: Sequence[Equivalent], jobs: int
) -> ModuleResult:
    # The `mutation` extra, imported here: the rest of this module needs only attrs.
    from mutmut.configuration import reset_config
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    tests = test_files(root, settings.tests_by_module[module])
    if not tests:
        raise MutationConfigError(f"{module}: none of its test files exist")
    started = time.monotonic()
    measured = fingerprint(root, settings, module)
    with tempfile.TemporaryDirectory(prefix="relay-mutation-") as scratch:
        workdir = Path(scratch)
        make_workdir(root, workdir, settings, module, tests)
        log = workdir / "mutmut.log"
        with log.open("w") as out:
            done = subprocess.run(
                [mutmut_executable(), "run", "--max-children", str(jobs)],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        meta_path = workdir / "mutants" / f"{module}.meta"
        meta = json.loads(meta_path.read_text("utf-8")) if meta_path.exists() else {}
        exit_codes: dict[str, int | None] = meta.get("exit_code_by_key", {})
        # A module with nothing mutmut mutates (no functions: only enums and attrs fields)
        # makes mutmut stop before testing, having found no test for any mutant.
        if done.returncode != 0 and (exit_codes or not meta_path.exists()):
            tail = log.read_text("utf-8", errors="replace")[-4000:]
            raise MutationRunError(f"mutmut failed ({done.returncode}):\n{tail}")
        not_killed = []
        with contextlib.chdir(workdir):
            reset_config()
            for name, code in sorted(exit_codes.items()):
                status = status_by_exit_code[code]
                if status in KILLED_STATUSES:
                    continue
                original, mutated = changed_lines(get_diff_for_mutant(name, path=module))
                not_killed.append(Mutant(name, function_of(name), status, original, mutated))
            reset_config()
    own = [e for e in equivalents if e.module == module]
    equivalent = tuple(m for m in not_killed if any(m.matches(e) for e in own))
    stale = tuple(e for e in own if not any(m.matches(e) for m in not_killed))
    return ModuleResult(
        module=module,
        killed=len(exit_codes) - len(not_killed),
        total=len(exit_codes),
        not_killed=tuple(not_killed),
        equivalent=equivalent,
        stale=stale,
        seconds=time.monotonic() - started,
        measured=measured,
    )


def score_of(killed: int, total: int, equivalent: int) -> float:
    """Killed out of the mutants a test could kill, in percent."""
    scored = total - equivalent
    return 100.0 if scored == 0 else 100.0 * killed / scored


def row(width: int, name: str, killed: int, total: int, equivalent: int, seconds: float) -> str:
    score = score_of(killed, total, equivalent)
    return (
        f"{name:<{width}}  {killed:>6}  {total:>5}  {equivalent:>5}  {score:5.1f}%  {seconds:4.0f}s"
    )


def print_findings(result: ModuleResult) -> None:
    """The module's surviving mutants, and equivalents file entries that match none."""
    for m in result.survivors:
        print(f"{m.status}: {m.name}\n  - {m.original}\n  + {m.mutated}")
    for e in result.stale:
        print(
            f"stale equivalent in {result.module} {e.function} (no surviving mutant changes"
            f" {e.original!r} to {e.mutated!r}): remove or update it"
        )


def report(results: Sequence[ModuleResult], threshold: float) -> bool:
    """Print the table; whether every module reached the threshold with no stale
    equivalent."""
    width = max(len(r.module) for r in results)
    print(f"\n{'module':<{width}}  killed  total  equiv   score   time")
    for r in results:
        mark = "" if r.score >= threshold else "  < threshold"
        print(row(width, r.module, r.killed, r.total, len(r.equivalent), r.seconds) + mark)
    print(
        row(
            width,
            "all",
            sum(r.killed for r in results),
            sum(r.total for r in results),
            sum(len(r.equivalent) for r in results),
            sum(r.seconds for r in results),
        )
    )
    return all(r.score >= threshold and not r.stale for r in results)


def write_record(settings: Settings, results: Sequence[ModuleResult]) -> None:
    """Rewrite the entries of the modules that ran, keeping the others as they are on disk
    (read now, not at the start: another run may have written some meanwhile)."""
    record = load_record(settings.record)
    for r in results:
        record[r.module] = {
            **r.measured,
            "killed": r.killed,
            "total": r.total,
            "equivalent": len(r.equivalent),
            "score": round(r.score, 1),
            "seconds": round(r.seconds, 1),
        }
    ordered = dict(sorted(record.items()))
    settings.record.write_text(json.dumps(ordered, indent=2) + "\n", "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="source files (default: every listed module)")
    parser.add_argument(
        "--changed", action="store_true", help="only modules changed since their recorded run"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants at once")
    parser.add_argument(
        "--under", metavar="DIR", help="only the listed modules under this directory"
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="start no module after this long (CI's time limit); those left are listed",
    )
    args = parser.parse_args(argv)

    settings = load_settings(ROOT)
    equivalents = load_equivalents(settings.equivalents)
    unknown = [m for m in args.modules if m not in settings.tests_by_module]
    if unknown:
        raise MutationConfigError(f"no [tool.mutation.tests] entry for {', '.join(unknown)}")
    record = load_record(settings.record)
    modules = list(args.modules) or list(settings.tests_by_module)
    if args.under:
        prefix = args.under.rstrip("/") + "/"
        modules = [m for m in modules if m.startswith(prefix)]
    if args.changed:
        changed = changed_modules(ROOT, settings, record)
        modules = [m for m in modules if m in changed]
        if not modules:
            print("no module changed since its recorded run")
            return 0
    results = []
    failed = []
    left: list[str] = []
    started = time.monotonic()
    for module in modules:
        if args.budget is not None and time.monotonic() - started >= args.budget:
            left.append(module)
            continue
        print(f"{module}: mutating ...", flush=True)
        try:
            result = run_module(ROOT, settings, module, equivalents, args.jobs)
        except MutationRunError as error:
            # The other modules are still measured (and recorded); this one fails the run.
            print(f"{module}: {error}", flush=True)
            failed.append(module)
            continue
        print(f"{module}: {result.killed}/{result.total} killed in {result.seconds:.0f}s")
        print_findings(result)
        write_record(settings, [result])  # as each module ends: a stopped run keeps them
        results.append(result)
    passed = bool(results) and report(results, settings.threshold)
    if failed:
        print(f"\nnot measured (mutmut failed, output above): {', '.join(failed)}")
    if left:
        # Still changed in the record: the next run (or a developer's) measures them.
        print(f"\nnot measured within the {args.budget:g} s budget: {', '.join(left)}")
    return 0 if (passed or not results) and not failed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MutationConfigError as error:
        print(f"mutation: {error}", file=sys.stderr)
        sys.exit(2)
