"""The client library against a real relay and a real synthetic market, both killed and
restarted under it while a consumer keeps a book."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import trio

from relay.adapters.sim import SimAdapter
from relay.client import Data, Gap, Snapshot, Status, Subscribed, open_client
from relay.config import parse_config
from relay.core.backoff import Backoff
from relay.core.source import FetchSnapshot
from relay.server.relay import Relay
from relay.sim.server import SimServer
from tests.e2e.conftest import HOST, relay_config, running_stack
from tests.tcp_proxy import TcpProxy

BOOK = "sim:book:BTC-USD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Consumer:
    """Keeps the book (the only channel subscribed) from the client's events and checks
    what a consumer may rely on."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None
        self.snapshots: list[str] = []
        self.gaps: list[Gap] = []
        self.statuses: list[str] = []
        self.unannounced: list[tuple[int | None, int]] = []
        self._gap_pending = False

    def on(self, event: Any) -> None:
        match event:
            case Snapshot(seq=seq, data=data, source=source):
                self.bids = dict(map(tuple, data["bids"]))  # type: ignore[arg-type]
                self.asks = dict(map(tuple, data["asks"]))  # type: ignore[arg-type]
                self.seq = seq
                self.snapshots.append(source)
                self._gap_pending = False
            case Data(seq=seq, data=data):
                if self.seq is None or seq != self.seq + 1:
                    # A delta that does not follow: only allowed right after a gap, and a
                    # book cannot go on from a gap without a snapshot anyway.
                    self.unannounced.append((self.seq, seq))
                for side, levels in (("bids", self.bids), ("asks", self.asks)):
                    for price, size in data[side]:
                        if size == "0":
                            levels.pop(price, None)
                        else:
                            levels[price] = size
                self.seq = seq
            case Gap():
                self.gaps.append(event)
                self._gap_pending = True
            case Status(state=state):
                self.statuses.append(state)


async def test_a_book_survives_restarts_of_the_market_and_of_the_relay(
    nursery: trio.Nursery,
) -> None:
    sim_port, relay_port = free_port(), free_port()
    config = parse_config(
        relay_config(sim_port, server={"port": relay_port}, source={"symbols": ["BTC-USD"]})
    )
    consumer = Consumer()

    async def start(target: Any, *args: Any) -> trio.CancelScope:
        """Start a server in the test's nursery, in a scope that kills it alone."""
        scope = trio.CancelScope()

        async def scoped(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await target(*args, task_status=task_status)

        await nursery.start(scoped)
        return scope

    sim = SimServer(rate=40)
    sim_scope = await start(sim.serve, HOST, sim_port)
    relay = Relay(config)
    relay_scope = await start(relay.serve)

    async def settled(within: float = 10.0) -> None:
        """Until the consumer holds the relay's latest book seq."""
        with trio.fail_after(within):
            while True:
                state = relay.hub.channel(BOOK)
                if consumer.seq is not None and consumer.seq == state.seq and state.seq > 0:
                    return
                await trio.sleep(0.05)

    fast = Backoff(initial=0.05, cap=0.2)
    async with open_client(
        f"ws://{HOST}:{relay_port}/ws", [BOOK], backoff=fast, connect_timeout=1.0
    ) as client:

        async def consume() -> None:
            async for event in client:
                consumer.on(event)

        nursery.start_soon(consume)
        await settled()
        first_snapshots = len(consumer.snapshots)

        # The market dies and a new one (another book) comes up on the same port.
        sim_scope.cancel()
        sim = SimServer(rate=40)
        sim_scope = await start(sim.serve, HOST, sim_port)
        with trio.fail_after(10):
            while len(consumer.snapshots) == first_snapshots:  # noqa: ASYNC110 - other tasks
                await trio.sleep(0.05)
        await settled()

        # The relay dies and comes back on the same port: another epoch.
        relay_scope.cancel()
        await trio.sleep(0.2)
        relay = Relay(config)
        relay_scope = await start(relay.serve)
        with trio.fail_after(10):
            while client.connections < 2:  # noqa: ASYNC110 - the client's own task
                await trio.sleep(0.05)
        await settled()

        async with httpx.AsyncClient() as http:
            await http.post(f"http://{HOST}:{sim_port}/control/pause")
            await trio.sleep(0.3)
            await settled()
            raw = await http.get(f"http://{HOST}:{sim_port}/api/snapshot?topic=depth.BTC-USD")
    market = SimAdapter("sim", ["BTC-USD"]).parse_snapshot(FetchSnapshot(BOOK), raw.content).data
    assert consumer.bids == dict(map(tuple, market["bids"]))  # type: ignore[arg-type]
    assert consumer.asks == dict(map(tuple, market["asks"]))  # type: ignore[arg-type]
    assert consumer.bids and consumer.asks
    assert consumer.unannounced == []
    assert client.connections == 2
    assert consumer.statuses.count("connected") == 2
    relay_scope.cancel()
    sim_scope.cancel()


async def test_a_dropped_connection_resumes_from_history_with_nothing_lost(
    nursery: trio.Nursery,
) -> None:
    trades = "sim:trades:BTC-USD"
    async with running_stack(nursery, rate=50.0) as stack:
        proxy = TcpProxy(HOST, stack.relay_port)
        port = await nursery.start(proxy.run)
        seqs: list[int] = []
        others: list[Any] = []
        fast = Backoff(initial=0.05, cap=0.2)
        async with open_client(
            f"ws://{HOST}:{port}/ws", [trades], backoff=fast, connect_timeout=1.0
        ) as client:

            async def consume() -> None:
                async for event in client:
                    if isinstance(event, Data):
                        seqs.append(event.seq)
                    elif not isinstance(event, Status | Subscribed):
                        others.append(event)

            nursery.start_soon(consume)
            await stack.wait_for(lambda: len(seqs) >= 5)
            proxy.cut()  # the link dies; the relay goes on publishing
            cut_at = stack.relay.hub.channel(trades).seq
            await stack.wait_for(lambda: stack.relay.hub.channel(trades).seq >= cut_at + 10)
            proxy.restore()
            await stack.wait_for(lambda: client.connections == 2)
            await stack.wait_for(lambda: seqs[-1] >= cut_at + 15)
    # Every message once, in order, across the drop: replayed from the relay's history.
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    # No gap, no snapshot, no error: the resume was exact.
    assert others == []
