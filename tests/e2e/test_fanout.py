"""Step 1's promises, end to end: one upstream connection, in-order sequenced delivery,
snapshot first, clear errors, nothing left behind."""

from __future__ import annotations

import socket
from typing import Any

import orjson
import trio
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from tests.e2e.conftest import HOST, Stack, client, receive, send, subscribe

pytestmark = __import__("pytest").mark.e2e


async def test_two_hundred_clients_share_one_upstream_subscription(stack: Stack) -> None:
    channel = "sim:trades:BTC-USD"
    clients = 200
    subscribed = trio.Semaphore(0)
    release = trio.Event()
    received: list[int] = []

    async def one() -> None:
        async with client(stack.url) as ws:
            await subscribe(ws, channel)
            subscribed.release()
            message = await receive(ws)
            assert message["channel"] == channel
            received.append(message["seq"])
            await release.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one)
        for _ in range(clients):
            await subscribed.acquire()
        stats = await stack.stats()
        assert stats["connections_open"] == 1
        assert stats["connections_total"] == 1
        assert stats["subscribes"] == 1
        await stack.wait_for(lambda: len(received) == clients)
        release.set()
    await stack.wait_for(lambda: not stack.relay.sessions)
    stats = await stack.wait_for_stats(lambda s: s["unsubscribes"] == 1)
    assert stats["subscribes"] == 1
    assert stats["connections_total"] == 1


async def test_unsubscribe_waits_for_the_linger(stack: Stack) -> None:
    async with client(stack.url) as ws:
        await subscribe(ws, "sim:trades:ETH-USD")
        await stack.wait_for_stats(lambda s: s["subscribes"] == 1)
        await send(ws, {"action": "unsubscribe", "channel": "sim:trades:ETH-USD", "id": 2})
        # A client coming back within the linger finds the upstream still subscribed.
        async with client(stack.url) as again:
            await trio.sleep(0.1)
            await subscribe(again, "sim:trades:ETH-USD")
            await trio.sleep(0.4)
            assert (await stack.stats())["unsubscribes"] == 0
    await stack.wait_for_stats(lambda s: s["unsubscribes"] == 1)


async def test_every_message_in_order_with_snapshot_first(stack: Stack) -> None:
    channels = ["sim:trades:BTC-USD", "sim:ticker:BTC-USD", "sim:book:BTC-USD"]
    per_client: list[dict[str, list[dict[str, Any]]]] = []

    async def one(wanted: list[str]) -> None:
        got: dict[str, list[dict[str, Any]]] = {c: [] for c in wanted}
        per_client.append(got)
        async with client(stack.url) as ws:
            for message in await subscribe(ws, *wanted):
                got[message["channel"]].append(message)
            while min(len(v) for v in got.values()) < 15:
                message = await receive(ws)
                assert "event" not in message, message
                assert message["channel"] in wanted
                got[message["channel"]].append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, channels)
        await trio.sleep(0.3)  # a late joiner gets its snapshot from the relay's state
        nursery.start_soon(one, channels)
        nursery.start_soon(one, channels[:1])

    for got in per_client:
        for channel, messages in got.items():
            seqs = [m["seq"] for m in messages]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (channel, seqs)
            if channel == "sim:trades:BTC-USD":
                assert not any(m.get("snapshot") for m in messages)
            else:
                assert messages[0].get("snapshot") is True, (channel, messages[0])
            if channel == "sim:book:BTC-USD":
                assert not any(m.get("snapshot") for m in messages[1:])
                assert messages[0]["data"]["bids"] and messages[0]["data"]["asks"]
    trade = per_client[0]["sim:trades:BTC-USD"][0]["data"]
    assert set(trade) == {"symbol", "price", "size", "side", "trade_id", "ts"}
    assert trade["side"] in ("buy", "sell") and isinstance(trade["price"], str)


async def test_bad_input_gets_errors_and_loses_nothing(stack: Stack) -> None:
    async with client(stack.url) as bystander, client(stack.url) as ws:
        await subscribe(bystander, "sim:trades:SOL-USD")
        await subscribe(ws, "sim:trades:SOL-USD")
        cases: list[tuple[str | bytes, str]] = [
            ("{nope", "bad_json"),
            ('{"action":"fly","id":5}', "unknown_action"),
            ('{"action":"subscribe","channel":"sim:trades:DOGE-USD","id":6}', "unknown_channel"),
            ('{"action":"subscribe","channel":42,"id":7}', "bad_request"),
            ('{"action":"subscribe","channels":"sim:trades","id":8}', "bad_request"),
            ("[]", "bad_request"),
        ]
        for text, code in cases:
            await ws.send_message(text)
            while (reply := await receive(ws)).get("event") != "error":
                assert reply["channel"] == "sim:trades:SOL-USD"
            assert reply["data"]["code"] == code, (text, reply)
        # Still subscribed, still usable.
        await send(ws, {"action": "ping", "id": 99})
        while (reply := await receive(ws)).get("event") != "pong":
            assert reply["channel"] == "sim:trades:SOL-USD"
        assert reply == {"event": "pong", "id": 99}
        data = await receive(ws)
        assert data["channel"] == "sim:trades:SOL-USD"
        # The bystander saw data only.
        for _ in range(3):
            assert "event" not in await receive(bystander)


async def test_websockets_library_client(stack: Stack) -> None:
    """A client built on the `websockets` library (sync API, in a worker thread)."""
    from websockets.sync.client import connect

    def run() -> list[dict[str, Any]]:
        with connect(stack.url) as ws:
            out = [orjson.loads(ws.recv(timeout=5))]
            ws.send('{"action":"subscribe","channel":"sim:ticker:ETH-USD","id":"w"}')
            out += [orjson.loads(ws.recv(timeout=5)) for _ in range(3)]
            return out

    welcome, ack, first, second = await trio.to_thread.run_sync(run)
    assert welcome["event"] == "welcome" and welcome["data"]["protocol"] == 1
    assert ack["event"] == "subscribed" and ack["id"] == "w"
    assert ack["data"]["channel"] == "sim:ticker:ETH-USD"
    # The ack names the last seq published: the snapshot's, or the one before the first message.
    assert ack["data"]["seq"] in (first["seq"], first["seq"] - 1)
    assert first["snapshot"] is True
    assert second["seq"] == first["seq"] + 1


async def test_tcp_reset_leaves_nothing_behind(stack: Stack) -> None:
    relay = stack.relay
    sock = trio.socket.socket()
    await sock.connect((HOST, stack.relay_port))
    stream = trio.SocketStream(sock)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=HOST, target="/ws")))
    events: list[Any] = []
    with trio.fail_after(5):
        while not any(isinstance(e, AcceptConnection) for e in events):
            ws.receive_data(await stream.receive_some())
            events += list(ws.events())
    command = '{"action":"subscribe","channels":["sim:trades:BTC-USD","sim:book:ETH-USD"]}'
    await stream.send_all(ws.send(TextMessage(data=command)))
    await stack.wait_for(lambda: len(relay.hub.registry) == 2)
    await stack.wait_for_stats(lambda s: s["subscribes"] == 2)  # the upstream holds them too
    (session,) = relay.sessions
    # RST instead of FIN: the abrupt way a client vanishes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    await stack.wait_for(lambda: not relay.sessions)
    assert len(relay.hub.registry) == 0
    assert list(relay.hub.registry.sessions()) == []
    assert relay.hub.registry.wanted("sim") == frozenset()
    assert not session.outbox.pending or session.closing is not None
    await stack.wait_for_stats(lambda s: s["unsubscribes"] == 2)
