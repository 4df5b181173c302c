"""Write rounds: client writers are released together, as soon as the ingest has nothing more
queued, and only rest under a real backlog.

Trio yields at every upstream ``get_message()``. If each publish woke each subscriber's writer,
every writer would run after every message and write one frame: measured, 1.9 frames per write
and 21k deliveries per second for 1,000 clients, no better than ``send_message`` per client.

Instead a session with something queued asks to be released, and this task releases every
waiting writer at once, in rounds. The round's flush comes first and writes each new batch
straight to every subscriber that has nothing waiting (:meth:`relay.core.hub.Hub.flush_round`),
which at light load is all of them: the outbox, the request and the release are for
subscribers that are behind. :class:`relay.core.pacing.RoundPacer` decides when: it lets
the ingest run alone for as long as it keeps publishing (a burst still arriving, or what queued
in the socket while the last round was writing), then starts the round; after the round it
rests only in proportion to the backlog the round carried. An idle relay writes a message to
every subscriber within two scheduler ticks of its arrival; a loaded one batches more, and the
heavier the load the more each write carries.

Nothing here waits for writers: a writer stuck on a slow socket simply is not waiting when the
next round comes, and its own send timeout deals with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from relay.core.hub import CLOCK_EVERY
from relay.core.latency import LatencyHistogram
from relay.core.pacing import RoundPacer
from relay.server.wallclock import wall_clock_ms


class Writer(Protocol):
    def release(self, now_ms: int = 0) -> None:
        """Write what is queued now (a busy writer looks again when it is done); ``now_ms``
        is the wall clock in milliseconds, for its latency figure."""
        ...


class Ingest(Protocol):
    @property
    def messages_in(self) -> int: ...

    def flush_round(
        self, clock_ms: Callable[[], int] | None, latency: LatencyHistogram | None = None
    ) -> None:
        """Offer what was published since the last round to the subscribers: those that can
        write it at once do (their fan-out latency recorded in ``latency``), the others'
        writers ask to be released in this round."""
        ...


def release_writers(writers: Sequence[Writer]) -> None:
    """A round's releases, the wall clock read once per ``CLOCK_EVERY`` of them."""
    now_ms = 0
    for i, writer in enumerate(writers):
        if not i % CLOCK_EVERY:
            now_ms = wall_clock_ms()
        writer.release(now_ms)


class WriteRounds:
    def __init__(
        self,
        ingest: Ingest,
        pacer: RoundPacer | None = None,
        clock: Callable[[], float] = trio.current_time,
        latency: LatencyHistogram | None = None,
    ) -> None:
        self._ingest = ingest
        self._latency = latency
        """Where the flush records the fan-out latency of the writes it makes (the writers
        released after it record their own)."""
        self._pacer = pacer if pacer is not None else RoundPacer()
        self._clock = clock
        """Measures a round's cost (the tests make rounds cost virtual time with it)."""
        self._pending: list[Writer] = []
        self._published = False
        """The ingest has messages to flush (its batches wait for this round)."""
        self._wakeup = trio.lowlevel.ParkingLot()
        self.rounds = 0
        self.rested = 0.0
        """Seconds spent resting after loaded rounds, for the metrics."""

    def request(self, writer: Writer) -> None:
        """The writer has something queued (called at most once per drain)."""
        self._pending.append(writer)
        if len(self._pending) == 1:
            self._wakeup.unpark()

    def published(self) -> None:
        """The ingest started a batch while none was waiting: a round must come to flush it."""
        self._published = True
        self._wakeup.unpark()

    def write_round(self) -> int:
        """One round, now: the flush (which writes every subscriber with nothing waiting),
        then the release of every writer that asked for one; how many messages the round
        carried, for the pacer."""
        self._published = False
        self._ingest.flush_round(wall_clock_ms, self._latency)
        batch_size = self._pacer.release(self._ingest.messages_in)
        batch, self._pending = self._pending, []
        self.rounds += 1
        release_writers(batch)
        return batch_size

    async def run(self) -> None:
        ingest, pacer, clock = self._ingest, self._pacer, self._clock
        while True:
            while not self._pending and not self._published:
                await self._wakeup.park()
            pacer.settle(ingest.messages_in, clock())
            while True:
                await trio.lowlevel.checkpoint()
                if pacer.tick(ingest.messages_in, clock()):
                    break
            # The round's cost includes the flush: it writes to every subscriber with nothing
            # waiting, which at light load is all of them.
            started = clock()
            batch_size = self.write_round()
            # The round's cost is the synchronous writes above, and nothing waits for the
            # writer tasks started for slow sockets: in a reconnect storm every tick runs
            # thousands of handshake steps, and two ticks counted here came to six seconds.
            rest = pacer.rest(clock() - started, batch_size)
            if rest > 0:
                self.rested += rest
                await trio.sleep(rest)
