"""``relay serve --workers N``: N relay processes on one machine sharing one port.

One relay process serves clients from one core. Workers are whole relays (each its own Trio
loop, hub and sessions) bound to the same port with ``SO_REUSEPORT``, so that the kernel spreads
new connections across them; they are cluster nodes meeting in Redis (``[cluster]``), which is
what keeps one upstream connection per source and one sequence per channel across them.

The parent process only supervises. It passes SIGINT and SIGTERM on to every worker (and then
restarts none), and SIGHUP (a reload); it restarts a worker that exits when nobody asked it to,
after a backoff so that a worker failing at once does not spin; it gives up, stopping the others
and exiting non-zero, when one keeps failing soon after starting (a port taken, a configuration
changed on disk into an invalid one: restarting will not help); and it kills a worker still
running ``STOP_GRACE`` seconds after being told to stop.

Workers run in a process group of their own: Ctrl-C at a terminal signals the whole foreground
group, and a worker signalled by the terminal and again by the parent would take the second
SIGINT as an order to cut its graceful stop short. So the terminal reaches only the parent, which
passes each signal on once.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import trio

from relay.core.backoff import Backoff

log = logging.getLogger("relay.workers")

MAX_FAILURES = 5
"""Consecutive early exits of one worker after which the supervisor gives up on them all. Early:
before the worker had run for ``RESTART_BACKOFF.reset_after`` seconds; a worker that ran that
long starts the count over when it exits."""
STOP_GRACE = 30.0
"""Seconds a worker may take to stop after SIGINT or SIGTERM before it gets SIGKILL (a relay
normally needs ``server.close_timeout`` to say goodbye to its clients)."""
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
PASSED_ON: tuple[signal.Signals, ...] = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None
)
"""What the parent hears and passes on: the stop signals, and SIGHUP (reload) where it exists."""


def restart_backoff() -> Backoff:
    """The restart schedule of one worker: a first restart within half a second, then doubling
    to ten seconds; a minute of running forgives earlier failures."""
    return Backoff(initial=0.5, factor=2.0, cap=10.0, reset_after=60.0)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Workers:
    """N copies of one command, kept running until stopped (see the module's docstring)."""

    def __init__(
        self,
        argv: Sequence[str],
        n: int,
        *,
        max_failures: int = MAX_FAILURES,
        stop_grace: float = STOP_GRACE,
        random: Callable[[], float] = random.random,
    ) -> None:
        if n < 1:
            raise ValueError(f"need at least one worker, got {n}")
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, got {max_failures}")
        self.argv = list(argv)
        self.n = n
        self.max_failures = max_failures
        self.stop_grace = stop_grace
        self.random = random
        self.processes: list[trio.Process | None] = [None] * n
        """Each worker's running process, None while it is being restarted."""
        self.started = 0
        """Processes started so far, restarts included."""
        self.stopping: signal.Signals | None = None
        """The signal that stopped the workers, once one did: no more restarts."""
        self.gave_up = False
        self.unclean: list[str] = []
        """Workers that did not end cleanly once stopped (killed, or a failure status)."""
        self._stop_requested = trio.Event()

    async def run(self) -> int:
        """Run the workers until they are stopped: 0 when every one then ended cleanly, 1 when
        one of them did not or the supervisor gave up."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._kill_after_grace)
            async with trio.open_nursery() as keepers:
                for index in range(self.n):
                    keepers.start_soon(self._keep, index)
            nursery.cancel_scope.cancel()
        return 1 if self.gave_up or self.unclean else 0

    def stop(self, signum: signal.Signals) -> None:
        """Pass ``signum`` on to every worker and restart none from now on. A later stop signal
        is passed on too: a second Ctrl-C means the same to a worker as to a single relay."""
        if self.stopping is None:
            self.stopping = signum
            self._stop_requested.set()
        self.forward(signum)

    def forward(self, signum: signal.Signals) -> None:
        """Send ``signum`` to every worker running now."""
        for process in self.processes:
            if process is not None and process.returncode is None:
                process.send_signal(signum)

    async def _keep(self, index: int) -> None:
        backoff = restart_backoff()
        while self.stopping is None:
            process = await trio.lowlevel.open_process(self.argv, process_group=0)
            self.processes[index] = process
            self.started += 1
            if self.stopping is not None:  # stopped while this one was starting
                process.send_signal(self.stopping)
            backoff.connected(trio.current_time())
            fields = {"worker": index, "pid": process.pid}
            log.info("worker %d started (pid %d)", index, process.pid, extra=fields)
            try:
                returncode = await process.wait()
            finally:
                # Cancelled (the parent itself is going down): no worker outlives it.
                if process.returncode is None:
                    process.kill()
                    with trio.CancelScope(shield=True):
                        await process.wait()
            self.processes[index] = None
            how = describe_exit(returncode)
            if self.stopping is not None:
                if returncode not in (0, -self.stopping):
                    self.unclean.append(f"worker {index} (pid {process.pid}): {how}")
                    log.warning("worker %d (pid %d) stopped: %s", index, process.pid, how)
                return
            backoff.disconnected(trio.current_time())
            if backoff.attempts + 1 >= self.max_failures:
                log.error(
                    "worker %d (pid %d) exited (%s), %d times in a row soon after starting: "
                    "giving up, stopping the others",
                    index,
                    process.pid,
                    how,
                    self.max_failures,
                    extra=fields,
                )
                self.gave_up = True
                self.stop(signal.SIGTERM)
                return
            delay = backoff.next_delay(self.random)
            log.warning(
                "worker %d (pid %d) exited (%s); restarting it in %.1f s",
                index,
                process.pid,
                how,
                delay,
                extra={**fields, "retry_in": delay},
            )
            with trio.move_on_after(delay):
                await self._stop_requested.wait()

    async def _kill_after_grace(self) -> None:
        await self._stop_requested.wait()
        await trio.sleep(self.stop_grace)
        for index, process in enumerate(self.processes):
            if process is not None and process.returncode is None:
                log.error(
                    "worker %d (pid %d) still running %.0f s after %s: killing it",
                    index,
                    process.pid,
                    self.stop_grace,
                    self.stopping.name if self.stopping else "the stop",
                    extra={"worker": index, "pid": process.pid},
                )
                process.kill()


async def supervise(workers: Workers) -> int:
    """Run ``workers``, passing the signals this process receives on to them."""
    with trio.open_signal_receiver(*PASSED_ON) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pass_on, signals, workers)
            status = await workers.run()
            nursery.cancel_scope.cancel()
    return status


async def _pass_on(signals: AsyncIterator[int], workers: Workers) -> None:
    async for signum in signals:
        received = signal.Signals(signum)
        if received in STOP_SIGNALS:
            log.info("%s: stopping the workers", received.name, extra={"signal": received.name})
            workers.stop(received)
        else:
            log.info("%s: passed on to the workers", received.name, extra={"signal": received.name})
            workers.forward(received)


def run_workers(argv_for_child: list[str], n: int) -> int:
    """Run ``n`` copies of the command ``argv_for_child`` until SIGINT or SIGTERM; the exit
    status for this process (see :meth:`Workers.run`)."""
    return trio.run(supervise, Workers(argv_for_child, n))


async def while_parent_lives(
    run: Callable[[], Awaitable[object]], parent: int, poll: float = 1.0
) -> None:
    """A worker's ``run``, stopped (gracefully: clients hear 1001) once its supervisor is
    gone, even by SIGKILL, which passes nothing on: the worker is then reparented, and sees
    it within ``poll`` seconds. Linux's parent-death signal cannot serve here, since Trio
    starts processes from a thread and that signal follows the thread, not the process."""
    async with trio.open_nursery() as nursery:

        async def run_then_stop() -> None:
            await run()
            nursery.cancel_scope.cancel()

        nursery.start_soon(run_then_stop)
        while os.getppid() == parent:  # noqa: ASYNC110 - no event: polling is how a reparenting is seen
            await trio.sleep(poll)
        log.warning("worker: supervisor %d is gone; stopping", parent)
        nursery.cancel_scope.cancel()
