"""Sessions: tests, lint, typecheck, demo, bench. CI runs tests, lint and typecheck."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite: unit, property and end-to-end over loopback."""
    session.install("-e", ".[test]")
    install_node_packages(session)
    session.run("pytest", *(session.posargs or ["-q"]))


#: The tests' Node packages, each with a file its install creates: ganache, the Ethereum
#: tests' node; ws and socket.io-client, clients of the end-to-end tests (one install, marked
#: by the later of the two).
NODE_PACKAGES = {
    Path("tests/ethereum/node"): Path("node_modules/.bin/ganache"),
    Path("tests/node"): Path("node_modules/socket.io-client/package.json"),
}


def install_node_packages(session: nox.Session) -> None:
    """The tests' Node packages, when npm is here and each is not installed already from its
    current lock (without npm, the tests that need them skip, saying how to install them)."""
    if not shutil.which("npm"):
        return
    for node_dir, installed in NODE_PACKAGES.items():
        marker = node_dir / installed
        lock = node_dir / "package-lock.json"
        # lstat: a link's own time, made by the install (npm may date the files it links to
        # back).
        if marker.exists() and marker.lstat().st_mtime > lock.stat().st_mtime:
            continue
        session.run(
            "npm", "ci", "--no-audit", "--no-fund", "--prefix", str(node_dir), external=True
        )


@nox.session(python=False)
def quickstart(session: nox.Session) -> None:
    """The README's Quickstart as written: a fresh clone, a new virtual environment, the demo."""
    session.run("python3", "tests/quickstart.py", external=True)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    paths = ("relay", "tests", "benchmarks", "examples", "tools", "noxfile.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "relay")


@nox.session
def demo(session: nox.Session) -> None:
    """The relay in front of the synthetic market; Ctrl-C stops it."""
    session.install("-e", ".")
    session.run("relay", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Relay and peers side by side, three runs, then the independent latency check on the
    same flags (`nox -s bench -- --quick --runs 1` for a short run; flags in
    benchmarks/README.md)."""
    session.install("-e", ".[bench]")
    # The load generator's compiled listener (benchmarks/counting.pyx); cythonize skips it
    # when the .so is newer than the source.
    session.run("cythonize", "-i", "-3", "-q", "benchmarks/counting.pyx")
    if shutil.which("node") and shutil.which("npm"):
        session.run(
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            "benchmarks/peers/node",
            external=True,
        )
    # Defaults first: a --runs among the arguments comes later and wins.
    flags = ["--runs", "3", *session.posargs]
    session.run("python", "benchmarks/run.py", *flags)
    session.run("python", "benchmarks/latency_check.py", *flags)


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing (mutmut) of relay/core and relay/adapters, each module against its own
    unit tests; fails under 90 % killed. `-- relay/core/gaps.py ...` for some modules,
    `-- --changed` for those whose source or tests changed since mutation-scores.json (CI)."""
    session.install("-e", ".[test,mutation]")
    session.run("python", "tools/mutation.py", *session.posargs)
