"""Benchmark harness: the relay against four comparison peers on the same workloads.

For each implementation (the relay first, then the peers in ``benchmarks/peers/``)
it starts a fresh synthetic market (``python -m relay simulate``), the server under
test and the load generator (``benchmarks/loadgen.py``), each in its own process,
runs the workloads below in a fixed order, and kills all three in a ``finally``.

Workloads (see benchmarks/README.md for the exact definitions):

1. upstream  -- the market's ``connections_open`` while clients are subscribed.
2. burst     -- N clients, ``POST /control/burst?n=M``; deliveries/s = N*M / (time
                from the trigger to the last client's M-th message); losses.
3. paced     -- N clients, the market at rising rates; deliveries/s and latency
                percentiles (client receipt - envelope ``ts``) per rate.
4. idle      -- RSS of the server before and after opening many idle connections.
5. isolation -- p99 of normal clients with and without 10% stalled clients whose
                buffers have been filled (windows without and with alternating),
                and the server's RSS meanwhile. Last,
                because it may legitimately kill a peer (that is a result too).

Then, per run, the relay and the peers that come near 100 msg/s all alive at once, for
``alternating``: paced windows at 100 and 250 msg/s taken in turn, round after round, so
every server meets the same stretch of a machine whose speed moves from minute to minute.

Two profiles run the burst and paced workloads only: the cluster (``relay_cluster``)
and Socket.IO (``relay_sio``, the relay's Socket.IO endpoint, against ``node_sio``, a
Node socket.io server; their clients are the load generator's ``--protocol socketio``).

Results: ``latest.json``, ``latest.md`` and PNG plots in ``--out``; PASS/FAIL lines
for the relay's must-show targets on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import command_loop  # sibling module: the harness runs as a script
import httpx
from loadgen import latency_figures, storm_timeline
from report import (  # sibling module: the harness runs as a script
    HELD_DELIVERY_FRACTION,
    HELD_P99_MS,
    KIB,
    markdown,
    plots,
    summarize,
    targets,
)

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable
CHANNEL = "sim:trades:BTC-USD"
TOPIC = "trade.BTC-USD"
FLOOD_CHANNEL = "sim:trades:ETH-USD"
"""Only the stalled clients subscribe to it, so flooding it fills their buffers alone."""
FLOOD_TOPIC = "trade.ETH-USD"
SIM_SYMBOLS = "BTC-USD,ETH-USD"
HOST = "127.0.0.1"
BENCH_KEY = "bench-socketio-key"
"""The API key the Socket.IO clients present (``auth: {token}``): one ``[[keys]]`` entry of
every relay configuration here; the plain WebSocket clients present none (anonymous)."""
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"


# ----------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one run; ``quick`` trades precision for a sub-minute run."""

    name: str
    clients: int
    """Subscribers for burst, paced and isolation (the same connections throughout)."""
    burst_m: int
    burst_reps: int
    """Bursts per run, of which the median is the run's figure. The relay's 1,000-message
    bursts last about a quarter of a second, and five of them in one run spread from 3.1 to
    4.7M deliveries/s (`df9b035`): their median moved with the run. Eleven cost the relay
    three seconds more; the peers' bursts last 5 to 30 s, so the budget below sets how many
    of theirs fit, as it did with five."""
    burst_budget: float
    """No further repetition starts once the bursts have taken this long (slow peers)."""
    paced_rates: tuple[int, ...]
    """Messages per second on the measured channel (the market's per-symbol rate). The full
    profile has a step above 500: at exactly the target, the counting window's jitter (a few
    tenths of a percent either way) would decide ">= 500,000 deliveries/s", not the server."""
    paced_warmup: float
    paced_seconds: float
    idle: int
    iso_rate: int
    iso_stalled: int
    iso_prefill: int
    """Flood messages per stalled client before measuring: more than the kernel's socket
    buffers (about 130 KB with the stalled clients' small window) plus the relay's outbox
    (4,096 messages) hold, so every server has felt the stall before the measurement."""
    iso_seconds: float
    iso_rounds: int
    """Windows with stalled clients, each between two without: 2 is five windows."""
    drain_limit: float
    """Longest wait for a saturated server to go quiet (backlog drained, closed connections
    cleaned up) between workloads; the time it took is recorded."""
    flood_patience: float
    """Longest wait for the server to read one flood chunk from the market."""
    storm_clients: int
    """Clients that connect at once in the reconnect storm, each subscribing and waiting for
    its first data message."""
    storm_limit: float
    """A storm client that has not got its first data message this long after the start
    counts as timed out."""
    comp_clients: int
    """Compression workload: clients per group (one group on the book, one on trades)."""
    comp_seconds: float
    """Compression workload: the window in which book deltas are counted."""
    check_clients: int
    """Independent latency check: clients that read and check every message."""
    check_warmup: float
    check_seconds: float
    latency_samplers: int = 50
    """How many clients (spread evenly) parse every frame for latency."""
    loadgen_processes: int = 2
    """Load generator processes sharing the clients (:class:`LoadGenPool`): on 2 cores one
    process was itself the bottleneck at 100 msg/s to 1,000 clients."""
    pin_burst: bool = True
    """During the bursts, the server alone on one CPU and the load generator on the others
    (when there are two or more): each server gets one core and the clients the other, and
    where the kernel places the processes is not part of the figure (docs/performance.md,
    "The burst spread: what was tried"). ``--no-pin`` turns it off, as the sets up to
    `140f29c` ran."""
    storm_rate: int = 10
    """Market rate during the storm (msg/s on the channel): a message is always coming (one
    every 100 ms), and with 11,000 subscribers it offers 110,000 deliveries/s, which every
    peer but the trio-websocket loop carries, so the storm measures connecting, not a
    saturated fan-out."""
    comp_rate: int = 50
    """Market rate while book deltas are counted (each market event is one delta)."""
    comp_burst: int = 200
    """Trades burst to each trades client in the compression workload."""
    check_rates: tuple[int, ...] = (100, 250)
    """Market rates of the independent latency check."""
    alt_rates: tuple[int, ...] = (100, 250)
    """Rates of the alternating light-load workload (the latency targets' rates)."""
    alt_rounds: int = 2
    """Alternating light load: rounds per run, each one paced window per implementation."""
    warmup: bool = True
    """Before run 1, one discarded session: the first implementation of the order, its
    clients connected, its bursts and paced steps run, then everything stopped. The sets up
    to `84db359` measured the relay first in run 1, and its run 1 had the set's lowest burst
    median in 8 of 12 sets (in the twelfth its first four bursts were 3.2 to 4.1M
    deliveries/s, its last 5.7M, and runs 2 and 3 started at 5.6 and 5.8M); checking clients
    found the first session or two of a sequence slow whichever server ran in them
    (docs/performance.md, "The independent check in alternating windows"). The warm-up's
    figures are kept in the results (``warmup``) and shown in the report, not counted."""


FULL = Profile(
    name="full",
    clients=1000,
    burst_m=1000,
    burst_reps=11,
    burst_budget=40.0,
    paced_rates=(100, 250, 500, 600, 750, 1000),
    paced_warmup=2.0,
    paced_seconds=5.0,
    idle=10_000,
    iso_rate=100,
    iso_stalled=100,
    iso_prefill=6_000,
    iso_seconds=6.0,
    iso_rounds=2,
    drain_limit=10.0,
    flood_patience=3.0,
    storm_clients=10_000,
    storm_limit=60.0,
    comp_clients=100,
    comp_seconds=3.0,
    check_clients=1000,
    check_warmup=2.0,
    check_seconds=5.0,
)
QUICK = Profile(
    name="quick",
    clients=200,
    burst_m=200,
    burst_reps=2,
    burst_budget=2.0,
    paced_rates=(100, 250, 1000),
    paced_warmup=0.3,
    paced_seconds=0.8,
    idle=2_000,
    iso_rate=100,
    iso_stalled=20,
    iso_prefill=6_000,
    iso_seconds=1.0,
    iso_rounds=2,
    drain_limit=2.0,
    flood_patience=1.5,
    storm_clients=1_000,
    storm_limit=30.0,
    comp_clients=20,
    comp_seconds=1.0,
    check_clients=200,
    check_warmup=0.5,
    check_seconds=1.0,
    alt_rounds=1,
    warmup=False,
)

SATURATED_FRACTION = 0.8
"""Paced stepping stops after a rate at which less than this fraction was delivered."""
ISO_BOUNDED_FRACTION = 0.5
"""Memory counts as bounded when the server's RSS grew over the stalled window by less than
this fraction of what was sent to the stalled clients meanwhile (a server that buffers
everything for them grows by about all of it)..."""
ISO_BOUNDED_FLOOR = 256 * KIB
"""...or by less than this, which is allocator noise at quick scale."""


@dataclass(frozen=True)
class Impl:
    """One server under test: how to start it and how to know it is ready."""

    name: str
    label: str
    kind: str  # "relay" | "python" | "node"
    script: str = ""
    history: bool = True
    """For the relay: keep each channel's history (the default), or run with it off."""
    compression: bool | None = None
    """For the relay: ``[compression] enabled``, or no ``[compression]`` table for None."""
    default: bool = True
    """Run without being named in ``--only``."""
    workers: int = 1
    """For the relay: ``relay serve --workers N``; more than 1 makes a cluster of N nodes on a
    redis-server of the session's own, behind the one port."""
    workloads: tuple[str, ...] | None = None
    """The only workloads this implementation runs (None: all)."""
    protocol: str = "ws"
    """What its clients speak: the relay's WebSocket protocol on ``/ws`` ("ws"), or Socket.IO
    on the websocket transport, namespace ``/ws`` ("socketio")."""
    npm: tuple[str, ...] = ("ws",)
    """For a Node server: the packages it needs in ``peers/node/node_modules``."""

    def client_args(self, port: int) -> tuple[str, list[str]]:
        """The load generator's URL and further arguments for this server's clients."""
        if self.protocol == "socketio":
            url = f"ws://{HOST}:{port}{SOCKETIO_PATH}"
            return url, ["--protocol", "socketio", "--token", BENCH_KEY]
        return f"ws://{HOST}:{port}/ws", []

    def argv(self, port: int, sim_port: int, workdir: Path, redis_port: int = 0) -> list[str]:
        upstream = f"ws://{HOST}:{sim_port}/ws"
        if self.kind == "relay":
            config = workdir / "relay.toml"
            redis_url = f"redis://{HOST}:{redis_port}" if redis_port else None
            config.write_text(
                relay_config(port, sim_port, self.history, self.compression, redis_url)
            )
            serve = ["serve", "--config", str(config)]
            if self.workers > 1:
                serve += ["--workers", str(self.workers)]
            return [PY, "-m", "relay", "--log-level", "warning", *serve]
        if self.kind == "node":
            node = shutil.which("node") or "node"
            return [node, str(HERE / self.script), "--port", str(port), "--upstream", upstream]
        return [PY, str(HERE / self.script), "--port", str(port), "--upstream", upstream]

    def unavailable(self, skip_node: bool) -> str | None:
        if self.workers > 1 and shutil.which("redis-server") is None:
            return "skipped: redis-server not found (apt-get install redis-server)"
        if self.kind != "node":
            return None
        if skip_node:
            return "skipped: --skip-node"
        if shutil.which("node") is None:
            return "skipped: node not present"
        missing = [p for p in self.npm if not (HERE / "peers/node/node_modules" / p).is_dir()]
        if missing:
            return (
                f"skipped: npm package {', '.join(missing)} not installed "
                "(npm install --prefix benchmarks/peers/node)"
            )
        return None


IMPLS = [
    Impl("relay", "relay (Trio)", "relay"),
    Impl("trio_naive", "trio-websocket loop", "python", "peers/trio_naive.py"),
    Impl("websockets", "websockets broadcast()", "python", "peers/websockets_broadcast.py"),
    Impl("picows", "picows send()", "python", "peers/picows_peer.py"),
    Impl("node", "Node ws", "node", "peers/node/peer.js"),
    # What resume history costs the fan-out: `--only relay,relay_nohistory`.
    Impl("relay_nohistory", "relay, history off", "relay", history=False, default=False),
    # The cluster profile: the same burst and paced workloads through two relay nodes on
    # Redis (one port, SO_REUSEPORT), beside the single process.
    Impl(
        "relay_cluster",
        "relay, 2-node cluster on Redis",
        "relay",
        workers=2,
        workloads=("burst", "paced"),
    ),
    # The Socket.IO profile: the relay's Socket.IO endpoint (same configuration as `relay`)
    # against a Node socket.io server, clients on the websocket transport, burst and paced.
    Impl(
        "relay_sio",
        "relay, Socket.IO endpoint",
        "relay",
        workloads=("burst", "paced"),
        protocol="socketio",
    ),
    Impl(
        "node_sio",
        "Node socket.io",
        "node",
        "peers/node/sio_peer.js",
        workloads=("burst", "paced"),
        protocol="socketio",
        npm=("ws", "socket.io"),
    ),
]


def relay_config(
    port: int,
    sim_port: int,
    history: bool = True,
    compression: bool | None = None,
    redis_url: str | None = None,
) -> str:
    """The relay's TOML for a benchmark run.

    ``idle_timeout`` is raised from its 60 s default so the idle-connection workload,
    which holds unsubscribed connections on purpose, measures memory and not the reaper.
    The one API key (:data:`BENCH_KEY`, tier ``default``) is what the Socket.IO clients
    present; the WebSocket clients connect without credentials, as before.
    """
    return (
        f"""\
[server]
host = "{HOST}"
port = {port}
max_connections = 20000
idle_timeout = 600.0
# Every benchmark client comes from 127.0.0.1: the per-address limits must not be what is
# measured.
max_connections_per_address = 20000
connection_rate_per_address = 100000.0
connection_burst_per_address = 20000
[auth]
required = false
[tiers.default]
max_connections = 20000
max_subscriptions = 100
rate_limit = 1000.0
rate_burst = 1000
[outbox]
max_messages = 4096
max_bytes = 4194304
[sources.sim]
kind = "sim"
url = "ws://{HOST}:{sim_port}/ws"
rest_url = "http://{HOST}:{sim_port}"
"""
        + ("" if history else "[history]\nmax_messages = 0\n")
        + ("" if compression is None else f"[compression]\nenabled = {str(compression).lower()}\n")
        + ("" if redis_url is None else f'[cluster]\nredis_url = "{redis_url}"\n')
        + f'[[keys]]\nkey = "{BENCH_KEY}"\ntier = "default"\nname = "bench"\n'
    )


def relay_has_compression() -> bool:
    """Whether this relay's configuration has a ``[compression]`` table (permessage-deflate)."""
    import attrs

    from relay.config import RelayConfig

    return "compression" in attrs.fields_dict(RelayConfig)


# ----------------------------------------------------------------------------------------------
# Processes


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE to the hard limit; children (the peers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """A port the kernel considers free now (a fresh one per process avoids TIME_WAIT clashes)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerDied(RuntimeError):
    """The process under test (or the market) exited while a workload needed it."""


class Proc:
    """A child process with its output in a log file; killed (by pid) when done."""

    def __init__(self, name: str, argv: list[str], logdir: Path, tree: bool = False) -> None:
        """``tree``: the process supervises others (``relay serve --workers``): its memory and
        CPU are the sums over it and its descendants, and it is stopped with SIGTERM (which
        it passes on) before SIGKILL."""
        self.name = name
        self.tree = tree
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise ServerDied(f"{self.name} exited with {self.popen.returncode}: {self.tail(6)}")

    def pids(self) -> list[int]:
        """This process, and with ``tree`` every living descendant."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            if not self.tree:
                break
            # Every thread's children: trio starts ``relay serve --workers``'s workers from a
            # worker thread, so the main thread's list alone misses them.
            for task in threads(pid):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                    todo.extend(int(child) for child in children)
        return found

    def rss(self) -> int:
        """Resident set size in bytes (VmRSS from /proc/PID/status), over :meth:`pids`."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/status") as f:
                total += next(
                    (int(line.split()[1]) * KIB for line in f if line.startswith("VmRSS:")), 0
                )
        if not total:
            raise ServerDied(f"{self.name}: no VmRSS")
        return total

    def cpu(self) -> float:
        """User + system CPU seconds so far, over :meth:`pids` (living ones: a tree's
        figures are for workers that run through the whole measurement)."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError):
                total += proc_cpu(pid)
        return total

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def kill(self) -> None:
        if self.tree and self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._log.close()


def threads(pid: int) -> list[int]:
    """The thread ids of process ``pid`` (none once it has exited)."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of the processes ``pids`` to ``cpus`` (threads that have exited are gone)."""
    for pid in pids:
        for tid in threads(pid):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoadGen:
    """A client process (the load generator, or another client program with the same
    command loop), driven over JSON lines with a timeout on every answer."""

    def __init__(
        self,
        url: str,
        logdir: Path,
        script: Path = HERE / "loadgen.py",
        args: list[str] | None = None,
        name: str = "",
    ) -> None:
        self._err = (logdir / f"{name or script.stem}.log").open("wb")
        self.popen = subprocess.Popen(
            [PY, str(script), "--url", url, *(args or [])],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self._lines: queue.Queue[bytes] = queue.Queue()
        self.broken = ""
        """Set when an answer did not come in time: a late answer would be taken for the
        answer to the next command, so nothing more is asked of this process."""
        threading.Thread(target=self._pump, daemon=True).start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """The first line says the process is up; it connects nothing until told to."""
        hello = self._read(timeout)
        if not hello.get("ready"):
            raise RuntimeError(f"load generator did not start: {hello}")

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.broken = f"load generator gave no answer in {timeout:.0f} s"
            raise TimeoutError(self.broken) from None
        return self._parse(line)

    def _parse(self, line: bytes) -> dict[str, Any]:
        if not line:
            self.broken = "load generator exited"
            raise RuntimeError(self.broken)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, **cmd: Any) -> None:
        if self.broken:
            raise RuntimeError(f"not asked: {self.broken} earlier")
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.popen.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        return self._checked(self._read(timeout))

    def poll(self, timeout: float) -> dict[str, Any] | None:
        """The pending answer if it comes within ``timeout``, else None (still pending)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        return self._checked(self._parse(line))

    @staticmethod
    def _checked(answer: dict[str, Any]) -> dict[str, Any]:
        if not answer.get("ok"):
            raise RuntimeError(f"load generator: {answer.get('error')}")
        return answer

    def call(self, timeout: float, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.result(timeout)

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def pids(self) -> list[int]:
        return [self.pid]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._err.close()


class LoadGenPool:
    """Several client processes driven as one: each command goes to all of them at once (the
    clients' counts split between them) and their answers are merged into the one a single
    process would give. This class knows the load generator's commands (``loadgen.py``);
    the latency check's client process has its own (``latency_check.CheckerPool``).

    Why: one process reading 1,000 sockets took 0.9 to 1.0 of a core at 100 msg/s and more
    at higher rates, whichever server it measured, so the latency it reported was largely its
    own queue for the CPU, and the highest rate "held" was its limit, not the server's.
    Split over processes, each has room to read as frames arrive; the merged percentiles
    are over every sample, the times over every client (monotonic clocks, shared by the
    processes).
    """

    SPLIT = {"open": "n", "storm": "n", "open_stalled": "n"}
    """Commands whose client count is shared out; the others go unchanged to every process."""

    def __init__(
        self,
        url: str,
        logdir: Path,
        processes: int,
        args: list[str],
        script: Path = HERE / "loadgen.py",
    ) -> None:
        self.procs = [
            LoadGen(url, logdir, script, args, name=f"{script.stem}{i + 1}")
            for i in range(processes)
        ]
        self._pending: str | None = None

    @property
    def broken(self) -> str:
        return next((p.broken for p in self.procs if p.broken), "")

    def wait_ready(self, timeout: float = 30.0) -> None:
        for proc in self.procs:
            proc.wait_ready(timeout)

    def prepare(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """The command as each process gets it, before its count is shared out: every sample
        and every client's times, to merge."""
        if cmd["cmd"] == "measure":
            return {**cmd, "raw": True}
        if cmd["cmd"] == "storm":
            return {**cmd, "raw": True, "origin": time.monotonic()}
        return cmd

    def merge(self, name: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
        if name == "measure":
            return merge_measures(answers)
        if name == "storm":
            return merge_storms(answers)
        if name == "wait":
            return merge_waits(answers)
        return merge_sums(answers)

    def send(self, **cmd: Any) -> None:
        cmd = self.prepare(cmd)
        key = self.SPLIT.get(cmd["cmd"])
        shares = len(self.procs)
        for i, proc in enumerate(self.procs):
            if key is None:
                proc.send(**cmd)
            else:
                n = cmd[key]
                proc.send(**{**cmd, key: n // shares + (1 if i < n % shares else 0)})
        self._pending = cmd["cmd"]

    def result(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        answers = [p.result(max(0.0, deadline - time.monotonic())) for p in self.procs]
        return self._merged(answers)

    def poll(self, timeout: float) -> dict[str, Any] | None:
        """The merged answer once every process has answered within ``timeout`` of the first
        (the processes answer a timed command together), else None."""
        first = self.procs[0].poll(timeout)
        if first is None:
            return None
        return self._merged([first, *(p.result(30.0) for p in self.procs[1:])])

    def call(self, timeout: float, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.result(timeout)

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()

    def _merged(self, answers: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._pending is not None
        name, self._pending = self._pending, None
        return self.merge(name, answers)


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """Each CPU's (idle, total) clock ticks so far, from /proc/stat (idle and iowait count as
    idle; softirq, the kernel's network work, as busy)."""
    ticks = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [int(v) for v in fields[:8]]
                ticks[name[3:]] = (values[3] + values[4], sum(values))
    return ticks


def idle_fractions(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float | None]:
    """Each CPU's idle share between two :func:`cpu_ticks` readings (None if no tick passed)."""
    shares: dict[str, float | None] = {}
    for cpu, (idle, total) in after.items():
        idle0, total0 = before.get(cpu, (idle, total))
        shares[cpu] = (idle - idle0) / (total - total0) if total > total0 else None
    return shares


def merge_sums(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers summed (``seconds``: the longest), error counts merged, the rest as the first
    process gave them."""
    merged: dict[str, Any] = {"ok": True}
    for answer in answers:
        for key, value in answer.items():
            if key == "ok":
                continue
            if key == "errors":
                merged[key] = merge_counts(merged.get(key, {}), value)
            elif key == "seconds":
                merged[key] = max(merged.get(key, 0.0), value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    return merged


def load_generator(
    url: str,
    logdir: Path,
    profile: Profile,
    args: list[str],
    pool: type[LoadGenPool] = LoadGenPool,
    script: Path = HERE / "loadgen.py",
) -> LoadGen | LoadGenPool:
    """The profile's client processes: one, or a pool of them."""
    if profile.loadgen_processes > 1:
        return pool(url, logdir, profile.loadgen_processes, args, script)
    return LoadGen(url, logdir, script, args)


def merge_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def merge_measures(answers: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for a in answers for x in a.pop("latencies"))
    e2e = sorted(x for a in answers for x in a.pop("e2e"))
    sampled_bytes = sum(a.pop("sampled_bytes") for a in answers)
    summed = ("deliveries", "deliveries_per_s", "clients", "lagged_events", "lagged_dropped",
              "closed_by_server", "loadgen_cpu")  # fmt: skip
    return {
        "ok": True,
        "seconds": max(a["seconds"] for a in answers),
        **{key: sum(a[key] for a in answers) for key in summed},
        **latency_figures(latencies, e2e, sampled_bytes),
    }


def merge_storms(answers: list[dict[str, Any]]) -> dict[str, Any]:
    times = {
        name: sorted(t for a in answers for t in a["times"][name]) for name in answers[0]["times"]
    }
    failures: dict[str, int] = {}
    errors: dict[str, int] = {}
    for answer in answers:
        failures = merge_counts(failures, answer["failures"])
        errors = merge_counts(errors, answer["errors"])
    return {
        "ok": True,
        **{key: sum(a[key] for a in answers) for key in ("clients", "succeeded", "failed")},
        "failures": failures,
        "errors": errors,
        "seconds": max(a["seconds"] for a in answers),
        "timeline": storm_timeline(times),
        "loadgen_cpu": sum(a["loadgen_cpu"] for a in answers),
    }


def merge_waits(answers: list[dict[str, Any]]) -> dict[str, Any]:
    firsts = [a["t_first"] for a in answers if a["t_first"]]
    summed = ("clients", "clients_complete", "received", "lost", "closed_by_server",
              "lagged_events", "cpu_s", "user_s", "sys_s")  # fmt: skip
    return {
        "ok": True,
        "complete": all(a["complete"] for a in answers),
        **{key: sum(a[key] for a in answers) for key in summed},
        "min": min(a["min"] for a in answers),
        "max": max(a["max"] for a in answers),
        "t_first": min(firsts, default=0.0),
        "t_last": max(a["t_last"] for a in answers),
        "t_progress": max(a["t_progress"] for a in answers),
    }


class Market:
    """Control client for the synthetic market's ``/control`` endpoint."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30.0)

    def post(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.http.post(path, params=params)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/control/stats")
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def close(self) -> None:
        self.http.close()


def wait_until(what: str, probe: Callable[[], bool], timeout: float, proc: Proc | None) -> None:
    """Poll ``probe`` until it holds; fail fast if ``proc`` dies, fail late on ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check()
        with contextlib.suppress(OSError, httpx.HTTPError):
            if probe():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


def tcp_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1.0):
        return True


# ----------------------------------------------------------------------------------------------
# Progress


class Reporter:
    """Progress on stderr: a rich bar on a terminal, plain timestamped lines otherwise."""

    def __init__(self, total: int) -> None:
        self.start = time.monotonic()
        self.rich: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.rich = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.task = self.rich.add_task("starting", total=total)

    def __enter__(self) -> Reporter:
        if self.rich is not None:
            self.rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rich is not None:
            self.rich.stop()

    def status(self, text: str) -> None:
        if self.rich is not None:
            self.rich.update(self.task, description=text)
        else:
            self.log(text)

    def log(self, text: str) -> None:
        if self.rich is not None:
            self.rich.console.log(text)
        else:
            print(f"[{time.monotonic() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        if self.rich is not None:
            self.rich.advance(self.task)


# ----------------------------------------------------------------------------------------------
# Workloads


WORKLOADS = ["upstream", "burst", "paced", "idle", "storm", "isolation"]
"""The workloads of one session per implementation, in their fixed order."""
SEPARATE_WORKLOADS = ["alternating", "compression", "latency"]
"""Each with processes of its own: ``alternating`` (run.py, a session per implementation,
all alive at once), ``compression`` (run.py, a session per server configuration) and
``latency`` (benchmarks/latency_check.py, run after run.py)."""
ALTERNATING_IMPLS = ("relay", "websockets", "picows", "node")
"""The servers the alternating light load takes turns between: the relay and the peers that
deliver 100 msg/s to 1,000 clients or come near it. The trio-websocket loop delivers a third
of it, so it has no latency at that rate to compare, and draining its backlog after each of
its windows would only lengthen the workload."""
BOOK_CHANNEL = "sim:book:BTC-USD"


@dataclass
class Session:
    """Everything one implementation's run needs, alive between ``start`` and ``stop``."""

    impl: Impl
    profile: Profile
    report: Reporter
    workdir: Path
    sim_port: int = 0
    port: int = 0
    sim: Proc | None = None
    server: Proc | None = None
    redis: Proc | None = None
    market: Market | None = None
    lg: LoadGen | LoadGenPool | None = None
    client_script: Path = HERE / "loadgen.py"
    client_pool: type[LoadGenPool] | None = LoadGenPool
    """How several processes of ``client_script`` are driven as one; None: always one."""

    @property
    def S(self) -> Proc:  # short accessors keep the workload code readable
        assert self.server is not None
        return self.server

    @property
    def M(self) -> Market:
        assert self.market is not None
        return self.market

    @property
    def L(self) -> LoadGen | LoadGenPool:
        assert self.lg is not None
        return self.lg

    def start(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.sim_port, self.port = free_port(), free_port()
        # Started first because it only connects when told to: its start-up overlaps the rest.
        if self.client_script == HERE / "loadgen.py":
            url, args = self.impl.client_args(self.port)
        else:  # the other client programs speak the WebSocket protocol only
            url, args = f"ws://{HOST}:{self.port}/ws", []
        if self.client_pool is not None:
            script = self.client_script
            self.lg = load_generator(
                url, self.workdir, self.profile, args, self.client_pool, script
            )
        else:
            self.lg = LoadGen(url, self.workdir, self.client_script, args)
        self.sim = Proc(
            f"{self.impl.name}-sim",
            [PY, "-m", "relay", "--log-level", "warning", "simulate", "--port",
             str(self.sim_port), "--rate", "1", "--symbols", SIM_SYMBOLS],
            self.workdir,
        )  # fmt: skip
        self.market = Market(self.sim_port)
        wait_until("market", lambda: self.M.stats() is not None, 20.0, self.sim)
        self.M.post("/control/pause")
        redis_port = 0
        if self.impl.workers > 1:
            redis_port = free_port()
            self.redis = Proc(
                f"{self.impl.name}-redis",
                ["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "",
                 "--appendonly", "no"],
                self.workdir,
            )  # fmt: skip
            wait_until("redis-server", lambda: tcp_open(redis_port), 20.0, self.redis)
        argv = self.impl.argv(self.port, self.sim_port, self.workdir, redis_port)
        self.server = Proc(self.impl.name, argv, self.workdir, tree=self.impl.workers > 1)
        if self.impl.kind == "relay":
            url = f"http://{HOST}:{self.port}/readyz"
            wait_until(
                "relay /readyz", lambda: httpx.get(url, timeout=2).status_code == 200, 30, self.S
            )
            if self.impl.workers > 1:
                # Every worker ready, each answering with its node id on some new connection.
                nodes: set[str] = set()

                def all_nodes_ready() -> bool:
                    answer = httpx.get(url, timeout=2)
                    if answer.status_code == 200:
                        nodes.add(answer.json()["cluster"]["node"])
                    return len(nodes) == self.impl.workers

                wait_until("every worker's /readyz", all_nodes_ready, 30, self.S)
        else:
            wait_until("peer port", lambda: tcp_open(self.port), 30.0, self.S)
            wait_until(
                "peer upstream",
                lambda: self.M.stats()["connections_open"] >= 1,
                30.0,
                self.S,
            )
        self.L.wait_ready()
        return {
            "startup_s": time.monotonic() - t0,
            "rss_start": self.S.rss(),
            "listen_backlog": listen_backlog(self.port),
        }

    def stop(self) -> None:
        for proc in (self.server, self.redis, self.sim, self.lg):  # the reverse of the start order
            if proc is not None:
                proc.kill()
        if self.market is not None:
            self.market.close()

    # -- helpers -------------------------------------------------------------------------------

    def quiesce(self, limit: float, idle_cpu: float = 0.15, window: float = 0.2) -> float:
        """Wait (market paused) until the server and the load generator each use under
        ``idle_cpu`` of a core.

        A saturated server carries a backlog, and closing thousands of connections costs
        a server work after the client side is done; either would leak into the next
        workload's numbers. So does a load generator still reading what a saturating step
        left in its sockets' buffers: the server may be idle while it is seconds behind,
        and the next workload's clients would then wait on it. Returns the seconds waited.
        """
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            self.S.check()
            s0, l0 = self.S.cpu(), self.L.cpu()
            time.sleep(window)
            server, loadgen = (self.S.cpu() - s0) / window, (self.L.cpu() - l0) / window
            if server < idle_cpu and loadgen < idle_cpu:
                break
        return time.monotonic() - t0

    def measure(self, group: str, seconds: float, rss_every: float = 0.0) -> dict[str, Any]:
        """One loadgen measurement window, with CPU use of every process and RSS samples."""
        assert self.sim is not None
        cpu0 = (self.S.cpu(), self.sim.cpu(), self.L.cpu())
        events0 = self.M.stats()["market_events"]
        self.L.send(cmd="measure", group=group, seconds=seconds)
        t0 = time.monotonic()
        samples: list[int] = []
        answer: dict[str, Any] | None = None
        while answer is None:
            if rss_every and time.monotonic() - t0 < seconds + 30.0:
                answer = self.L.poll(rss_every)
                if answer is None:
                    self.S.check()
                    samples.append(self.S.rss())
            else:
                answer = self.L.result(seconds + 30.0)
        self.S.check()
        elapsed = answer["seconds"]
        cpu1 = (self.S.cpu(), self.sim.cpu(), self.L.cpu())
        symbols = len(SIM_SYMBOLS.split(","))
        answer["market_rate"] = (self.M.stats()["market_events"] - events0) / symbols / elapsed
        answer["cpu_server"] = (cpu1[0] - cpu0[0]) / elapsed
        answer["cpu_market"] = (cpu1[1] - cpu0[1]) / elapsed
        answer["cpu_loadgen"] = (cpu1[2] - cpu0[2]) / elapsed
        if rss_every:
            answer["rss_samples"] = samples
        answer.pop("ok", None)
        return answer

    def flood(self, total: int, chunk: int = 2000, patience: float = 3.0) -> str:
        """Burst ``total`` messages on the flood topic, ``chunk`` at a time.

        The market drops a connection whose queue (10,000 messages) overflows, so each
        chunk waits until the market has written the previous one to the server under
        test. A server that stops reading its upstream (blocked on a stalled client) or
        reads it too slowly ends the flood early: that is recorded, not an error.
        """
        sent = self.M.stats()["messages_sent"]
        for done in range(chunk, total + chunk, chunk):
            self.S.check()
            self.M.post("/control/burst", n=chunk, topic=FLOOD_TOPIC)
            sent += chunk
            deadline = time.monotonic() + patience
            while self.M.stats()["messages_sent"] < sent:
                if time.monotonic() > deadline:
                    return (
                        f"cut short: flood messages {done - chunk:,}-{done:,} not read within "
                        f"{patience:.1f} s (server blocked or too slow)"
                    )
                time.sleep(0.02)
        return "complete"

    def set_rate(self, rate: float) -> None:
        self.M.post("/control/rate", per_second=rate)
        self.M.post("/control/resume")

    # -- workloads -----------------------------------------------------------------------------

    def connect(self) -> dict[str, Any]:
        p = self.profile
        sample = max(1, p.clients // p.latency_samplers)
        opened = self.L.call(
            180.0, cmd="open", group="subs", n=p.clients, channel=CHANNEL, sample=sample
        )
        opened.pop("ok", None)
        if opened["opened"] < p.clients:
            raise RuntimeError(f"only {opened['opened']}/{p.clients} clients: {opened['errors']}")
        return opened

    def upstream(self) -> dict[str, Any]:
        stats = self.M.stats()
        return {"connections_open": stats["connections_open"], "clients": self.profile.clients}

    def burst(self) -> dict[str, Any]:
        if not self.profile.pin_burst:
            return self._bursts()
        clients, everywhere = self.L.pids(), os.sched_getaffinity(0)
        server = self.S.pids() + (self.redis.pids() if self.redis else [])
        pin(server, {min(everywhere)})
        pin(clients, everywhere - {min(everywhere)})
        try:
            return self._bursts()
        finally:
            pin(server, everywhere)
            pin(clients, everywhere)

    def _bursts(self) -> dict[str, Any]:
        assert self.sim is not None
        p = self.profile
        reps: list[dict[str, Any]] = []
        started = time.monotonic()
        for rep in range(p.burst_reps):
            if reps and time.monotonic() - started > p.burst_budget:
                break
            self.report.status(f"{self.impl.name}: burst {rep + 1}/{p.burst_reps}")
            self.L.call(10.0, cmd="arm", group="subs", target=p.burst_m)
            server_cpu = self.S.cpu()
            market_cpu = self.sim.cpu()
            ticks = cpu_ticks()
            t0 = time.monotonic()
            self.M.post("/control/burst", n=p.burst_m, topic=TOPIC)
            got = self.L.call(180.0, cmd="wait", group="subs", limit=150.0, stall=5.0)
            server_cpu = self.S.cpu() - server_cpu
            market_cpu = self.sim.cpu() - market_cpu
            cpu_idle = idle_fractions(ticks, cpu_ticks())
            self.S.check()
            end = got["t_last"] if got["complete"] else got["t_progress"]
            seconds = max(end - t0, 1e-6)
            reps.append(
                {
                    "seconds": seconds,
                    "deliveries": got["received"],
                    "deliveries_per_s": got["received"] / seconds,
                    "first_delivery_ms": (got["t_first"] - t0) * 1000 if got["t_first"] else None,
                    # The load generator's processes together, in cores: near their count,
                    # they and not the server set the pace.
                    "loadgen_cpu": got["cpu_s"] / seconds,
                    # Its user and kernel time per delivery: the kernel's share is the TCP
                    # receive path, and the part of a burst that moves from rep to rep.
                    "loadgen_user_us": got["user_s"] * 1e6 / max(1, got["received"]),
                    "loadgen_sys_us": got["sys_s"] * 1e6 / max(1, got["received"]),
                    "server_cpu": server_cpu / seconds,
                    # The market, left free, writes the burst to every server's upstream
                    # connection: a fixed cost per burst that is a sixth of a core during the
                    # relay's 0.2 s bursts and shares a CPU with one side or the other.
                    "market_cpu": market_cpu / seconds,
                    # Each CPU's idle share over the burst (/proc/stat): pinned, the server's
                    # CPU idle means the load generator set the pace.
                    "cpu_idle": cpu_idle,
                    "complete": got["complete"],
                    "lost": got["lost"],
                    "clients_complete": got["clients_complete"],
                    "clients": got["clients"],
                    "lagged_events": got["lagged_events"],
                }
            )
            time.sleep(0.2)
        rates = [r["deliveries_per_s"] for r in reps]
        return {
            "clients": p.clients,
            "messages": p.burst_m,
            "deliveries_per_s": statistics.median(rates),
            "best_deliveries_per_s": max(rates),
            "lost": sum(r["lost"] for r in reps),
            "reps": reps,
        }

    def paced(self) -> dict[str, Any]:
        p = self.profile
        steps = []
        for rate in p.paced_rates:
            self.report.status(f"{self.impl.name}: paced {rate} msg/s")
            self.set_rate(rate)
            time.sleep(p.paced_warmup)
            step = rated(self.measure("subs", p.paced_seconds), rate)
            steps.append(step)
            if step["deliveries_per_s"] < SATURATED_FRACTION * step["offered_per_s"]:
                # Saturated: its capacity is known, and higher rates would only pile up a
                # backlog that takes seconds to drain and leaks into the next workloads.
                break
        self.M.post("/control/pause")
        held = [s["rate"] for s in steps if s["held"]]
        self.report.status(f"{self.impl.name}: paced: draining")
        return {
            "clients": p.clients,
            "steps": steps,
            "max_rate_held": max(held, default=None),
            # A saturating last step leaves the load generator furthest behind.
            "drain_seconds": self.quiesce(3 * p.drain_limit),
        }

    def window(self, rate: int) -> dict[str, Any]:
        """One paced window at ``rate`` of the load generator's clients (the alternating
        workload), from a paused market to a paused and quiet one."""
        p = self.profile
        self.set_rate(rate)
        time.sleep(p.paced_warmup)
        return self.window_done(rated(self.measure("subs", p.paced_seconds), rate))

    def window_done(self, step: dict[str, Any]) -> dict[str, Any]:
        """The end of an alternating window: the market paused and the server and clients
        quiet, so nothing of it is left for whoever measures next."""
        self.M.post("/control/pause")
        step["drain_seconds"] = self.quiesce(3 * self.profile.drain_limit)
        return step

    def idle(self) -> dict[str, Any]:
        p = self.profile
        rss0 = self.S.rss()
        opened = self.L.call(300.0, cmd="open", group="idle", n=p.idle, channel=None)
        self.quiesce(p.drain_limit)
        self.S.check()
        rss1 = self.S.rss()
        upstream = self.M.stats()["connections_open"]
        status = self.L.call(10.0, cmd="status", group="idle")
        self.L.call(60.0, cmd="close", group="idle")
        cleanup = self.quiesce(p.drain_limit)
        n = opened["opened"]
        return {
            "connections": n,
            "failed": opened["failed"],
            "errors": opened["errors"],
            "open_after_1s": status["open"],
            "connect_seconds": opened["seconds"],
            "rss_before": rss0,
            "rss_after": rss1,
            "bytes_per_connection": (rss1 - rss0) / n if n else None,
            "upstream_connections": upstream,
            "cleanup_seconds": cleanup,
        }

    def storm(self) -> dict[str, Any]:
        """All storm clients at once, the market paced so a first message is always coming;
        then they close and the server gets to settle before the next workload."""
        p = self.profile
        self.set_rate(p.storm_rate)
        self.report.status(f"{self.impl.name}: storm of {p.storm_clients:,} clients")
        got = storm_figures(self.L, self.S, p)
        self.M.post("/control/pause")
        self.L.call(120.0, cmd="close", group="storm")
        got["rate"] = p.storm_rate
        got["cleanup_seconds"] = self.quiesce(p.drain_limit)
        return got

    def compression(self, offer: bool) -> dict[str, Any]:
        """Bytes on the wire and server CPU per delivery for book snapshots, book deltas and
        trades, with clients that offer permessage-deflate or not (``deflate_clients.py``).

        Each kind is measured in a phase of its own, so bytes and CPU belong to it alone:
        book clients subscribe (a snapshot each; a peer keeps no book, so not for peers),
        then the market runs at ``comp_rate`` (one book delta per event, nobody on trades
        yet), then the trades clients subscribe and a burst of trades goes to them alone.
        """
        p = self.profile
        phases: dict[str, Any] = {}
        opened = [
            self.L.call(120.0, cmd="open", group=group, n=p.comp_clients, deflate=offer)
            for group in ("book", "trades")
        ]

        def subscribe(group: str, channel: str) -> None:
            self.L.call(60.0, cmd="subscribe", group=group, channel=channel)

        def snapshots() -> None:
            subscribe("book", BOOK_CHANNEL)
            self.L.call(60.0, cmd="wait", group="book", messages=1, limit=30.0)

        def deltas() -> None:
            self.set_rate(p.comp_rate)
            time.sleep(p.comp_seconds)
            self.M.post("/control/pause")
            time.sleep(0.3)  # what the server already read reaches the clients

        def trades() -> None:
            self.M.post("/control/burst", n=p.comp_burst, topic=TOPIC)
            self.L.call(60.0, cmd="wait", group="trades", messages=p.comp_burst, limit=30.0)

        if self.impl.kind == "relay":
            phases["snapshot"] = self.wire_phase("book", snapshots)
        else:
            subscribe("book", BOOK_CHANNEL)
        phases["delta"] = self.wire_phase("book", deltas)
        subscribe("trades", CHANNEL)
        phases["trade"] = self.wire_phase("trades", trades)
        return {
            "offered": offer,
            "clients_per_group": p.comp_clients,
            "negotiated": sum(o["negotiated"] for o in opened),
            "phases": phases,
        }

    def wire_phase(self, group: str, action: Callable[[], None]) -> dict[str, Any]:
        """Run ``action`` and charge the bytes ``group`` received and the server's CPU
        meanwhile to the data messages it received."""
        self.quiesce(self.profile.drain_limit)
        self.L.call(10.0, cmd="reset", group=group)
        bytes_out0 = self.relay_bytes_out()
        cpu0 = self.S.cpu()
        action()
        cpu = self.S.cpu() - cpu0
        bytes_out1 = self.relay_bytes_out()
        got = self.L.call(10.0, cmd="counters", group=group)
        got.pop("ok", None)
        messages = got["messages"]
        got["server_cpu_seconds"] = cpu
        got["bytes_per_message"] = got["wire_bytes"] / messages if messages else None
        got["cpu_us_per_message"] = cpu * 1e6 / messages if messages else None
        if bytes_out0 is not None and bytes_out1 is not None:
            got["relay_bytes_out"] = bytes_out1 - bytes_out0
        return got

    def relay_bytes_out(self) -> int | None:
        """The relay's own count of bytes written to clients (``/metrics``), as a cross-check
        of what the clients counted; None for the peers."""
        if self.impl.kind != "relay":
            return None
        text = httpx.get(f"http://{HOST}:{self.port}/metrics", timeout=5.0).text
        for line in text.splitlines():
            if line.startswith("relay_bytes_out_total ") or line.startswith("relay_bytes_out "):
                return int(float(line.split()[1]))
        return None

    def isolation(self) -> dict[str, Any]:
        """Windows with nothing stalled and with stalled clients alternate, starting and
        ending with nothing stalled, and each side's p99 is the mean of its windows'.

        Two windows of the same 1,000 clients a few seconds apart, nothing stalled in either,
        differ by a fifth or more on this machine, and the hour drifts: a single window
        before and one after cannot resolve the +20 % the target asks about. Alternating
        cancels a steady drift, and a mean of windows moves less than any one of them.

        One client reads the flood channel in every window, so the server is subscribed
        upstream to it throughout and the windows differ by the stalled clients alone: the
        market sends an ETH-USD trade beside each BTC-USD one, and without that client only
        the stalled windows had the server reading both."""
        p = self.profile
        self.L.call(60.0, cmd="open", group="flood_reader", n=1, channel=FLOOD_CHANNEL, sample=0)
        self.set_rate(p.iso_rate)
        time.sleep(p.paced_warmup)
        bases: list[dict[str, Any]] = []
        phases: list[dict[str, Any]] = []
        for i in range(p.iso_rounds):
            self.report.status(f"{self.impl.name}: isolation baseline {i + 1}")
            bases.append(self.measure("subs", p.iso_seconds))
            phases.append(self._stalled_phase(i + 1))
        self.report.status(f"{self.impl.name}: isolation baseline {p.iso_rounds + 1}")
        bases.append(self.measure("subs", p.iso_seconds))
        self.M.post("/control/pause")
        self.L.call(30.0, cmd="close", group="flood_reader")
        base = mean_window(bases)
        with_stalled = mean_window([phase["window"] for phase in phases])
        change = None
        if base["p99_ms"] is not None and with_stalled["p99_ms"] is not None:
            change = (with_stalled["p99_ms"] - base["p99_ms"]) / max(base["p99_ms"], 1e-9)
        offered = p.iso_rate * p.clients
        held = [
            m["deliveries_per_s"] >= HELD_DELIVERY_FRACTION * offered
            for m in [*bases, *(phase["window"] for phase in phases)]
        ]
        # The phase whose memory came closest to its bound speaks for the workload; each
        # phase's own counts, RSS readings and flood time are in ``phases``.
        tightest = max(phases, key=lambda ph: ph["rss_growth_window"] / ph["memory_bound_bytes"])
        return {
            "clients": p.clients,
            "offered_per_s": offered,
            "deliveries_held": all(held),
            "rate": p.iso_rate,
            "prefill_messages": p.iso_prefill,
            "prefill_note": "; ".join(sorted({phase["prefill_note"] for phase in phases})),
            "baseline": base,
            "with_stalled": with_stalled,
            "baseline_windows": bases,
            "phases": phases,
            "p99_change": change,
            "rss_growth_prefill": max(phase["rss_growth_prefill"] for phase in phases),
            "rss_growth_window": tightest["rss_growth_window"],
            "sent_to_stalled_bytes": tightest["sent_to_stalled_bytes"],
            "memory_bound_bytes": tightest["memory_bound_bytes"],
            "memory_bounded": all(phase["memory_bounded"] for phase in phases),
        }

    def _stalled_phase(self, number: int) -> dict[str, Any]:
        """Stalled clients connect and are flooded, one window is measured with them, and
        they leave; the paced stream is back at its rate and warmed up when this returns."""
        p = self.profile
        rss_base = self.S.rss()
        self.report.status(
            f"{self.impl.name}: isolation: {p.iso_stalled} stalled clients ({number})"
        )
        # Paused while they connect: a server saturated by the stream (websockets at 100 msg/s)
        # took more than 120 s over 100 handshakes, and connecting is not measured here.
        self.M.post("/control/pause")
        stalled = self.L.call(
            120.0,
            cmd="open_stalled",
            group="stalled",
            n=p.iso_stalled,
            channels=[CHANNEL, FLOOD_CHANNEL],
        )
        time.sleep(0.1)  # let the server subscribe upstream to the flood channel
        # The paced stream stays paused during the flood, and the server gets to finish its
        # backlog, so the measurement sees the steady state with stalled clients, not the flood.
        t0 = time.monotonic()
        prefill_note = self.flood(p.iso_prefill, patience=p.flood_patience)
        prefill_s = time.monotonic() - t0
        self.quiesce(p.drain_limit)
        self.set_rate(p.iso_rate)
        time.sleep(p.paced_warmup)
        self.S.check()
        rss_prefilled = self.S.rss()
        self.report.status(f"{self.impl.name}: isolation with stalled clients ({number})")
        window = self.measure("subs", p.iso_seconds, rss_every=0.5)
        rss_end = self.S.rss()
        self.M.post("/control/pause")
        self.L.call(30.0, cmd="close", group="stalled")
        # What the stalled clients leave behind (a peer's queues, their sessions' cleanup)
        # must not land in the next window without them.
        self.quiesce(p.drain_limit)
        self.set_rate(p.iso_rate)
        time.sleep(p.paced_warmup)
        growth = rss_end - rss_prefilled
        frame = window["avg_frame_bytes"] or 0.0
        sent_to_stalled = stalled["opened"] * p.iso_rate * window["seconds"] * frame
        bound = max(ISO_BOUNDED_FRACTION * sent_to_stalled, ISO_BOUNDED_FLOOR)
        return {
            "stalled": stalled["opened"],
            "prefill_seconds": prefill_s,
            "prefill_note": prefill_note,
            "window": window,
            "rss_base": rss_base,
            "rss_prefilled": rss_prefilled,
            "rss_end": rss_end,
            "rss_growth_prefill": rss_prefilled - rss_base,
            "rss_growth_window": growth,
            "sent_to_stalled_bytes": sent_to_stalled,
            "memory_bound_bytes": bound,
            "memory_bounded": growth <= bound,
        }


def rated(step: dict[str, Any], rate: int) -> dict[str, Any]:
    """A paced window's measurement with its rate, what that offered its clients, and whether
    it held: p99 under the ceiling, nearly every delivery made."""
    step["rate"] = rate
    step["offered_per_s"] = offered = rate * step["clients"]
    step["held"] = bool(
        step["p99_ms"] is not None
        and step["p99_ms"] < HELD_P99_MS
        and step["deliveries_per_s"] >= HELD_DELIVERY_FRACTION * offered
    )
    return step


def mean_window(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Several measurement windows of the same clients as one: latency percentiles and
    deliveries/s are the windows' means (None when a window has none), the seconds their
    sum. Each window's own figures stay in the windows themselves."""

    def mean(key: str) -> float | None:
        values = [w[key] for w in windows]
        if any(v is None for v in values):
            return None
        return statistics.fmean(values)

    return {
        "seconds": sum(w["seconds"] for w in windows),
        "p50_ms": mean("p50_ms"),
        "p99_ms": mean("p99_ms"),
        "deliveries_per_s": mean("deliveries_per_s"),
        "avg_frame_bytes": mean("avg_frame_bytes"),
    }


def run_impl(
    impl: Impl, profile: Profile, report: Reporter, logroot: Path, workloads: list[str]
) -> dict[str, Any]:
    """The selected ``workloads`` for one implementation, in their fixed order (``upstream``
    always: it costs nothing); each failure is recorded, never raised."""
    session = Session(impl, profile, report, logroot / impl.name)
    selected = [
        w
        for w in WORKLOADS
        if w == "upstream" or (w in workloads and (impl.workloads is None or w in impl.workloads))
    ]

    def body(out: dict[str, Any]) -> None:
        report.status(f"{impl.name}: connecting {profile.clients} clients")
        out["connect"] = session.connect()
        for name in selected:  # each is the Session method of that name
            step: Callable[[], dict[str, Any]] = getattr(session, name)
            report.status(f"{impl.name}: {name}")
            try:
                session.S.check()
                started = time.monotonic()
                out["workloads"][name] = step()
                out["workloads"][name]["workload_seconds"] = time.monotonic() - started
            except Exception as exc:
                out["errors"][name] = f"{type(exc).__name__}: {exc}"
                report.log(f"{impl.name}: {name} failed: {exc}")
                with contextlib.suppress(Exception):
                    session.M.post("/control/pause")
            report.advance()

    return run_session(session, body)


def run_session(session: Session, body: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Start the session's processes, run ``body`` on the result record, kill them all.

    A failure is recorded in ``status`` with the tail of the server's log, never raised: one
    implementation that breaks must not cost the others their results.
    """
    session.workdir.mkdir(parents=True, exist_ok=True)
    name = session.impl.name
    out: dict[str, Any] = {"status": "ok", "workloads": {}, "errors": {}}
    try:
        session.report.status(f"{name}: starting")
        out["startup"] = session.start()
        body(out)
    except Exception as exc:
        out["status"] = f"error: {type(exc).__name__}: {exc}"
        session.report.log(f"{name}: {out['status']}")
    finally:
        if session.server is not None:
            out["server_alive_at_end"] = session.server.alive()
            out["log_tail"] = session.server.tail(15)
        session.stop()
    return out


COMPRESSION_VARIANTS = [
    # row, implementation, the relay's [compression] enabled, whether clients offer deflate
    ("relay, on, offered", "relay", True, True),
    ("relay, on, not offered", "relay", True, False),
    ("relay, off, offered", "relay", False, True),
    ("websockets, offered", "websockets", None, True),
    ("websockets, not offered", "websockets", None, False),
]
"""The compression workload's rows: each a fresh market, server and set of clients. The
``websockets`` peer compresses for every client that offers it (the library's default)."""


def run_compression(
    profile: Profile, report: Reporter, logroot: Path, names: set[str]
) -> dict[str, Any]:
    """Every compression variant whose implementation is selected, one session each."""
    impls = {i.name: i for i in IMPLS}
    supported = relay_has_compression()
    rows: dict[str, Any] = {}
    for row, name, enabled, offer in COMPRESSION_VARIANTS:
        if name not in names:
            continue
        if enabled and not supported:
            rows[row] = {"status": "skipped: this relay has no [compression] setting"}
            report.advance()
            continue
        impl = dataclasses.replace(impls[name], compression=enabled if supported else None)
        workdir = logroot / ("compression-" + row.replace(", ", "-").replace(" ", "_"))
        session = Session(
            impl,
            profile,
            report,
            workdir,
            client_script=HERE / "deflate_clients.py",
            client_pool=None,
        )

        def body(
            out: dict[str, Any], session: Session = session, offer: bool = offer, row: str = row
        ) -> None:
            report.status(f"compression: {row}")
            out["workloads"]["compression"] = session.compression(offer)

        rows[row] = run_session(session, body)
        report.advance()
    return rows


def run_alternating(
    impls: list[Impl],
    skip_node: bool,
    rates: tuple[int, ...],
    rounds: int,
    run_index: int,
    report: Reporter,
    make_session: Callable[[Impl], Session],
    connect: Callable[[Session], object],
    window: Callable[[Session, int], dict[str, Any]],
) -> dict[str, Any]:
    """Light load with every server alive at once, taking turns (docs/performance.md,
    "Light load in alternating windows").

    The paced workload measures each server in its own session, minutes after the one
    before, and on this kind of machine two 5-s windows seconds apart can differ by more
    than the servers do at 100 msg/s. Here each server keeps its market, its process and its
    clients for the whole workload, idle (its market paused) except in its own windows, and
    each round gives every server one ``window`` at the rate, in an order that rotates from
    round to round (and run to run): every server meets the same stretch of the machine. A
    server that delivers under ``SATURATED_FRACTION`` of a rate has no more windows at it or
    above, as in the paced workload. One that fails is recorded and left out; the others go
    on. The harness's clients and the latency check's both run it (``make_session``,
    ``connect`` and ``window`` are theirs)."""
    out: dict[str, Any] = {"order": [], "status": {}, "windows": []}
    sessions: list[Session] = []
    try:
        for impl in impls:
            if impl.name not in ALTERNATING_IMPLS:
                continue
            reason = impl.unavailable(skip_node)
            if reason is not None:
                out["status"][impl.name] = reason
                continue
            session = make_session(impl)
            session.workdir.mkdir(parents=True, exist_ok=True)
            try:
                report.status(f"alternating: starting {impl.name}")
                session.start()
                report.status(f"alternating: connecting {impl.name}")
                connect(session)
            except Exception as exc:
                out["status"][impl.name] = f"error: {type(exc).__name__}: {exc}"
                report.log(f"alternating, {impl.name}: {out['status'][impl.name]}")
                session.stop()
                continue
            sessions.append(session)
            out["status"][impl.name] = "ok"
        out["order"] = [s.impl.name for s in sessions]
        saturated: set[str] = set()
        turn = run_index * rounds
        for rate in rates:
            for rnd in range(rounds):
                for session in rotated(sessions, turn + rnd):
                    name = session.impl.name
                    if name in saturated:
                        continue
                    report.status(f"alternating: {rate} msg/s, round {rnd + 1}, {name}")
                    try:
                        measured = window(session, rate)
                    except Exception as exc:
                        out["status"][name] = f"error at {rate} msg/s: {type(exc).__name__}: {exc}"
                        report.log(f"alternating, {name}: {out['status'][name]}")
                        saturated.add(name)
                        continue
                    measured.update(impl=name, round=rnd + 1)
                    out["windows"].append(measured)
                    if (
                        measured["deliveries_per_s"]
                        < SATURATED_FRACTION * measured["offered_per_s"]
                    ):
                        saturated.add(name)
    finally:
        for session in sessions:
            session.stop()
    report.advance()
    return out


def storm_figures(lg: LoadGen | LoadGenPool, server: Proc, p: Profile) -> dict[str, Any]:
    """One storm of ``p.storm_clients`` from ``lg`` against ``server``, with the server's CPU
    and the kernel's listen-queue counters over it."""
    before = listen_counters()
    cpu0 = server.cpu()
    got = lg.call(
        p.storm_limit + 120.0,
        cmd="storm",
        group="storm",
        n=p.storm_clients,
        channel=CHANNEL,
        limit=p.storm_limit,
    )
    server.check()
    got["server_cpu_seconds"] = server.cpu() - cpu0
    after = listen_counters()
    got["kernel"] = {k: v - before.get(k, 0) for k, v in after.items()}
    got.pop("ok", None)
    return got


def storm_floor(profile: Profile, report: Reporter, logroot: Path) -> dict[str, Any]:
    """The storm against ``storm_floor.py``, a server that does nothing else: how fast the
    load generator itself can open, subscribe and hear from the storm's clients."""
    workdir = logroot / "storm_floor"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lg = load_generator(f"ws://{HOST}:{port}/ws", workdir, profile, [])
    server = Proc("storm_floor", [PY, str(HERE / "storm_floor.py"), "--port", str(port)], workdir)
    report.status(f"storm floor: {profile.storm_clients:,} clients against a trivial server")
    try:
        wait_until("storm floor server", lambda: tcp_open(port), 30.0, server)
        lg.wait_ready()
        got = storm_figures(lg, server, profile)
        got["listen_backlog"] = listen_backlog(port)
        return got
    except Exception as exc:
        return {"status": f"error: {type(exc).__name__}: {exc}", "log_tail": server.tail(15)}
    finally:
        server.kill()
        lg.kill()


def listen_backlog(port: int) -> int | None:
    """The listening socket's backlog as the kernel applies it (``ss``: Send-Q of a
    listening socket), None if ``ss`` cannot tell."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, IndexError):
        listing = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout.split()
        return int(listing[2])
    return None


LISTEN_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
)
"""Kernel-wide TcpExt counters that move when a listen queue overflows: handshakes dropped
(the client's SYN is retransmitted after 1 s, then 3 s...) or answered with a SYN cookie."""


def listen_counters() -> dict[str, int]:
    """The machine's ``LISTEN_COUNTERS`` now (from /proc/net/netstat; empty if unreadable)."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        names, values = (ln.split() for ln in lines if ln.startswith("TcpExt:"))
        table = dict(zip(names[1:], (int(v) for v in values[1:]), strict=True))
        return {k: table[k] for k in LISTEN_COUNTERS if k in table}
    return {}


# ----------------------------------------------------------------------------------------------
# Reporting


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1]) * KIB
    versions: dict[str, str] = {"python": platform.python_version()}
    for dist in (
        "relay",
        "trio",
        "trio-websocket",
        "wsproto",
        "picows",
        "websockets",
        "orjson",
        "uvloop",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    node = shutil.which("node")
    if node:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            versions["node"] = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
    for pkg in ("ws", "socket.io"):
        manifest = HERE / "peers/node/node_modules" / pkg / "package.json"
        if manifest.is_file():
            versions[pkg] = json.loads(manifest.read_text())["version"]
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        if rev.returncode == 0:
            commit = rev.stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": commit,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


# ----------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="relay fan-out benchmark")
    parser.add_argument("--quick", action="store_true", help="small, sub-minute run")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. relay,picows")
    parser.add_argument("--skip-node", action="store_true", help="do not run the Node peer")
    parser.add_argument(
        "--workloads",
        default="",
        help="comma-separated subset, run in the fixed order: "
        + ",".join(WORKLOADS + SEPARATE_WORKLOADS),
    )
    parser.add_argument(
        "--rates", default="", help="paced and alternating rates in msg/s, e.g. 100,250"
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat everything N times")
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep process logs in DIR")
    parser.add_argument(
        "--loadgen-processes",
        type=int,
        default=0,
        help="load generator processes sharing the clients (default: the profile's, 2)",
    )
    parser.add_argument(
        "--burst-messages",
        type=int,
        default=0,
        help="messages per client in each burst (default: the profile's, 1,000; quick 200)",
    )
    parser.add_argument(
        "--burst-reps",
        type=int,
        default=0,
        help="bursts per run (default: the profile's, 11; quick 2)",
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="no discarded warm-up session before run 1 (the full profile has one)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the kernel place the server and the load generator during the bursts",
    )
    parser.add_argument(
        "--client-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of the load generator and the other client processes",
    )
    args = parser.parse_args(argv)
    os.environ[command_loop.LOOP_ENV] = args.client_loop  # inherited by every client process
    args.only = names_arg(parser, "--only", args.only, [i.name for i in IMPLS])
    args.workloads = names_arg(
        parser, "--workloads", args.workloads, WORKLOADS + SEPARATE_WORKLOADS
    )
    try:
        args.rates = tuple(sorted({int(r) for r in args.rates.split(",") if r.strip()}))
    except ValueError:
        parser.error(f"--rates wants whole messages per second, like 100,250: {args.rates!r}")
    if any(r <= 0 for r in args.rates):
        parser.error(f"--rates must be positive: {args.rates}")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    if args.loadgen_processes < 0:
        parser.error(f"--loadgen-processes must be positive, not {args.loadgen_processes}")
    if args.burst_messages < 0 or args.burst_reps < 0:
        parser.error("--burst-messages and --burst-reps must be positive")
    return args


def names_arg(parser: argparse.ArgumentParser, flag: str, text: str, known: list[str]) -> set[str]:
    """A comma-separated list of names, each one of ``known`` (empty: no selection)."""
    names = {s.strip() for s in text.split(",") if s.strip()}
    if names - set(known):
        parser.error(f"{flag}: unknown name(s) {sorted(names - set(known))}; known: {known}")
    return names


def chosen_profile(args: argparse.Namespace) -> Profile:
    profile = QUICK if args.quick else FULL
    if args.rates:
        profile = dataclasses.replace(profile, paced_rates=args.rates, alt_rates=args.rates)
    if args.loadgen_processes:
        profile = dataclasses.replace(profile, loadgen_processes=args.loadgen_processes)
    if args.burst_messages:
        profile = dataclasses.replace(profile, burst_m=args.burst_messages)
    if args.burst_reps:
        profile = dataclasses.replace(profile, burst_reps=args.burst_reps)
    if args.no_warmup:
        profile = dataclasses.replace(profile, warmup=False)
    if args.no_pin or len(os.sched_getaffinity(0)) < 2:
        profile = dataclasses.replace(profile, pin_burst=False)
    return profile


def chosen_impls(args: argparse.Namespace) -> list[Impl]:
    return [i for i in IMPLS if i.name in args.only or (not args.only and i.default)]


@contextlib.contextmanager
def log_dir(keep: str | None) -> Iterator[Path]:
    """Process logs go to a temporary directory unless ``--keep-logs`` names one."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    path = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def rotated(items: list[T], k: int) -> list[T]:
    """``items`` rotated left by ``k``. Run ``k`` takes the implementations in this order, so
    no implementation is always the first after the processes of the run before have gone
    (the first session or two of a sequence have been measured slower, whichever server ran
    in them: docs/performance.md, "The independent check in alternating windows")."""
    if not items:
        return items
    turn = k % len(items)
    return items[turn:] + items[:turn]


def one_run(
    k: int,
    args: argparse.Namespace,
    profile: Profile,
    selected: list[Impl],
    report: Reporter,
    logs: Path,
) -> dict[str, Any]:
    """Run ``k``: every selected implementation once, each with fresh processes."""
    wanted = args.workloads
    session_workloads = [w for w in WORKLOADS if not wanted or w in wanted]
    run: dict[str, Any] = {"run": k + 1, "implementations": {}}
    logs = logs / f"run{k + 1}"
    if set(session_workloads) - {"upstream"} or not wanted:
        if "storm" in session_workloads:
            run["storm_floor"] = storm_floor(profile, report, logs)
        for impl in rotated(selected, k):
            reason = impl.unavailable(args.skip_node)
            if reason is not None:
                run["implementations"][impl.name] = {"status": reason}
                report.log(f"run {k + 1}, {impl.name}: {reason}")
                continue
            run["implementations"][impl.name] = run_impl(
                impl, profile, report, logs, session_workloads
            )
            report.log(f"run {k + 1}, {impl.name}: done")
    if not wanted or "alternating" in wanted:
        run["alternating"] = run_alternating(
            selected,
            args.skip_node,
            profile.alt_rates,
            profile.alt_rounds,
            k,
            report,
            lambda impl: Session(impl, profile, report, logs / "alternating" / impl.name),
            Session.connect,
            Session.window,
        )
    if not wanted or "compression" in wanted:
        run["compression"] = run_compression(profile, report, logs, {i.name for i in selected})
    return run


def warm_up(impl: Impl, profile: Profile, report: Reporter, logs: Path) -> dict[str, Any]:
    """The discarded session before run 1 (``Profile.warmup``): ``impl`` connects its
    clients and runs its bursts (more bytes through loopback sockets than any other workload)
    and its paced steps (about 40 s for the relay), and then stops. Its record is returned
    for the report."""
    report.status(f"warm-up: {impl.name}")
    out = run_impl(impl, profile, report, logs / "warmup", ["burst", "paced"])
    report.log(f"warm-up, {impl.name}: {out['status']}")
    return {"implementation": impl.name, **out}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = chosen_profile(args)
    raise_nofile_limit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    selected = chosen_impls(args)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "profile": asdict(profile),
        "order": [i.name for i in selected],
        "workloads": sorted(args.workloads) or "all",
        "runs": [],
    }
    runnable = [i for i in selected if i.unavailable(args.skip_node) is None]
    steps = args.runs * (len(runnable) * len(WORKLOADS) + len(COMPRESSION_VARIANTS) + 1)
    steps += 3 if profile.warmup and runnable else 0  # the warm-up's upstream, burst, paced
    with log_dir(args.keep_logs) as logs, Reporter(steps) as report:
        if profile.warmup and runnable:
            results["warmup"] = warm_up(runnable[0], profile, report, logs)
        for k in range(args.runs):
            results["runs"].append(one_run(k, args, profile, selected, report, logs))
    results["meta"] = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": time.monotonic() - t0,
        "machine": machine_info(),
        "argv": sys.argv[1:] if argv is None else argv,
        "client_loop": args.client_loop,
    }
    results["summary"] = summarize(results)
    results["targets"] = targets(results)
    results["plots"] = plots(results, out)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(results))
    print(f"results: {out / 'latest.md'} ({results['meta']['seconds']:.0f} s)")
    for t in results["targets"]:
        print(f"{t['verdict']} {t['name']}: {t['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
