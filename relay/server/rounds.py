"""Write rounds: client writers are released together, so batches grow under load.

Trio yields at every upstream ``get_message()``. If each publish woke each subscriber's writer,
every writer would run after every message and write one frame: measured, 1.9 frames per write
and 21k deliveries per second for 1,000 clients, no better than ``send_message`` per client.

Instead a session with something queued asks to be released, and one task releases writers in
rounds. Before each round it lets the ingest run on its own, one cheap tick at a time, for as
long as the hub's message count keeps moving (a burst still arriving, or the backlog that
piled up in the socket while the last round was writing). Then it releases every waiting writer
at once. The heavier the load, the longer a round of writes takes, the more messages arrive
meanwhile, and the more each next ``send_all`` carries; an idle relay releases within a tick.

Rounds are also paced by their own cost: after a round the task rests half as long as the round
took, so writing takes about two thirds of the CPU and the ingest keeps up; with a thousand
clients that is what turns one message per write into dozens. With a few clients a round costs
microseconds and the pacing is invisible.

Nothing here waits for writers: a writer stuck on a slow socket simply is not waiting when the
next round comes, and its own send timeout deals with it.
"""

from __future__ import annotations

from typing import Protocol

import trio

#: Ticks to let the ingest run alone before releasing writers anyway (bounds the latency a
#: never-ending burst could add: a tick with only the ingest runnable is ~20 us).
MAX_SETTLE_TICKS = 256
#: Consecutive ticks without a new message that mean "the burst is in".
QUIET_TICKS = 2
#: After a round, rest this fraction of its cost before the next one, so writes take about two
#: thirds of the time and the ingest keeps the rest. Measured with 1,000 clients (benchmark,
#: full profile): 0 held 500k deliveries/s at p99 28 ms but burned 97% CPU at 100 msg/s and fell
#: over at 1M/s; 1.0 held 1M/s but cost p99 67 ms even at 100 msg/s; 0.5 holds 500k/s at p99
#: 35 ms, 750k/s in full, 1M/s at p99 195 ms.
PACING = 0.5


class Writer(Protocol):
    def release(self) -> None:
        """Write what is queued now (a busy writer looks again when it is done)."""
        ...


class Ingest(Protocol):
    @property
    def messages_in(self) -> int: ...


class WriteRounds:
    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._pending: list[Writer] = []
        self._wakeup = trio.lowlevel.ParkingLot()
        self.rounds = 0

    def request(self, writer: Writer) -> None:
        """The writer has something queued (called at most once per drain)."""
        self._pending.append(writer)
        if len(self._pending) == 1:
            self._wakeup.unpark()

    async def run(self) -> None:
        ingest = self._ingest
        while True:
            while not self._pending:
                await self._wakeup.park()
            await self._settle(ingest)
            batch, self._pending = self._pending, []
            self.rounds += 1
            started = trio.current_time()
            for writer in batch:
                writer.release()
            # The round's cost: the synchronous writes above, plus two ticks in which the
            # writer tasks started for slow sockets make their first writes (PACING was
            # measured with these two checkpoints).
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            cost = trio.current_time() - started
            if cost > 0:
                await trio.sleep(cost * PACING)

    @staticmethod
    async def _settle(ingest: Ingest) -> None:
        """Let a burst that is still arriving finish before writing any of it."""
        seen = ingest.messages_in
        quiet = 0
        for _ in range(MAX_SETTLE_TICKS):
            await trio.lowlevel.checkpoint()
            if ingest.messages_in == seen:
                quiet += 1
                if quiet >= QUIET_TICKS:
                    return
            else:
                quiet = 0
                seen = ingest.messages_in
