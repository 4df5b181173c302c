"""One node's view of one source's cluster lease: when to ask the store, and until when it may
believe it holds the source.

In cluster mode many nodes share one Redis, and exactly one of them may run a source's upstream
connection. The lease is a key in the store holding the owner's token with a time to live. The
safety rule lives here: a node believes it holds the source only until ``sent_at + ttl -
margin``, where ``sent_at`` is when it *sent* the request the store granted. The store received
that request later than ``sent_at``, so its key cannot expire before ``sent_at + ttl``, and no
other node can take the key before then; ``margin`` absorbs the difference between the rates of
this node's clock and the store's. A refusal ends the belief at once. So at no instant do two
nodes both believe they hold a source, whatever the delays, losses and reordering in between.

One request is in flight at a time, and only its answer counts: an answer to a request the
shell gave up on (timed out) is ignored, so a stale grant can never extend a belief beyond what
the request in flight vouches for.

Sans-IO: time (seconds on the shell's clock) is an argument; the Trio shell is
:mod:`relay.cluster.lease`.
"""

from __future__ import annotations

import enum
import math

import attrs


class RequestKind(enum.Enum):
    ACQUIRE = "acquire"
    """Take the key if it is free (or already ours) and set its time to live."""
    RENEW = "renew"
    """Reset the time to live of the key if it is still ours."""


@attrs.frozen(eq=False)
class LeaseRequest:
    """A request the shell sends to the store; compared by identity, so an answer is matched to
    the very request it answers."""

    kind: RequestKind
    sent_at: float
    """When the shell sent it: a grant vouches for the key until ``sent_at + ttl``."""


class Lease:
    """One node's lease on one source: the requests it owes the store, and its belief."""

    def __init__(self, ttl: float, renew_every: float, retry_every: float, margin: float) -> None:
        for name, value in (
            ("ttl", ttl),
            ("renew_every", renew_every),
            ("retry_every", retry_every),
            ("margin", margin),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Lease {name} must be a finite number > 0 seconds, got {value!r}")
        if margin >= ttl:
            raise ValueError(f"Lease margin ({margin!r}) must be < ttl ({ttl!r})")
        if renew_every >= ttl - margin:
            raise ValueError(
                f"Lease renew_every ({renew_every!r}) must be < ttl - margin ({ttl - margin!r}):"
                " a renewal must go out while the lease is still held"
            )
        self.ttl = ttl
        self.renew_every = renew_every
        self.retry_every = retry_every
        self.margin = margin
        self.held_until = -math.inf
        """The instant the belief ends unless a renewal is granted first (-inf: not held)."""
        self._next_send_at = -math.inf
        self._in_flight: LeaseRequest | None = None
        self._sent_any = False
        self._closed = False

    @property
    def ttl_ms(self) -> int:
        """The time to live to ask the store for, in whole milliseconds; rounded up, since a key
        that lives a little longer than believed is safe and one that lives shorter is not."""
        return math.ceil(self.ttl * 1000)

    @property
    def in_flight(self) -> LeaseRequest | None:
        """The request awaiting its answer, if any."""
        return self._in_flight

    def holds(self, now: float) -> bool:
        """Whether this node may act as the source's owner at ``now``."""
        return now < self.held_until

    def start_request(self, now: float) -> LeaseRequest | None:
        """The request to send at ``now``, if one is due; it counts as sent at ``now`` and is in
        flight until :meth:`answered` or :meth:`failed`.

        While held, a renewal every ``renew_every``; while not, an acquisition every
        ``retry_every``. Nothing while a request is in flight or after :meth:`release`.
        """
        if self._closed or self._in_flight is not None or now < self._next_send_at:
            return None
        if self.holds(now):
            kind, self._next_send_at = RequestKind.RENEW, now + self.renew_every
        else:
            kind, self._next_send_at = RequestKind.ACQUIRE, now + self.retry_every
        self._in_flight = LeaseRequest(kind, now)
        self._sent_any = True
        return self._in_flight

    def answered(self, request: LeaseRequest, granted: bool) -> None:
        """The store answered ``request``. An answer to anything but the request in flight is
        ignored.

        A grant vouches for ``request.sent_at + ttl - margin``, which may already be past when
        the answer is late: then the lease is not held, and an acquisition is due at once. A
        refusal means another node holds the key: not held, next attempt ``retry_every`` after
        the refused request went out.
        """
        if request is not self._in_flight:
            return
        self._in_flight = None
        if granted:
            # Requests go out one at a time, so this grant's sent_at is the latest granted one.
            self.held_until = request.sent_at + self.ttl - self.margin
            self._next_send_at = request.sent_at + self.renew_every
        else:
            self.held_until = -math.inf
            self._next_send_at = request.sent_at + self.retry_every

    def failed(self, request: LeaseRequest) -> None:
        """No answer to ``request`` (timed out, or the store could not be reached). The belief
        keeps the bound the last grant gave it: an unanswered request cannot shorten the key's
        life. The next request goes out on the schedule set when this one was sent."""
        if request is self._in_flight:
            self._in_flight = None

    def release(self) -> bool:
        """The node gives the source up for good (clean shutdown): the belief ends, no further
        request is due, and any answer is ignored.

        Returns whether the shell should ask the store to delete the key: whenever a request
        was ever sent, since even an unanswered one may have left the key ours.
        """
        self.held_until = -math.inf
        self._in_flight = None
        self._closed = True
        return self._sent_any

    def next_wakeup(self, now: float) -> float:
        """The next instant something changes without an answer arriving: the belief ends, or a
        request falls due; ``math.inf`` if only an answer can change anything."""
        wakeup = self.held_until if self.holds(now) else math.inf
        if not self._closed and self._in_flight is None:
            wakeup = min(wakeup, self._next_send_at)
        return wakeup
