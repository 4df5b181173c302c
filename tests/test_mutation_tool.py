"""tools/mutation.py's decisions, without running mutmut: which modules `--changed` picks, how a
mutant is named and matched against the equivalents file, and the score."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import mutation
from tools.mutation import Equivalent, ModuleResult, Mutant, Settings

ROOT = Path(__file__).resolve().parent.parent


def settings_for(root: Path, tests: dict[str, tuple[str, ...]]) -> Settings:
    return Settings(
        threshold=90.0,
        record=root / "record.json",
        equivalents=root / "equivalents.toml",
        tests_by_module=tests,
        mutmut={},
        pyproject={},
    )


def test_the_project_settings_name_existing_tests_for_every_core_module() -> None:
    settings = mutation.load_settings(ROOT)
    core = {f"relay/core/{p.name}" for p in (ROOT / "relay/core").glob("[!_]*.py")}
    assert core <= set(settings.tests_by_module)
    for module, patterns in settings.tests_by_module.items():
        assert (ROOT / module).is_file()
        assert mutation.test_files(ROOT, patterns), module
        assert not any("e2e" in path for path in mutation.test_files(ROOT, patterns))
    assert settings.threshold == 90.0
    mutation.load_equivalents(settings.equivalents)  # well formed


def test_changed_picks_modules_whose_source_or_tests_differ_from_the_record(
    tmp_path: Path,
) -> None:
    for name, text in [("a.py", "A = 1\n"), ("b.py", "B = 1\n"), ("test_a.py", "t\n")]:
        (tmp_path / name).write_text(text)
    settings = settings_for(tmp_path, {"a.py": ("test_a.py",), "b.py": ("test_b*.py",)})
    record = {m: mutation.fingerprint(tmp_path, settings, m) for m in ("a.py", "b.py")}
    assert mutation.changed_modules(tmp_path, settings, record) == []
    (tmp_path / "test_b2.py").write_text("new test file\n")  # a glob gains a file
    assert mutation.changed_modules(tmp_path, settings, record) == ["b.py"]
    (tmp_path / "a.py").write_text("A = 2\n")
    assert mutation.changed_modules(tmp_path, settings, record) == ["a.py", "b.py"]
    assert mutation.changed_modules(tmp_path, settings, {}) == ["a.py", "b.py"]


@pytest.mark.parametrize(
    ("name", "function"),
    [
        ("relay.core.gaps.xǁBookSyncǁon_delta__mutmut_12", "BookSync.on_delta"),
        ("relay.core.gaps.x__with_removals__mutmut_7", "_with_removals"),
        ("relay.core.protocol.x_command_id__mutmut_1", "command_id"),
    ],
)
def test_a_mutant_is_named_by_its_function(name: str, function: str) -> None:
    assert mutation.function_of(name) == function


def test_a_diff_gives_the_lines_removed_and_added() -> None:
    diff = "--- a.py\n+++ a.py\n@@ -1,3 +1,3 @@\n def f():\n-    return x <= 1\n+    return x < 1\n"
    assert mutation.changed_lines(diff) == ("return x <= 1", "return x < 1")


def result_with(not_killed: tuple[Mutant, ...], equivalents: list[Equivalent]) -> ModuleResult:
    equivalent = tuple(m for m in not_killed if any(m.matches(e) for e in equivalents))
    stale = tuple(e for e in equivalents if not any(m.matches(e) for m in not_killed))
    return ModuleResult("m.py", 18, 20, not_killed, equivalent, stale, 1.0, {})


def test_equivalents_leave_the_score_and_stale_ones_fail_the_run() -> None:
    same = Mutant("m.x_f__mutmut_1", "f", "survived", "a = b or c", "a = b and c")
    other = Mutant("m.x_f__mutmut_2", "f", "survived", "x = 1", "x = 2")
    named = Equivalent("m.py", "f", "a = b or c", "a = b and c", "b and c are never both set")
    result = result_with((same, other), [named])
    assert result.equivalent == (same,) and result.survivors == (other,)
    assert result.score == pytest.approx(100 * 18 / 19)
    assert mutation.report([result], 90.0)
    gone = Equivalent("m.py", "g", "y = 1", "y = 2", "no longer there")
    assert not mutation.report([result_with((same, other), [named, gone])], 90.0)
    assert not mutation.report([result_with((same, other), [])], 95.0)
