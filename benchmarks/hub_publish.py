"""What one channel message costs the hub's fan-out, with and without its history, with a
tenth of the subscribers taking permessage-deflate frames, and with the messages of a write
round batched (1, 2, 4 and 16 a round), measured in-process (no sockets): the per-message path
alone, where the harness's end-to-end figures swing by more than the difference.

    python benchmarks/hub_publish.py        # best of 7 runs each, A/B interleaved
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from relay.core.deflate import CompressionPolicy
from relay.core.history import HistoryBounds
from relay.core.hub import Hub, Limits
from relay.core.model import StreamKind, Update
from relay.core.outbox import Outbox, Policy

CHANNEL = "sim:trades:BTC-USD"
DATA = {"symbol": "BTC-USD", "price": "100.5", "size": "0.1", "side": "buy", "trade_id": "1"}
"""An envelope of about 150 bytes: over the default ``min_bytes``, so compressed when asked."""


class Subscriber:
    __slots__ = ("framing", "outbox")

    def __init__(self, framing: int = 0) -> None:
        self.outbox = Outbox(1 << 30, 1 << 40)
        self.framing = framing

    def wake(self) -> None:
        pass

    def overflow(self) -> None:
        pass


class Source:
    def want(self, channel: str) -> None:
        pass

    def unwant(self, channel: str) -> None:
        pass

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        return None


def microseconds_per_message(
    history: bool, subscribers: int, messages: int, deflated: int = 0, batch: int = 0
) -> float:
    """``batch``: 0 for a hub without write rounds (each message offered as it comes), else
    the messages a write round flushes at once."""
    bounds: Callable[[str], HistoryBounds | None] = (
        (lambda _: HistoryBounds(1000, 300_000)) if history else (lambda _: None)
    )
    hub = Hub(
        lambda _: StreamKind.EVENT,
        lambda _: Policy.DROP,
        bounds,
        epoch="bench",
        compression=CompressionPolicy(),
    )
    hub.add_source("sim", Source())
    if batch:
        hub.flush_before_writing(lambda: None)
    subs = [Subscriber(15 if i < deflated else 0) for i in range(subscribers)]
    for sub in subs:
        hub.subscribe(sub, [CHANNEL], None, Limits(10))
    started = time.perf_counter()
    for i in range(messages):
        hub.publish(Update(CHANNEL, DATA, i, False), 1_700_000_000_000 + i)
        if batch and i % batch == batch - 1:
            hub.flush()
        if i % 96 == 95:  # the writers drain the queues now and then
            for sub in subs:
                sub.outbox.drain()
    return (time.perf_counter() - started) / messages * 1e6


def main() -> None:
    for subscribers, messages in ((1, 20_000), (100, 20_000), (1000, 3_000)):
        without, with_history = [], []
        for _ in range(7):
            without.append(microseconds_per_message(False, subscribers, messages))
            with_history.append(microseconds_per_message(True, subscribers, messages))
        a, b = min(without), min(with_history)
        print(
            f"{subscribers:5d} subscribers: {a:8.2f} us/message without history, "
            f"{b:8.2f} with it ({(b - a) / a:+.1%})"
        )
    for subscribers, messages in ((100, 20_000), (1000, 3_000)):
        plain, deflated = [], []
        for _ in range(7):
            plain.append(microseconds_per_message(False, subscribers, messages))
            deflated.append(
                microseconds_per_message(False, subscribers, messages, subscribers // 10)
            )
        a, b = min(plain), min(deflated)
        print(
            f"{subscribers:5d} subscribers: {a:8.2f} us/message all plain, {b:8.2f} with a tenth "
            f"taking deflate ({(b - a) / a:+.1%})"
        )
    for subscribers, messages in ((100, 19_200), (1000, 2_880)):
        by_batch: dict[int, list[float]] = {0: [], 1: [], 2: [], 4: [], 16: []}
        for _ in range(7):
            for batch, runs in by_batch.items():
                runs.append(microseconds_per_message(False, subscribers, messages, batch=batch))
        figures = ", ".join(
            f"{min(runs):.2f} {'offered at once' if not batch else f'{batch} a round'}"
            for batch, runs in by_batch.items()
        )
        print(f"{subscribers:5d} subscribers, us/message: {figures}")


if __name__ == "__main__":
    main()
