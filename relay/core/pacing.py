"""When the write rounds write: latency first, batching only while there is a real backlog.

Every client write is a system call, about 5 to 15 us on loopback whatever it carries, so a
relay that writes each message to each client on its own spends its CPU on system calls and
falls over at a few hundred messages per second to a thousand clients. Batching several
messages into one write fixes that, but a batch waits, and a relay that batches by the clock
(settle ticks and a fixed rest after each round, as this relay did until step 8) makes every
client wait even when nothing else is coming: 10 ms p50 at 100 msg/s where a plain Node
server took 4.

So the decisions here only batch what is really there:

- **Settling.** After a message arrives, the ingest (the upstream reader) gets a few scheduler
  ticks alone, and the round starts as soon as it has published nothing new for ``quiet_ticks``
  ticks in a row: a burst still arriving, or messages that queued in the socket during the last
  round, are all in the same round; a lone message is written within two ticks (tens of
  microseconds). ``max_settle`` bounds, in time, what a never-ending stream can add, and
  what slow ticks can add: while thousands of clients connect at once, one scheduler tick runs
  every connection's handshake step and can last a second, and a bound counted in ticks (256,
  as it was) held the first data of a reconnect storm's clients back for six seconds.
- **Resting.** After a round, the task rests in proportion to the round's cost *and* to the
  backlog it carried: a round of one message (idle, light load) rests not at all, so the next
  message is written as soon as it comes; a round that carried ``full_batch`` messages or more
  (the ingest is ahead of the writes) rests ``pacing`` times its cost, which lets the next
  batch grow, so writes stay about two thirds of the CPU and the ingest keeps up at a million
  deliveries a second. In between, the rest grows linearly with the batch.

Sans-IO: counts and durations in, decisions out. :class:`relay.server.rounds.WriteRounds` is
the Trio task that carries them out.
"""

from __future__ import annotations

import attrs


@attrs.define
class RoundPacer:
    quiet_ticks: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    """Consecutive ticks without a new message that mean "the burst is in"."""
    max_settle: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    """Seconds after which a round starts anyway, however many ticks that was. A burst of
    200 messages to 1,000 clients settles 20 to 40 ms (a tick is one publish to every
    subscriber, 0.3 ms), so the bound only cuts what would otherwise wait longer."""
    pacing: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    """The rest after a fully loaded round, as a fraction of its cost. Measured with 1,000
    clients (docs/performance.md): 0 leaves no CPU for the ingest at a million deliveries a
    second; 1.0 holds it but doubles every wait; 0.5 holds 750 msg/s in full."""
    full_batch: int = attrs.field(default=4, validator=attrs.validators.ge(2))
    """Messages in a round at which the rest reaches ``pacing`` times the round's cost."""
    _seen: int = attrs.field(init=False, default=0)
    _quiet: int = attrs.field(init=False, default=0)
    _since: float = attrs.field(init=False, default=0.0)
    _released_at: int = attrs.field(init=False, default=0)
    """The ingest's message count when the last round started."""

    def settle(self, messages_in: int, now: float) -> None:
        """A round is wanted (``now`` in seconds): start watching the ingest."""
        self._seen = messages_in
        self._quiet = 0
        self._since = now

    def tick(self, messages_in: int, now: float) -> bool:
        """After one scheduler tick: True when the round should start now."""
        if messages_in == self._seen:
            self._quiet += 1
        else:
            self._quiet = 0
            self._seen = messages_in
        return self._quiet >= self.quiet_ticks or now - self._since >= self.max_settle

    def release(self, messages_in: int) -> int:
        """The round starts: how many messages arrived since the previous one did (its
        batch; 0 for a round of replies alone)."""
        batch = messages_in - self._released_at
        self._released_at = messages_in
        return batch

    def rest(self, cost: float, batch: int) -> float:
        """Seconds to rest after a round that took ``cost`` and carried ``batch`` messages."""
        load = min(1.0, max(0, batch - 1) / (self.full_batch - 1))
        return max(0.0, cost) * self.pacing * load
