"""Smoke tests of the ganache fixture and the TCP proxy: what the Ethereum source's end-to-end
tests will rely on, checked against the real node."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.ethereum.ganache import (
    EMITTER_RUNTIME,
    EMITTER_TOPIC,
    HOST,
    Ganache,
    from_hex,
)
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


async def receive(ws: WebSocketConnection, within: float = 5.0) -> dict[str, Any]:
    with trio.fail_after(within):
        message: dict[str, Any] = orjson.loads(await ws.get_message())
        return message


async def subscribe(ws: WebSocketConnection, *params: Any) -> str:
    """``eth_subscribe``: answers the subscription id."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": list(params)}
    await ws.send_message(orjson.dumps(request).decode())
    reply = await receive(ws)
    assert reply["id"] == 1 and isinstance(reply.get("result"), str), reply
    subscription: str = reply["result"]
    return subscription


async def notification(ws: WebSocketConnection, subscription: str) -> Any:
    message = await receive(ws)
    assert message["method"] == "eth_subscription", message
    assert message["params"]["subscription"] == subscription, message
    return message["params"]["result"]


async def test_new_heads_announce_each_mined_block_and_nothing_else(ganache: Ganache) -> None:
    async with open_websocket_url(ganache.ws_url) as ws:
        subscription = await subscribe(ws, "newHeads")
        start = await ganache.block_number()
        mined = [await ganache.mine() for _ in range(3)]
        heads = [await notification(ws, subscription) for _ in range(3)]
        assert [from_hex(head["number"]) for head in heads] == [start + 1, start + 2, start + 3]
        assert [head["hash"] for head in heads] == [block["hash"] for block in mined]
        assert heads[1]["parentHash"] == heads[0]["hash"]
        assert heads[2]["parentHash"] == heads[1]["hash"]
        with trio.move_on_after(0.3):  # no block time: nothing is mined unless asked
            message = await ws.get_message()
            pytest.fail(f"unexpected message: {message!r}")


async def test_restart_on_the_same_database_keeps_the_chain(ganache: Ganache) -> None:
    await ganache.mine()
    await ganache.mine()
    before = await ganache.block("latest")
    assert before is not None and from_hex(before["number"]) == 2
    port = ganache.port
    async with open_websocket_url(ganache.ws_url) as ws:
        await subscribe(ws, "newHeads")
        await ganache.stop()
        with pytest.raises(ConnectionClosed):
            await receive(ws)
    await ganache.restart()
    assert ganache.port == port
    assert await ganache.block("latest") == before
    async with open_websocket_url(ganache.ws_url) as ws:
        subscription = await subscribe(ws, "newHeads")
        mined = await ganache.mine()
        head = await notification(ws, subscription)
        assert from_hex(head["number"]) == 3
        assert head["hash"] == mined["hash"]
        assert head["parentHash"] == before["hash"]


async def test_revert_then_mine_replaces_the_announced_block(ganache: Ganache) -> None:
    async with open_websocket_url(ganache.ws_url) as ws:
        subscription = await subscribe(ws, "newHeads")
        base = await ganache.block_number()
        snapshot = await ganache.snapshot()
        mined = [await ganache.mine(), await ganache.mine()]
        announced = [await notification(ws, subscription) for _ in mined]
        assert [head["hash"] for head in announced] == [block["hash"] for block in mined]
        assert await ganache.revert(snapshot)
        assert await ganache.block_number() == base
        timestamp = from_hex(mined[0]["timestamp"]) + 1000
        replacement = await ganache.mine(timestamp=timestamp)
        head = await notification(ws, subscription)
        assert from_hex(head["number"]) == base + 1
        assert from_hex(head["timestamp"]) == timestamp
        assert head["hash"] == replacement["hash"] != announced[0]["hash"]
        assert head["parentHash"] == announced[0]["parentHash"]


async def test_emitter_log_reaches_a_logs_subscription(ganache: Ganache) -> None:
    topic = await ganache.rpc("web3_sha3", ["0x" + b"Ping(bytes)".hex()])
    assert topic == EMITTER_TOPIC
    address = await ganache.deploy_emitter()
    assert address == address.lower() and len(address) == 42
    assert await ganache.rpc("eth_getCode", [address, "latest"]) == "0x" + EMITTER_RUNTIME.hex()
    async with open_websocket_url(ganache.ws_url) as ws:
        subscription = await subscribe(ws, "logs", {"address": address})
        for data in (b"\x00hello\xff", b"", bytes(range(256)) * 4):
            receipt = await ganache.emit(address, data)
            log = await notification(ws, subscription)
            assert log["address"] == address
            assert log["topics"] == [EMITTER_TOPIC]
            assert log["data"] == "0x" + data.hex()
            assert log["blockNumber"] == receipt["blockNumber"]
            assert log["blockHash"] == receipt["blockHash"]
            assert log["transactionHash"] == receipt["transactionHash"]
            assert log["removed"] is False
            assert [(entry["topics"], entry["data"]) for entry in receipt["logs"]] == [
                (log["topics"], log["data"])
            ]


async def test_pending_transactions_are_announced_with_eager_instamine(ganache: Ganache) -> None:
    """Eager instamine still announces each transaction's hash, just before its block."""
    address = await ganache.deploy_emitter()
    async with open_websocket_url(ganache.ws_url) as ws:
        pending = await subscribe(ws, "newPendingTransactions")
        heads = await subscribe(ws, "newHeads")
        receipt = await ganache.emit(address, b"pending")
        first, second = await receive(ws), await receive(ws)
        assert first["params"]["subscription"] == pending, first
        assert first["params"]["result"] == receipt["transactionHash"]
        assert second["params"]["subscription"] == heads, second
        assert second["params"]["result"]["number"] == receipt["blockNumber"]


async def test_proxy_cut_kills_the_subscription_and_restore_admits_new_ones(
    ganache: Ganache, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy(HOST, ganache.port)
    port = await nursery.start(proxy.run)
    url = f"ws://{HOST}:{port}"
    async with open_websocket_url(url) as ws:
        subscription = await subscribe(ws, "newHeads")
        mined = await ganache.mine()
        assert (await notification(ws, subscription))["hash"] == mined["hash"]
        assert proxy.connections == 1
        proxy.cut()
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.reason is not None and closed.value.reason.code == 1006
    await ganache.mine()  # while cut: the node lives on, nobody hears of it
    # While cut, a new connection is reset at once. (trio-websocket 0.12 would report that reset
    # only as a ConnectionTimeout after its connect_timeout: see it at the TCP level.)
    stream = await trio.open_tcp_stream(HOST, port)
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(2):
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        await stream.receive_some()
    await stream.aclose()
    assert proxy.refused == 1 and proxy.connections == 0
    proxy.restore()
    async with open_websocket_url(url) as ws:
        subscription = await subscribe(ws, "newHeads")
        mined = await ganache.mine()
        head = await notification(ws, subscription)
        assert from_hex(head["number"]) == 3 and head["hash"] == mined["hash"]
    assert proxy.accepted == 3
