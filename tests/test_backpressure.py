"""Each backpressure policy, observed by a client through the real session and framing.

Lockstep streams make "the client stops reading" exact: the writer's first write blocks until
the client reads, so everything published meanwhile meets a full outbox.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from relay.core.model import Update
from relay.server.relay import Relay
from tests.test_session_timeouts import Client, connect, make_relay

TRADES = "sim:trades:BTC-USD"
TICKER = "sim:ticker:BTC-USD"
BOOK = "sim:book:BTC-USD"


def relay_with(policy: str, max_messages: int = 4) -> Relay:
    return make_relay(max_messages=max_messages, max_bytes=1 << 20, policy=policy)


async def blocked_client(relay: Relay, nursery: trio.Nursery, channel: str) -> Client:
    """Subscribed, welcome and ack read, and now not reading: the next write blocks."""
    client = await connect(relay, nursery, lockstep=True)
    await client.send({"action": "subscribe", "channel": channel})
    with trio.move_on_after(0.5):
        await client.read_forever()
    events = [m.get("event") for m in client.messages]
    assert events[:2] == ["welcome", "subscribed"]
    assert all("channel" in m and m.get("snapshot") for m in client.messages[2:])
    return client


async def read_all(client: Client) -> list[dict[str, Any]]:
    client.messages.clear()
    with trio.move_on_after(1):
        await client.read_forever()
    return client.messages


def data(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "channel" in m]


async def test_drop_sends_lagged_with_the_count_once_caught_up(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = relay_with("drop")
    client = await blocked_client(relay, nursery, TRADES)
    for n in range(1, 21):
        relay.hub.publish(Update(TRADES, {"n": n}, n, False), ts=n)
    messages = await read_all(client)
    got = data(messages)
    lagged = [m for m in messages if m.get("event") == "lagged"]
    assert len(lagged) == 1
    assert lagged[0]["data"]["channel"] == TRADES
    assert messages[-1] == lagged[0]  # after the data it caught up with
    # Every seq is either delivered or counted as dropped, and order is kept.
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(seqs)
    assert len(seqs) + lagged[0]["data"]["dropped"] == 20
    assert seqs[0] == 1 and lagged[0]["data"]["dropped"] > 0
    # Caught up: what comes next is delivered whole.
    relay.hub.publish(Update(TRADES, {"n": 21}, 21, False), ts=21)
    assert [m["seq"] for m in data(await read_all(client))] == [21]


async def test_coalesce_keeps_the_latest_state(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = relay_with("coalesce")
    client = await blocked_client(relay, nursery, TICKER)
    for n in range(1, 21):
        relay.hub.publish(Update(TICKER, {"last": str(n)}, n, True), ts=n)
    got = data(await read_all(client))
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(seqs) and len(seqs) < 20
    assert got[-1]["seq"] == 20 and got[-1]["data"] == {"last": "20"}
    assert all(m.get("snapshot") for m in got)


async def test_coalesce_on_a_book_sends_one_fresh_snapshot(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = relay_with("coalesce")
    book: dict[str, Any] = {"symbol": "BTC-USD", "bids": [], "asks": [], "ts": 0}
    relay.upstreams["sim"].channel_state = lambda channel: book  # type: ignore[method-assign]
    client = await blocked_client(relay, nursery, BOOK)
    # The subscribe above already delivered a snapshot of the (empty) book.
    for n in range(1, 21):
        book = {"symbol": "BTC-USD", "bids": [[str(n), "1"]], "asks": [], "ts": n}
        delta = {"symbol": "BTC-USD", "bids": [[str(n), "1"]], "asks": [], "ts": n}
        relay.hub.publish(Update(BOOK, delta, n, False), ts=n)
    got = data(await read_all(client))
    snapshots = [m for m in got if m.get("snapshot")]
    assert len(snapshots) == 1 and got[-1] is snapshots[0]
    assert snapshots[0]["seq"] == 20 and snapshots[0]["data"]["bids"] == [["20", "1"]]
    deltas = [m["seq"] for m in got if not m.get("snapshot")]
    assert deltas == list(range(1, len(deltas) + 1))  # the deltas before it, contiguous


async def test_coalesce_on_a_chain_of_states_sends_one_fresh_snapshot(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Blocks: every message is the channel's latest state, but each extends the last, so a
    slow client must get a snapshot (start over from it), not a block that skips others."""
    relay = relay_with("coalesce")
    client = await blocked_client(relay, nursery, TICKER)
    for n in range(1, 21):
        relay.hub.publish(Update(TICKER, {"number": n}, n, False), ts=n)
    got = data(await read_all(client))
    assert got[-1] == {
        "channel": TICKER,
        "seq": 20,
        "ts": 20,
        "snapshot": True,
        "data": {"number": 20},
    }
    plain = [m["seq"] for m in got if not m.get("snapshot")]
    assert plain == list(range(1, len(plain) + 1))


async def test_disconnect_closes_a_slow_consumer_with_4008(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = relay_with("disconnect")
    client = await blocked_client(relay, nursery, TRADES)
    (session,) = relay.sessions
    relay.hub.publish(Update(TRADES, {"n": 1}, 1, False), ts=1)
    await trio.testing.wait_all_tasks_blocked()  # message 1 is being written, and blocks
    for n in range(2, 21):
        relay.hub.publish(Update(TRADES, {"n": n}, n, False), ts=n)
    assert session.closing is None  # offered at the next write round, not at each publish
    await trio.testing.wait_all_tasks_blocked()
    assert session.closing is not None and session.closing.code == 4008
    client.messages.clear()
    await client.read_forever()
    assert client.closed is not None and client.closed.code == 4008
    # The write in flight is finished, whole; nothing queued after it is sent; then the close.
    assert [m["seq"] for m in data(client.messages)] == [1]
    await trio.testing.wait_all_tasks_blocked()
    assert not relay.sessions and len(relay.hub.registry) == 0


async def test_a_slow_client_never_slows_the_others(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = relay_with("drop")
    slow = await blocked_client(relay, nursery, TRADES)
    fast = await connect(relay, nursery)
    await fast.send({"action": "subscribe", "channel": TRADES})
    nursery.start_soon(fast.read_forever)
    await trio.testing.wait_all_tasks_blocked()
    for n in range(1, 101):
        relay.hub.publish(Update(TRADES, {"n": n}, n, False), ts=n)
        await trio.testing.wait_all_tasks_blocked()
    assert [m["seq"] for m in data(fast.messages)] == list(range(1, 101))
    # The slow one's outbox stayed within its bound the whole time.
    (slow_session,) = [s for s in relay.sessions if s.outbox is not None and len(s.outbox) > 0]
    assert len(slow_session.outbox) <= 4
    assert slow.closed is None


@pytest.mark.parametrize("policy", ["drop", "coalesce", "disconnect"])
def test_policy_comes_from_the_first_matching_rule(policy: str) -> None:
    relay = make_relay(max_messages=4, max_bytes=1 << 20, policy=policy)
    assert relay.hub.channel(TRADES).policy.value == policy
