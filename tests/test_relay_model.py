"""A model of the whole relay: hypothesis writes a scenario of clients connecting, subscribing,
unsubscribing, resuming, reading slowly and vanishing, an upstream publishing, dropping,
stalling and skipping, the application publishing, and time passing; each runs on trio's
MockClock against the real shell (front door, sessions, hub, supervisor) over in-memory
streams and a fake upstream.

Checked after every step: no session outlives its client's connection and at most one upstream
connection is open; the upstream's wanted set is the union of what live sessions hold, and every
outbox is within its bounds; in every client's view of every channel, no message
comes twice and no jump in ``seq`` goes unannounced (by ``lagged``, a snapshot, or a
``subscribed`` that starts the channel afresh). At the end, once every client is gone, no task
the relay started for them or for the upstream is left.
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import orjson
import trio
import trio.testing
import wsproto
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from relay.adapters import DEFAULT_SYMBOLS
from relay.adapters.sim import SimAdapter
from relay.config import parse_config
from relay.server.relay import Relay
from relay.server.transports import HttpTransport
from tests.fake_upstream import FakeConnection, FakeTransport

TRADES = "sim:trades:BTC-USD"
TICKER = "sim:ticker:BTC-USD"
EVENTS = "app:events"
CHANNELS = (TRADES, TICKER, EVENTS)
SLOTS = 2
OUTBOX = 6
CONFIG: dict[str, Any] = {
    "server": {
        "heartbeat": 15.0,
        "heartbeat_timeout": 10.0,
        "idle_timeout": 60.0,
        "send_timeout": 10.0,
        "close_timeout": 2.0,
    },
    "auth": {"required": False},
    "tiers": {"default": {"rate_limit": 1000.0, "rate_burst": 1000}},
    "sources": {
        "sim": {
            "kind": "sim",
            "url": "ws://upstream.invalid/ws",
            "linger": 2.0,
            "heartbeat_interval": 1.0,
            "backoff_initial": 0.1,
            "backoff_cap": 1.0,
        }
    },
    "outbox": {"max_messages": OUTBOX, "max_bytes": 1 << 20},
    "backpressure": [{"pattern": "*:ticker:*", "policy": "coalesce"}],
    "history": {"max_messages": 8, "max_age": 30.0},
    "published": {"app": {}},
}


def trade(seq: int) -> str:
    body = {"time": 1_000_000, "taker": "B", "px": "1", "qty": "1", "id": seq}
    return orjson.dumps(
        {"topic": "trade.BTC-USD", "seq": seq, "kind": "update", "body": body}
    ).decode()


def ticker(seq: int) -> str:
    side = {"px": str(seq), "qty": "1"}
    body = {"time": 1_000_000, "bid": side, "ask": side, "last": str(seq)}
    return orjson.dumps(
        {"topic": "ticker.BTC-USD", "seq": seq, "kind": "snapshot", "body": body}
    ).decode()


@attrs.define(eq=False)
class ChannelView:
    """What one client has seen of one channel."""

    last: int | None = None
    lagged: int = 0
    """Drops the relay announced that no jump has used up yet."""
    seen: set[int] = attrs.Factory(set)


@attrs.define(eq=False)
class ModelClient:
    """A client over a lockstep stream: when it stops reading, the relay's writes block."""

    stream: trio.abc.Stream
    ws: wsproto.WSConnection = attrs.Factory(
        lambda: wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    )
    reading: trio.Event = attrs.Factory(trio.Event)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    views: dict[str, ChannelView] = attrs.Factory(dict)
    held: set[str] = attrs.Factory(set)
    """Channels it asked for and did not leave (what it resubscribes to on a resume)."""
    epoch: str | None = None
    closed: bool = False
    problems: list[str] = attrs.Factory(list)

    def on_message(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        data = message.get("data") or {}
        if event == "subscribed":
            self.epoch = data["epoch"]
            view = self.views.setdefault(data["channel"], ChannelView())
            if data.get("recovered") is not True:
                # A fresh start at the channel's seq: a snapshot at it, or data after it.
                view.last, view.lagged = data["seq"], 0
        elif event == "unsubscribed":
            self.views.pop(data["channel"], None)
        elif event == "lagged":
            self.views.setdefault(data["channel"], ChannelView()).lagged += data["dropped"]
        elif "channel" in message:
            self._on_data(message)

    def _on_data(self, message: dict[str, Any]) -> None:
        channel, seq = message["channel"], message["seq"]
        view = self.views.get(channel)
        if view is None or view.last is None:
            self.problems.append(f"data for {channel} at {seq} outside a subscription")
            return
        if seq in view.seen and not message.get("snapshot"):
            self.problems.append(f"{channel} seq {seq} twice")
        if message.get("snapshot"):
            if seq < view.last:
                self.problems.append(f"{channel}: a snapshot at {seq} behind {view.last}")
        elif seq <= view.last:
            self.problems.append(f"{channel} seq {seq} after {view.last}")
        elif seq > view.last + 1:
            missed = seq - view.last - 1
            if view.lagged < missed:
                self.problems.append(f"{channel}: unannounced gap {view.last} -> {seq}")
            view.lagged = max(0, view.lagged - missed)
        view.last = seq
        view.seen.add(seq)

    async def run(self) -> None:
        """Read (answering pings) while reading is on, until the connection ends."""
        with self.scope:
            while True:
                await self.reading.wait()
                try:
                    data = await self.stream.receive_some()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.closed = True
                    return
                # A pause that came while this read waited holds what it got unread: the
                # application has not seen it, and loses it if the client vanishes now.
                await self.reading.wait()
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self.on_message(orjson.loads(event.data))
                    elif isinstance(event, Ping):
                        await self.stream.send_all(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self.closed = True

    async def send(self, command: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            await self.stream.send_all(
                self.ws.send(TextMessage(data=orjson.dumps(command).decode()))
            )
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            wsproto.utilities.LocalProtocolError,
        ):
            self.closed = True


slots = st.integers(0, SLOTS - 1)
subscribe = st.tuples(st.just("subscribe"), slots, st.sampled_from(CHANNELS))
publish = st.tuples(st.just("publish"), st.integers(1, 12))
resume = st.tuples(st.just("resume"), slots)
steps = st.lists(
    # Weighted by repetition: subscribing (which connects first when the slot is empty),
    # publishing, pausing and resuming are what the promises are about.
    st.one_of(
        *[subscribe] * 3,
        *[publish] * 3,
        *[resume] * 3,
        st.tuples(st.just("pause"), slots),
        st.tuples(st.just("pause"), slots),
        st.tuples(st.just("read"), slots),
        st.tuples(st.just("unsubscribe"), slots, st.sampled_from(CHANNELS)),
        st.tuples(st.just("vanish"), slots),
        st.tuples(st.just("trades"), st.integers(1, 12)),
        st.tuples(st.just("tickers"), st.integers(1, 12)),
        st.tuples(st.just("skip"), st.integers(1, 3)),
        st.tuples(st.just("drop")),
        st.tuples(st.just("stall")),
        st.tuples(st.just("wait"), st.floats(0.0, 5.0)),
    ),
    min_size=8,
    max_size=40,
)


class Scenario:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.transport = FakeTransport(SimAdapter("sim", DEFAULT_SYMBOLS))
        self.relay = Relay(parse_config(CONFIG), transport=self.transport)
        self.clients: list[ModelClient | None] = [None] * SLOTS
        self.retired: list[ModelClient] = []
        self.gone: list[ModelClient | None] = [None] * SLOTS
        """The last client that vanished from each slot: what a later resume comes back as."""
        self.upstream_seq = {TRADES: 0, TICKER: 0}

    @property
    def upstream(self) -> FakeConnection | None:
        return self.transport.current

    async def connect(self, slot: int, resume_from: ModelClient | None = None) -> None:
        client_end, server_end = trio.testing.lockstep_stream_pair()
        self.nursery.start_soon(self.relay._handle_tcp, server_end)
        client = ModelClient(client_end)
        await client_end.send_all(client.ws.send(Request(host="relay", target="/ws")))
        while not any(isinstance(e, AcceptConnection) for e in client.ws.events()):
            client.ws.receive_data(await client_end.receive_some())
        client.reading.set()
        self.nursery.start_soon(client.run)
        self.clients[slot] = client
        if resume_from is not None:
            # Resubscribe where the old connection left each channel.
            for channel in sorted(resume_from.held):
                view = resume_from.views.get(channel)
                command: dict[str, Any] = {"action": "subscribe", "channel": channel}
                if view is not None and view.last is not None and resume_from.epoch:
                    command["since"] = {"seq": view.last, "epoch": resume_from.epoch}
                    # The new view continues the old one: duplicates across the two count.
                    client.views[channel] = view
                client.held.add(channel)
                await client.send(command)

    async def vanish(self, slot: int) -> ModelClient | None:
        client = self.clients[slot]
        if client is None:
            return None
        self.clients[slot] = None
        client.scope.cancel()
        await client.stream.aclose()
        self.retired.append(client)
        self.gone[slot] = client
        return client

    async def step(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        if kind == "subscribe" and self.clients[args[0]] is None:
            await self.connect(args[0])
        if kind in ("subscribe", "unsubscribe") and (client := self.clients[args[0]]):
            channel = args[1]
            (client.held.add if kind == "subscribe" else client.held.discard)(channel)
            await client.send({"action": kind, "channel": channel})
        if kind == "pause" and (client := self.clients[args[0]]):
            client.reading = trio.Event()
        elif kind == "read" and (client := self.clients[args[0]]):
            client.reading.set()
        elif kind == "vanish":
            await self.vanish(args[0])
        elif kind == "resume":
            # Now (a reconnect at once), or later if it vanished earlier: the relay went on
            # publishing meanwhile, and the history may or may not still hold all of it.
            old = await self.vanish(args[0]) or self.gone[args[0]]
            if old is not None:
                self.gone[args[0]] = None
                await self.connect(args[0], resume_from=old)
        elif kind in ("trades", "tickers", "skip") and (upstream := self.upstream):
            channel = TICKER if kind == "tickers" else TRADES
            if kind == "skip":
                self.upstream_seq[TRADES] += args[0]  # lost upstream, never seen by the relay
                return
            for _ in range(args[0]):
                if channel in upstream.subscribed:
                    self.upstream_seq[channel] += 1
                    n = self.upstream_seq[channel]
                    upstream.push(trade(n) if channel == TRADES else ticker(n))
        elif kind == "publish":
            for n in range(args[0]):
                self.relay.publish(EVENTS, {"n": n})
        elif kind == "drop" and (upstream := self.upstream):
            upstream.drop()
        elif kind == "stall" and (upstream := self.upstream):
            upstream.pong = False  # and no heartbeats: the watchdog must notice
        elif kind == "wait":
            await trio.sleep(args[0])
        if (upstream := self.upstream) and upstream.pong:
            upstream.heartbeat()

    def check(self) -> None:
        relay, hub = self.relay, self.relay.hub
        # No session outlives its client's connection, and no upstream connection outlives
        # the next one: at most one is open.
        assert len(relay.sessions) <= sum(c is not None for c in self.clients)
        assert sum(not c.closed for c in self.transport.connections) <= 1
        held = {c for s in relay.sessions for c in hub.registry.channels_of(s)}
        assert relay.upstreams["sim"].plan.wanted == {c for c in held if c.startswith("sim:")}
        assert hub.registry.wanted("sim") == relay.upstreams["sim"].plan.wanted
        for session in relay.sessions:
            # Data is held to max_messages by the policies; control events only to twice the
            # byte bound (past it the client is closed as not reading at all).
            assert session.outbox.queued_bytes <= 2 * CONFIG["outbox"]["max_bytes"]
        for client in [*self.retired, *(c for c in self.clients if c)]:
            assert client.problems == [], client.problems


async def scenario(plan: list[tuple[Any, ...]]) -> None:
    baseline = trio.lowlevel.current_statistics().tasks_living
    async with trio.open_nursery() as outer:
        async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
            model = Scenario(nursery)
            relay = model.relay
            await nursery.start(relay.upstreams["sim"].run, HttpTransport(http))
            nursery.start_soon(relay.run_timers)
            nursery.start_soon(relay.rounds.run)
            await trio.testing.wait_all_tasks_blocked()
            for step in plan:
                await model.step(step)
                await trio.testing.wait_all_tasks_blocked()
                model.check()
            # Everyone reads again and the feed goes on a little: what was held back arrives.
            for client in model.clients:
                if client is not None:
                    client.reading.set()
            await trio.sleep(1.0)
            model.check()
            for slot in range(SLOTS):
                await model.vanish(slot)
            # Each connection ends within the close timeout; then the relay holds nothing.
            await trio.sleep(CONFIG["server"]["close_timeout"] + 1.0)
            assert not relay.sessions
            assert not relay.hub.registry.wanted("sim")
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert trio.lowlevel.current_statistics().tasks_living == baseline


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_the_whole_relay_keeps_every_promise(plan: list[tuple[Any, ...]]) -> None:
    trio.run(scenario, plan, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_known_scenario_resumes_without_loss() -> None:
    """A fixed run through resume, a slow reader and an upstream drop (kept as a regression
    example: it is the path the property above takes most rarely)."""
    plan: list[tuple[Any, ...]] = [
        ("subscribe", 0, TRADES),
        ("subscribe", 0, EVENTS),
        ("wait", 0.5),
        ("trades", 5),
        ("publish", 3),
        ("resume", 0),
        ("trades", 3),
        ("pause", 0),
        ("trades", 12),
        ("publish", 12),
        ("read", 0),
        ("drop",),
        ("wait", 2.0),
        ("trades", 2),
        # Gone for a while, back with since: the history replays what it missed.
        ("vanish", 0),
        ("publish", 3),
        ("resume", 0),
        ("publish", 1),
    ]
    trio.run(scenario, plan, clock=trio.testing.MockClock(autojump_threshold=0))
