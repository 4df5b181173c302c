"""Resuming over real sockets: a client that reconnects with the last seq it saw gets exactly
what it missed, or the snapshot and ``recovered: false`` when that cannot be done."""

from __future__ import annotations

from typing import Any

import trio
from trio_websocket import WebSocketConnection

from tests.e2e.conftest import Stack, client, receive, running_stack, send

TRADES = "sim:trades:BTC-USD"
BOOK = "sim:book:BTC-USD"


async def subscribed(ws: WebSocketConnection, channel: str, **extra: Any) -> dict[str, Any]:
    await send(ws, {"action": "subscribe", "channel": channel, "id": 1, **extra})
    ack = await receive(ws)
    assert ack["event"] == "subscribed" and ack["data"]["channel"] == channel, ack
    data: dict[str, Any] = ack["data"]
    return data


async def read_until(ws: WebSocketConnection, channel: str, seq: int) -> list[int]:
    """The seqs of ``channel`` received up to and including ``seq``."""
    seen: list[int] = []
    while not seen or seen[-1] < seq:
        message = await receive(ws)
        if message.get("channel") == channel:
            seen.append(message["seq"])
    return seen


async def test_a_client_that_reconnects_gets_exactly_what_it_missed(stack: Stack) -> None:
    async with client(stack.url) as bystander:
        await subscribed(bystander, TRADES)
        async with client(stack.url) as leaving:
            ack = await subscribed(leaving, TRADES)
            epoch = ack["epoch"]
            assert isinstance(epoch, str) and epoch
            first = await receive(leaving)
            last_seen = first["seq"]
        # Gone: the channel goes on (the bystander holds it) while this client is away.
        hub = stack.relay.hub
        await stack.wait_for(lambda: hub.channel(TRADES).seq >= last_seen + 5)
        async with client(stack.url) as back:
            ack = await subscribed(back, TRADES, since={"seq": last_seen, "epoch": epoch})
            assert ack["recovered"] is True
            now = ack["seq"]
            assert isinstance(now, int) and now >= last_seen + 5
            # Every message after the one it saw, in order, none twice, then live ones.
            seqs = await read_until(back, TRADES, now + 2)
            assert seqs == list(range(last_seen + 1, now + 3))


async def test_a_resume_that_cannot_be_exact_says_so_and_sends_the_snapshot(
    nursery: trio.Nursery,
) -> None:
    async with running_stack(nursery, history={"max_messages": 3}) as stack:
        async with client(stack.url) as ws:
            ack = await subscribed(ws, BOOK)
            epoch = ack["epoch"]
            snapshot = await receive(ws)
            assert snapshot["snapshot"] is True
            hub = stack.relay.hub
            start = hub.channel(BOOK).seq
            await stack.wait_for(lambda: hub.channel(BOOK).seq >= start + 6)
        async with client(stack.url) as back:
            # Too far back for a history of 3 messages.
            ack = await subscribed(back, BOOK, since={"seq": start, "epoch": epoch})
            assert ack["recovered"] is False
            snapshot = await receive(back)
            assert snapshot["snapshot"] is True and snapshot["seq"] == ack["seq"]
        async with client(stack.url) as other:
            # Another relay process's numbering: the seq means nothing here.
            ack = await subscribed(other, BOOK, since={"seq": start, "epoch": "not-" + epoch})
            assert ack["recovered"] is False
            assert (await receive(other))["snapshot"] is True
