"""The README's Quickstart, run as written, in a fresh clone and a new virtual environment.

Run by ``nox -s quickstart`` (and so by CI). It reads the commands from the README itself, so the
README cannot drift from what works: step 0 (the virtual environment) and the first command (the
install, then ``relay demo``) run exactly as written in a clean temporary directory; the demo is
given until it answers ``/readyz`` with 200 and streams a trade to a client, then stopped. The
second command is the test suite, which CI runs anyway; running it a second time here would only
double CI's time, so this checks that it is the command CI runs.

Not a pytest module (it clones, installs from the package index, and takes a minute).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = "http://127.0.0.1:8765/readyz"


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    if block is None:
        raise SystemExit("README: no ```sh block in the Quickstart")
    commands = [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [c for c in commands if c]


def wait_ready(deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(READY, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the demo never answered {READY} with 200")


def main() -> None:
    commands = quickstart_commands()
    if len(commands) != 3:
        raise SystemExit(f"README Quickstart: expected a venv line and two commands: {commands}")
    venv, start, test = commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    if test.split("&&")[-1].strip().removeprefix("python3 -m ") not in ci:
        raise SystemExit(f".ci/run does not run the README's test command: {test}")
    with tempfile.TemporaryDirectory(prefix="relay-quickstart-") as tmp:
        clone = Path(tmp) / "relay"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        # As a person types it: one shell, the venv line, then the first command.
        script = f"set -e\n{venv}\n{start}\n"
        print(f"$ {venv}\n$ {start}", flush=True)
        demo = subprocess.Popen(["bash", "-c", script], cwd=clone, env=env, start_new_session=True)
        try:
            wait_ready(time.monotonic() + 300)  # the install comes first
            python = clone / ".venv" / "bin" / "python"
            tail = subprocess.run(
                [str(python), "-m", "relay", "tail", "ws://127.0.0.1:8765/ws",
                 "sim:trades:BTC-USD", "--count", "1"],
                cwd=clone, env=env, capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            message = json.loads(tail.stdout.splitlines()[0])
            if message.get("channel") != "sim:trades:BTC-USD":
                raise SystemExit(f"relay tail printed {tail.stdout!r}")
            print(f"the demo streams: {tail.stdout.strip()[:100]}...", flush=True)
        finally:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
    print("the Quickstart works as written", flush=True)


if __name__ == "__main__":
    sys.exit(main())
