"""What one upstream connection should be subscribed to, and when to change it.

Clients come and go far faster than an exchange likes to see subscribe messages, so the last
client out does not unsubscribe at once: the channel lingers and a returning client finds it
still live (with its state). A new connection starts with nothing subscribed, so after a
reconnect the plan subscribes exactly what clients want at that moment, and nothing that was only
lingering.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Plan:
    subscribe: list[str]
    unsubscribe: list[str]

    def __bool__(self) -> bool:
        return bool(self.subscribe or self.unsubscribe)


class UpstreamPlan:
    """Desired versus requested upstream subscriptions of one source, with linger."""

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self.wanted: set[str] = set()
        self.active: set[str] = set()
        """Requested on the current connection (acknowledged or not)."""
        self.lingering: dict[str, float] = {}
        """Active channels nobody wants any more, with the time to unsubscribe them."""
        self.unanswered: dict[str, float] = {}
        """Subscribe requests the upstream has not answered yet, with the time they were sent:
        an upstream that never answers is as dead as a silent one."""

    def want(self, channel: str) -> None:
        self.wanted.add(channel)
        self.lingering.pop(channel, None)

    def unwant(self, channel: str, now: float) -> None:
        self.wanted.discard(channel)
        if channel in self.active:
            self.lingering[channel] = now + self.linger

    def connection_lost(self) -> None:
        """A fresh connection knows nothing of the old one's subscriptions."""
        self.active.clear()
        self.lingering.clear()
        self.unanswered.clear()

    def plan(self, now: float) -> Plan:
        """The requests to send now; they count as active from here on."""
        subscribe = sorted(self.wanted - self.active)
        due = sorted(c for c, t in self.lingering.items() if t <= now)
        for channel in due:
            del self.lingering[channel]
            self.active.discard(channel)
            self.unanswered.pop(channel, None)
        self.active.update(subscribe)
        for channel in subscribe:
            self.unanswered[channel] = now
        return Plan(subscribe, due)

    def answered(self, channels: tuple[str, ...]) -> None:
        """The upstream answered these subscribe requests (accepted or refused)."""
        for channel in channels:
            self.unanswered.pop(channel, None)

    def answer_deadline(self, timeout: float) -> float | None:
        """When the oldest unanswered subscribe request is overdue, or None."""
        oldest = min(self.unanswered.values(), default=None)
        return None if oldest is None else oldest + timeout

    def overdue(self, now: float, timeout: float) -> list[str]:
        """Subscribe requests unanswered for ``timeout`` or longer at ``now``."""
        return sorted(c for c, sent in self.unanswered.items() if sent + timeout <= now)

    def next_deadline(self) -> float | None:
        return min(self.lingering.values(), default=None)
