"""The generic adapter for an exchange of another shape than the synthetic market (acme.toml),
played by the shared loopback fixture (tests/exchanges/fixture_server.py) from acme.json, behind
a real relay: acks correlated by request id, the relay's pings as the only sign of life, trades
in arrays, book levels as objects, and a book gap repaired by subscribing again (the exchange
has no REST snapshot, and sends a fresh one on every subscribe)."""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from relay.adapters.generic import GenericJsonAdapter, JsonSpec
from relay.config import parse_config
from relay.core.book import OrderBook
from relay.core.model import RepairKind
from relay.server.relay import Relay
from tests.e2e.conftest import HOST, client, receive, subscribe
from tests.exchanges.fixture_server import ExchangeFixture, FixtureConnection
from tests.exchanges.generic.specs import load_spec

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
DEPTH = "depth:btc_usdt"
TRADES = "trades:btc_usdt"
BOOK_CHANNEL = "acme:book:BTC-USDT"
TRADES_CHANNEL = "acme:trades:BTC-USDT"
T0 = 1700000000000


def acme_spec() -> JsonSpec:
    with (HERE / "acme.toml").open("rb") as f:
        return load_spec(tomllib.load(f)["sources"]["acme"]["json"])


def pairs(levels: list[dict[str, str]]) -> list[list[str]]:
    """Levels as the protocol writes them."""
    return [[level["px"], level["qty"]] for level in levels]


class Acme:
    """The exchange: one book and its sequence, served from the fixture file's script."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.sides: dict[str, dict[str, str]] = {
            side: {level["px"]: level["qty"] for level in script["book"][side]}
            for side in ("buy", "sell")
        }
        self.seq = 1
        self.ts = T0
        self.sent: list[dict[str, Any]] = []
        """Every book frame sent, in order."""
        self.fixture = ExchangeFixture(self.on_message)

    def levels(self, side: str) -> list[dict[str, str]]:
        prices = sorted(self.sides[side], key=Decimal, reverse=side == "buy")
        return [{"px": price, "qty": self.sides[side][price]} for price in prices]

    async def send(self, conn: FixtureConnection, frame: dict[str, Any]) -> None:
        if frame.get("ch") == DEPTH:
            self.sent.append(frame)
        await conn.send(json.dumps(frame))

    async def on_message(self, conn: FixtureConnection, text: str) -> None:
        request = json.loads(text)
        kind, rid = request["type"], request["rid"]
        if kind == "ping":
            await self.send(conn, {"type": "pong", "rid": rid})
        elif request.get("channel") not in (DEPTH, TRADES):
            await self.send(conn, {"type": "error", "rid": rid, "message": "no such channel"})
        elif kind in ("sub", "unsub"):
            await self.send(conn, {"type": "ack", "rid": rid})
            if kind == "sub" and request["channel"] == DEPTH:
                data = {"buy": self.levels("buy"), "sell": self.levels("sell")}
                frame = {"ch": DEPTH, "action": "full", "seq": self.seq, "ts": self.ts}
                await self.send(conn, {**frame, "data": data})

    async def change(self, delta: dict[str, list[dict[str, str]]], *, lost: bool) -> None:
        """The book changes; unless the message is lost, subscribers are told."""
        for side in ("buy", "sell"):
            for level in delta[side]:
                if Decimal(level["qty"]) == 0:
                    self.sides[side].pop(level["px"], None)
                else:
                    self.sides[side][level["px"]] = level["qty"]
        self.seq += 1
        self.ts += 10
        conn = self.fixture.current
        assert conn is not None
        frame = {"ch": DEPTH, "action": "diff", "seq": self.seq, "ts": self.ts, "data": delta}
        if not lost:
            await self.send(conn, frame)


async def read_until(ws: Any, got: list[dict[str, Any]], predicate: Any) -> None:
    with trio.fail_after(5):
        while not predicate(got):
            got.append(await receive(ws))


def book_messages(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in got if m.get("channel") == BOOK_CHANNEL]


async def test_acme_through_a_relay_with_a_gap_repaired_by_subscribing_again(
    nursery: trio.Nursery,
) -> None:
    script = json.loads((HERE / "acme.json").read_text())
    acme = Acme(script)
    await nursery.start(acme.fixture.run)
    adapter = GenericJsonAdapter("acme", acme_spec(), ["BTC-USDT"], 0.5, None)
    assert adapter.repair(BOOK_CHANNEL) is RepairKind.RESUBSCRIBE
    source = {
        "kind": "sim",  # the kind is only a placeholder: the adapter is given
        "url": acme.fixture.ws_url,
        "heartbeat_interval": 0.5,
        "linger": 0.3,
        "backoff_initial": 0.05,
        "backoff_cap": 0.2,
    }
    config = {
        "server": {"host": HOST, "port": 0},
        "auth": {"required": False},
        "sources": {"acme": source},
    }
    relay = Relay(parse_config(config), adapters={"acme": adapter})
    port = await nursery.start(relay.serve)
    plan = relay.upstreams["acme"].plan
    async with client(f"ws://{HOST}:{port}/ws") as ws, httpx.AsyncClient(timeout=5.0) as http:
        got = await subscribe(ws, TRADES_CHANNEL, BOOK_CHANNEL)
        await read_until(ws, got, lambda got: book_messages(got))
        with trio.fail_after(5):
            while plan.unanswered or len(plan.active) < 2:  # noqa: ASYNC110 - the relay's task
                await trio.sleep(0.01)
        conn = acme.fixture.current
        assert conn is not None

        trades = {"ch": TRADES, "seq": 1, "ts": T0 + 5, "data": script["trades"]}
        await conn.send(json.dumps(trades))
        await read_until(
            ws, got, lambda got: sum(m.get("channel") == TRADES_CHANNEL for m in got) == 2
        )
        assert [m["data"] for m in got if m.get("channel") == TRADES_CHANNEL] == [
            {
                "symbol": "BTC-USDT",
                "price": "64211.0",
                "size": "0.100",
                "side": "buy",
                "trade_id": "881201",
                "ts": T0 + 5,
            },
            {
                "symbol": "BTC-USDT",
                "price": "64210.5",
                "size": "0.025",
                "side": "sell",
                "trade_id": "881202",
                "ts": T0 + 5,
            },
        ]

        lost = script["lost"]
        for i, delta in enumerate(script["deltas"]):
            await acme.change(delta, lost=i == lost)
            if i == lost + 1:
                # That delta showed the gap: the relay unsubscribes and subscribes again, and
                # the exchange's fresh snapshot resynchronizes the book.
                await read_until(ws, got, lambda got: any(m.get("event") == "status" for m in got))
        # A snapshot, the deltas before the lost one, a snapshot, the deltas after the one that
        # showed the gap.
        count = 1 + lost + 1 + (len(script["deltas"]) - lost - 2)
        await read_until(ws, got, lambda got: len(book_messages(got)) == count)

        # Exactly what the exchange sent, normalized, but the delta that showed the gap (in
        # the snapshot after it) and with the relay's own seq.
        expected = []
        for frame in acme.sent:
            if frame["seq"] == acme.sent[0]["seq"] + lost + 2 and frame["action"] == "diff":
                continue
            data = {
                "symbol": "BTC-USDT",
                "bids": pairs(frame["data"]["buy"]),
                "asks": pairs(frame["data"]["sell"]),
                "ts": frame["ts"],
            }
            expected.append((frame["action"] == "full", data))
        book = book_messages(got)
        assert [(m.get("snapshot", False), m["data"]) for m in book] == expected
        assert [m["seq"] for m in book] == list(range(1, count + 1))
        statuses = [m["data"] for m in got if m.get("event") == "status"]
        assert statuses == [{"source": "acme", "state": "resynced"}]
        # It resubscribed the book alone, and each request was acknowledged by its id.
        requests = [json.loads(t) for t in conn.received]
        subscriptions = [(r["type"], r["channel"]) for r in requests if r["type"] != "ping"]
        assert sorted(subscriptions[:2]) == [("sub", DEPTH), ("sub", TRADES)]
        assert subscriptions[2:] == [("unsub", DEPTH), ("sub", DEPTH)]
        assert any(r["type"] == "ping" for r in requests)
        supervisor = relay.upstreams["acme"]
        assert supervisor.stats.gaps == 1 and supervisor.stats.resyncs == 1
        assert supervisor.stats.malformed == 0 and supervisor.stats.connects == 1

        # The client's book, and the relay's, are the exchange's.
        final = (pairs(acme.levels("buy")), pairs(acme.levels("sell")))
        view = OrderBook()
        for message in book:
            levels = (message["data"]["bids"], message["data"]["asks"])
            if message.get("snapshot"):
                view.apply_snapshot(*levels)
            else:
                view.apply_delta(*levels)
        assert view.levels() == final
        held = (await http.get(f"http://{HOST}:{port}/v1/snapshot/{BOOK_CHANNEL}")).json()
        assert (held["data"]["bids"], held["data"]["asks"]) == final
        assert held["seq"] == count
