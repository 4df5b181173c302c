"""A real ``redis-server`` for the tests of cluster mode, on loopback, with nothing on disk.

Cluster tests stop Redis and start it again while relay nodes run, and expect it back where it
was: so the helper keeps its port across ``stop()`` and ``start()`` (a node's ``redis_url`` stays
valid), and Redis runs without persistence (``--save ''``, no append-only file), so a restart
comes back empty, as after losing the Redis host.

The methods block the caller for as long as Redis takes to start or stop (milliseconds), which
an async test may afford; they never wait longer than ``timeout`` seconds.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.ci import skip_or_fail

EXECUTABLE = "redis-server"
INSTALL_HINT = "redis-server not found: apt-get install redis-server"


def redis_server_missing() -> str | None:
    """Why Redis cannot run here, or None when it can."""
    return None if shutil.which(EXECUTABLE) else INSTALL_HINT


def require_redis_server() -> None:
    """Skip the calling test when there is no ``redis-server`` here; fail it in CI."""
    skip_or_fail(redis_server_missing(), "Redis tests")


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice; another process could take it before
    Redis binds it, which :meth:`RedisServer.start` answers by trying another)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers_ping(port: int) -> bool:
    """Whether something on the port speaks Redis and is ready (a loading Redis answers
    ``-LOADING``, not ``+PONG``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, started, stopped and started again on the
    same port; its working directory is a temporary one of its own, removed by :meth:`close`."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._directory = tempfile.TemporaryDirectory(prefix="relay-redis-")
        self.directory = Path(self._directory.name)
        self.log_file = self.directory / "redis.log"
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Redis has not been started: no port yet")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start Redis and return once it answers PING: on a free port the first time, on the
        same port afterwards."""
        if self.running:
            raise RuntimeError(f"Redis is already running on port {self.port}")
        if self.port is not None:
            self._launch(self.port)
            return
        for _ in range(5):  # the free port was taken before Redis could bind it: another one
            port = free_port()
            try:
                self._launch(port)
            except PortTaken:
                continue
            self.port = port
            return
        raise RuntimeError("Redis could not bind any of five free ports; see " + str(self.log_file))

    def stop(self) -> None:
        """SIGTERM, and wait for Redis to exit (a clean shutdown: clients see the connection
        close)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, and wait: Redis gone without a word, as when its host dies."""
        self._end(signal.SIGKILL)

    def close(self) -> None:
        """Kill Redis if it runs and remove its directory."""
        if self.running:
            self.kill()
        self._directory.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _launch(self, port: int) -> None:
        self.log_file.write_bytes(b"")
        # stdin too, so that Redis never shares the terminal of an interactive pytest run
        process = subprocess.Popen(
            [
                EXECUTABLE,
                *("--port", str(port)),
                *("--bind", "127.0.0.1"),
                *("--save", ""),
                *("--appendonly", "no"),
                *("--daemonize", "no"),
                *("--dir", str(self.directory)),
                *("--logfile", str(self.log_file)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.timeout
        while not answers_ping(port):
            if process.poll() is not None:
                log = self.log_file.read_text(errors="replace")
                if "Address already in use" in log:
                    raise PortTaken(port)
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{log}")
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"redis-server did not answer PING within {self.timeout} s")
            time.sleep(0.005)
        self.process = process

    def _end(self, signum: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(
                    f"redis-server did not exit within {self.timeout} s of {signum.name}"
                ) from None
        self.process = None


class PortTaken(RuntimeError):
    """Another process listens on the port Redis was to bind (on a first start, the free port
    was taken in the meantime, and another is tried)."""

    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use by another process: Redis cannot bind it")
