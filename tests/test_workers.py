"""``relay serve --workers N`` (relay/workers.py): the supervisor, with tiny Python children that
report what happens to them over a loopback socket; restarts, giving up and the kill after the
stop grace on a MockClock; signals passed on by a real supervisor process; two processes sharing
a port through the listener's SO_REUSEPORT; and the command line's refusals."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from relay import cli
from relay.config import parse_config
from relay.server.listener import Listener
from relay.workers import Workers, describe_exit

if TYPE_CHECKING:
    pass

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "relay.toml"

PROLOGUE = """\
import os, signal, socket, sys
report = socket.create_connection(("127.0.0.1", {port}))
def say(word):
    report.sendall(f"{{word}} {{os.getpid()}}\\n".encode())
def stop(signum, frame):
    say(signal.Signals(signum).name)
    sys.exit(0)
"""

HANDLERS = """\
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGHUP, lambda signum, frame: say("SIGHUP"))
"""
SERVE = """\
say("up")
while True:
    signal.pause()
"""
STEADY = HANDLERS + SERVE


class Reports:
    """What the children say: one ``(word, pid)`` a line, over TCP to this test."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[str, int]](100)
        self.port = 0

    async def listen(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while data := await stream.receive_some():
                buffer += data
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    word, pid = line.decode().split()
                    await self._send.send((word, int(pid)))

    async def next(self) -> tuple[str, int]:
        return await self._receive.receive()

    def next_now(self) -> tuple[str, int]:
        """The next report, which must be here already."""
        return self._receive.receive_nowait()

    async def run(self, workers: Workers) -> None:
        """Run ``workers``, and report ``("ended", status)`` when that returns: a test waiting
        for a child's word fails on it rather than waiting for ever."""
        await self._send.send(("ended", await workers.run()))

    async def final(self, count: int) -> set[tuple[str, int]]:
        """The last ``count`` reports, whose order the test cannot know."""
        return {await self.next() for _ in range(count)}

    def child(self, body: str) -> list[str]:
        """The command line of a child that runs ``body`` after connecting to this test."""
        return [sys.executable, "-c", PROLOGUE.format(port=self.port) + textwrap.dedent(body)]


@pytest.fixture
async def reports(nursery: trio.Nursery) -> Reports:
    result = Reports()
    await result.listen(nursery)
    return result


def counted(path: Path) -> str:
    """Child code: ``starts``, how many children ran this before this one."""
    return f"""\
with open({str(path)!r}, "a+") as counter:
    counter.seek(0)
    starts = len(counter.read())
    counter.write("x")
"""


async def test_a_worker_that_exits_is_restarted(
    autojump_clock: trio.testing.MockClock,
    reports: Reports,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = counted(tmp_path / "starts") + "if starts == 0:\n    sys.exit(3)\n" + STEADY
    workers = Workers(reports.child(body), 1, stop_grace=math.inf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reports.run, workers)
        word, pid = await reports.next()
        assert word == "up"
        assert workers.started == 2
        process = workers.processes[0]
        assert process is not None and process.pid == pid
        workers.stop(signal.SIGTERM)
    assert await reports.final(2) == {("SIGTERM", pid), ("ended", 0)}
    assert "worker 0 (pid " in caplog.text
    assert "exited (exit status 3); restarting it in" in caplog.text


async def test_a_worker_that_keeps_failing_makes_the_supervisor_give_up(
    autojump_clock: trio.testing.MockClock,
    reports: Reports,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first child to claim the flag (its handlers set) runs steadily; every other one fails.
    flag = tmp_path / "steady"
    claim = f"""\
try:
    os.close(os.open({str(flag)!r}, os.O_CREAT | os.O_EXCL))
except FileExistsError:
    sys.exit(1)
"""
    body = HANDLERS + claim + SERVE
    workers = Workers(reports.child(body), 2, max_failures=3, stop_grace=math.inf)
    assert await workers.run() == 1
    assert workers.gave_up
    assert workers.started == 1 + 3
    word, steady = await reports.next()
    assert word == "up"
    assert await reports.next() == ("SIGTERM", steady)  # the steady one was stopped too
    assert "exited (exit status 1), 3 times in a row soon after starting: giving up" in caplog.text


async def test_a_worker_that_ran_long_enough_has_its_failures_forgiven(
    autojump_clock: trio.testing.MockClock, reports: Reports
) -> None:
    # Each worker is killed after a minute and a half, more times in a row than max_failures:
    # not early failures, so the supervisor never gives up.
    workers = Workers(reports.child(STEADY), 1, max_failures=2, stop_grace=math.inf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reports.run, workers)
        for _ in range(4):
            assert (await reports.next())[0] == "up"
            await trio.sleep(90)
            process = workers.processes[0]
            assert process is not None
            process.kill()
        word, pid = await reports.next()
        assert word == "up"
        assert not workers.gave_up
        assert workers.started == 5
        workers.stop(signal.SIGTERM)
    assert await reports.final(2) == {("SIGTERM", pid), ("ended", 0)}


async def test_a_stop_during_a_restart_delay_starts_nothing_more(
    mock_clock: trio.testing.MockClock, reports: Reports
) -> None:
    workers = Workers(reports.child("sys.exit(3)\n"), 1, random=lambda: 0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reports.run, workers)
        # The clock stands still: the first restart waits until the test moves it.
        while workers.started == 0 or workers.processes[0] is not None:
            await trio.lowlevel.checkpoint()
        workers.stop(signal.SIGTERM)  # ends the wait at once: the clock never moves
        await trio.testing.wait_all_tasks_blocked()
        assert reports.next_now() == ("ended", 0)
        nursery.cancel_scope.cancel()
    assert workers.started == 1


async def test_a_worker_that_ignores_the_stop_is_killed_after_the_grace(
    autojump_clock: trio.testing.MockClock,
    reports: Reports,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SERVE
    workers = Workers(reports.child(body), 1, stop_grace=30.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reports.run, workers)
        _, pid = await reports.next()
        workers.stop(signal.SIGTERM)
    assert await reports.next() == ("ended", 1)
    assert workers.unclean == [f"worker 0 (pid {pid}): killed by SIGKILL"]
    assert f"worker 0 (pid {pid}) still running 30 s after SIGTERM: killing it" in caplog.text


def test_workers_and_failures_must_be_counted_from_one() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Workers(["true"], 0)
    with pytest.raises(ValueError, match="max_failures must be at least 1"):
        Workers(["true"], 2, max_failures=0)


def test_exits_are_described_by_status_or_signal() -> None:
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


# ---------------------------------------------------------------------------------------------
# A real supervisor process and its signals


async def test_the_supervisor_passes_signals_on_and_stops_with_its_workers(
    reports: Reports,
) -> None:
    script = (
        "import sys\nfrom relay.workers import run_workers\n"
        f"sys.exit(run_workers({reports.child(STEADY)!r}, 2))\n"
    )
    supervisor = await trio.lowlevel.open_process(
        [sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(20):
            up = {(await reports.next()) for _ in range(2)}
            pids = {pid for _, pid in up}
            assert {word for word, _ in up} == {"up"} and len(pids) == 2
            for pid in pids:  # a group of its own: a terminal's Ctrl-C reaches only the parent
                assert os.getpgid(pid) == pid != os.getpgid(supervisor.pid)
            supervisor.send_signal(signal.SIGHUP)
            assert {await reports.next() for _ in range(2)} == {("SIGHUP", p) for p in pids}
            supervisor.send_signal(signal.SIGTERM)
            assert {await reports.next() for _ in range(2)} == {("SIGTERM", p) for p in pids}
            assert await supervisor.wait() == 0
    finally:
        if supervisor.returncode is None:
            supervisor.kill()


async def test_two_processes_share_a_port_with_reuse_port_and_both_accept(
    nursery: trio.Nursery,
) -> None:
    ours = Listener("127.0.0.1", 0, backlog=64, reuse_port=True)
    other = """\
import sys, trio
from relay.server.listener import Listener
async def answer(stream):
    await stream.send_all(b"other")
    await stream.aclose()
async def main():
    listener = Listener("127.0.0.1", int(sys.argv[1]), backlog=64, reuse_port=True)
    print("listening", flush=True)
    await listener.serve(answer)
trio.run(main)
"""

    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"ours")
        await stream.aclose()

    nursery.start_soon(ours.serve, answer)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", other, str(ours.port)], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(20):
            assert (await process.stdout.receive_some()).startswith(b"listening")
            answers: set[bytes] = set()
            # The kernel picks a listener per connection by a hash of its addresses: with 64
            # connections, both listeners answering fails only with probability 2 ** -63.
            for _ in range(64):
                async with await trio.open_tcp_stream("127.0.0.1", ours.port) as stream:
                    answers.add(await stream.receive_some())
        assert answers == {b"ours", b"other"}
    finally:
        process.kill()
        await process.wait()


# ---------------------------------------------------------------------------------------------
# The command line


def test_workers_is_a_count_from_one() -> None:
    assert cli._parser().parse_args(["serve", "--config", "x.toml"]).workers == 1
    assert cli._parser().parse_args(["serve", "--config", "x.toml", "--workers", "4"]).workers == 4


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "--workers: must be at least 1, got 0"), ("two", "--workers: not a whole number")],
)
def test_bad_worker_counts_are_one_line(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["serve", "--config", "x.toml", "--workers", value])
    assert message in capsys.readouterr().err


def test_workers_without_a_cluster_are_refused_in_one_line() -> None:
    result = serve("--workers", "2")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "relay serve: --workers needs [cluster] redis_url in the configuration: each worker is "
        "a cluster node, and the nodes share their sources through Redis"
    ]


def test_workers_on_port_zero_are_refused_in_one_line() -> None:
    result = serve("--workers", "2", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "relay serve: --workers needs a fixed port: with port 0 each worker would listen on a "
        "different one"
    ]


def test_a_cluster_with_a_redis_url_is_enough_for_workers() -> None:
    config = parse_config({"cluster": {"redis_url": "redis://127.0.0.1:6379"}})
    cli._require_cluster(config)


def serve(*options: str) -> subprocess.CompletedProcess[str]:
    """``relay serve`` with the example configuration, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(EXAMPLE), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_runs_the_same_serve_marked_as_a_worker() -> None:
    args = cli._parser().parse_args(
        ["--log-format", "json", "serve", "--config", "r.toml", "--port", "9000", "--workers", "3"]
    )
    argv = cli._worker_argv(args)
    assert argv[:3] == [sys.executable, "-m", "relay"]
    child = cli._parser().parse_args(argv[3:])
    assert (child.command, child.config, child.port, child.host) == ("serve", "r.toml", 9000, None)
    assert (child.worker, child.workers, child.log_format, child.log_level) == (
        True,
        1,
        "json",
        "info",
    )
