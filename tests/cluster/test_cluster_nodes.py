"""Cluster mode end to end: relay nodes in this process, one real redis-server, one synthetic
market, real WebSocket clients over loopback."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
import tomli_w
import trio
from trio_websocket import (
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from relay.config import parse_config
from relay.server.relay import Relay
from relay.sim.server import SimServer
from tests.e2e.conftest import (
    HOST,
    client,
    read_stderr_until,
    receive,
    relay_command,
    relay_config,
    send,
)
from tests.redis_server import RedisServer, free_port


def children(pid: int) -> list[int]:
    """A process's children, whichever of its threads started them (Trio starts processes
    from a thread of its own)."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def tcp_open(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except OSError:
        return False
    return True


TRADES = "sim:trades:BTC-USD"
BOOK = "sim:book:BTC-USD"

FAST_LEASES = {
    "lease_ttl": 1.0,
    "lease_renew": 0.25,
    "lease_retry": 0.25,
    "request_timeout": 0.2,
    "join_timeout": 3.0,
}


@attrs.define
class Cluster:
    sim: SimServer
    nodes: list[tuple[Relay, int]]
    http: httpx.AsyncClient

    def url(self, node: int) -> str:
        return f"ws://{HOST}:{self.nodes[node][1]}/ws"

    async def readyz(self, node: int) -> tuple[int, dict[str, Any]]:
        response = await self.http.get(f"http://{HOST}:{self.nodes[node][1]}/readyz")
        body: dict[str, Any] = response.json()
        return response.status_code, body

    def holders(self) -> list[int]:
        return [
            i for i, (relay, _) in enumerate(self.nodes) if relay.cluster and relay.cluster.holding
        ]


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - effects of other tasks and processes
            await trio.sleep(0.02)


@asynccontextmanager
async def running_cluster(
    nursery: trio.Nursery, redis: RedisServer, nodes: int = 3, **overrides: Any
) -> AsyncIterator[Cluster]:
    sim = SimServer(rate=50.0)
    sim_port = await nursery.start(sim.serve, HOST, 0)
    cluster = {"redis_url": redis.url, **FAST_LEASES, **overrides.pop("cluster", {})}
    running = []
    for _ in range(nodes):
        relay = Relay(parse_config(relay_config(sim_port, cluster=cluster, **overrides)))
        running.append((relay, await nursery.start(relay.serve)))
    async with httpx.AsyncClient(timeout=5.0) as http:
        result = Cluster(sim, running, http)
        await wait_until(lambda: all(relay.ready for relay, _ in running))
        await wait_until(lambda: len(result.holders()) == 1)
        yield result


async def subscribe(ws: WebSocketConnection, *channels: str, **extra: Any) -> list[dict[str, Any]]:
    await send(ws, {"action": "subscribe", "channels": list(channels), "id": 7, **extra})
    acks = []
    for _ in channels:
        ack = await receive(ws)
        assert ack["event"] == "subscribed", ack
        acks.append(ack["data"])
    return acks


async def raw_until(ws: WebSocketConnection, channel: str, seq: int) -> dict[int, str]:
    """Each message of ``channel`` up to ``seq``, as the exact text received, by seq."""
    return (await raws_until(ws, {channel: seq}))[channel]


async def raws_until(ws: WebSocketConnection, targets: dict[str, int]) -> dict[str, dict[int, str]]:
    """Per channel, each message up to its target seq, as the exact text, by seq."""
    seen: dict[str, dict[int, str]] = {channel: {} for channel in targets}
    left = set(targets)
    with trio.fail_after(10):
        while left:
            text = await ws.get_message()
            message = orjson.loads(text)
            channel = message.get("channel")
            if channel in seen and "seq" in message:
                seen[channel][message["seq"]] = text
                if message["seq"] >= targets[channel]:
                    left.discard(channel)
    return seen


async def test_three_nodes_share_one_upstream_connection_and_send_identical_envelopes(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running_cluster(nursery, redis_server) as cluster:
        assert len(cluster.holders()) == 1
        received: dict[tuple[int, str], dict[int, str]] = {}

        async def read(node: int) -> None:
            async with client(cluster.url(node)) as ws:
                await subscribe(ws, TRADES, BOOK)
                # Every reader reads up to the same seq, to compare what they all received.
                for channel, view in (await raws_until(ws, {TRADES: 60, BOOK: 60})).items():
                    received[node, channel] = view

        async with trio.open_nursery() as readers:
            for node in (0, 1, 2, 0, 1, 2):
                readers.start_soon(read, node)
        # However the clients spread, the market served one connection.
        stats = cluster.sim.stats
        assert (stats.connections_total, cluster.sim.connections_open) == (1, 1)
        for channel in (TRADES, BOOK):
            views = [received[node, channel] for node in (0, 1, 2)]
            common = set.intersection(*(set(view) for view in views))
            assert len(common) >= 10
            for seq in common:
                # Same seq, same bytes, on every node.
                assert views[0][seq] == views[1][seq] == views[2][seq]


async def test_a_client_resumes_on_another_node(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running_cluster(nursery, redis_server, nodes=2) as cluster:
        async with client(cluster.url(0)) as ws:
            (ack,) = await subscribe(ws, TRADES)
            epoch = ack["epoch"]
            seen = await raw_until(ws, TRADES, ack["seq"] + 3)
            last = max(seen)
        await trio.sleep(0.3)
        async with client(cluster.url(1)) as ws:
            (ack,) = await subscribe(ws, TRADES, since={"seq": last, "epoch": epoch})
            assert ack["recovered"] is True
            assert ack["epoch"] == epoch
            assert ack["seq"] > last
            replay = await raw_until(ws, TRADES, ack["seq"] + 3)
            assert sorted(replay) == list(range(last + 1, max(replay) + 1))


async def test_a_subscribe_after_the_first_is_answered_from_the_nodes_own_state(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running_cluster(nursery, redis_server, nodes=2) as cluster:
        relay = cluster.nodes[1][0]
        assert relay.cluster is not None
        async with client(cluster.url(1)) as first, client(cluster.url(1)) as second:
            await subscribe(first, BOOK)
            assert (await receive(first))["snapshot"] is True
            await raw_until(first, BOOK, 0)
            joins = relay.cluster.joins_answered
            (ack,) = await subscribe(second, BOOK)
            snapshot = await receive(second)
            assert snapshot["snapshot"] is True and snapshot["seq"] == ack["seq"]
            # No round trip to Redis for it.
            assert relay.cluster.joins_answered == joins
            following = await receive(second)
            assert following["seq"] == ack["seq"] + 1


async def test_redis_stopped_and_restarted_nodes_keep_their_clients_and_streaming_resumes(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with (
        running_cluster(nursery, redis_server, nodes=2) as cluster,
        client(cluster.url(0)) as a,
        client(cluster.url(1)) as b,
    ):
        for ws in (a, b):
            await subscribe(ws, TRADES)
            await raw_until(ws, TRADES, 0)
        redis_server.stop()
        with trio.fail_after(10):
            while (await cluster.readyz(1))[0] != 503:  # noqa: ASYNC110 - another process's state
                await trio.sleep(0.05)
        _, body = await cluster.readyz(1)
        assert "Redis unreachable" in body["cluster"]["redis"]
        await trio.sleep(1.5)
        redis_server.start()
        with trio.fail_after(15):
            while (await cluster.readyz(0))[0] != 200 or (await cluster.readyz(1))[0] != 200:  # noqa: ASYNC110 - another process's state
                await trio.sleep(0.05)
        # Both clients are still connected, and messages flow again with rising seqs.
        for ws in (a, b):
            seqs = []
            with trio.fail_after(10):
                while len(seqs) < 5:
                    message = orjson.loads(await ws.get_message())
                    if message.get("channel") == TRADES:
                        seqs.append(message["seq"])
            assert seqs == sorted(seqs)


async def test_the_holder_killed_another_node_takes_the_source_with_no_renumbering(
    nursery: trio.Nursery, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Three `relay serve` processes; the one holding the source dies by SIGKILL while
    clients of the other two read."""
    sim = SimServer(rate=50.0)
    sim_port = await nursery.start(sim.serve, HOST, 0)
    config = relay_config(sim_port, cluster={"redis_url": redis_server.url, **FAST_LEASES})
    path = tmp_path / "relay.toml"
    path.write_text(tomli_w.dumps(config))
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=5.0) as http:
        nodes: list[tuple[trio.Process, int]] = []
        for _ in range(3):
            process = await stack.enter_async_context(relay_command("serve", "--config", str(path)))
            output = await read_stderr_until(process, b"/ws")
            port = int(re.findall(r"ws://127\.0\.0\.1:(\d+)/ws", output)[0])
            nodes.append((process, port))

        async def readyz(port: int) -> dict[str, Any]:
            body: dict[str, Any] = (await http.get(f"http://{HOST}:{port}/readyz")).json()
            return body

        dead: set[int] = set()

        async def holder() -> int | None:
            for index, (_, port) in enumerate(nodes):
                if index not in dead and (await readyz(port))["cluster"]["holding"] == ["sim"]:
                    return index
            return None

        with trio.fail_after(10):
            while await holder() is None:  # noqa: ASYNC110 - another process's state
                await trio.sleep(0.05)
        held_by = await holder()
        assert held_by is not None
        others = [port for index, (_, port) in enumerate(nodes) if index != held_by]
        async with (
            client(f"ws://{HOST}:{others[0]}/ws") as a,
            client(f"ws://{HOST}:{others[1]}/ws") as b,
        ):
            for ws in (a, b):
                await subscribe(ws, TRADES)
            async with client(f"ws://{HOST}:{others[0]}/ws") as leaving:
                (ack,) = await subscribe(leaving, TRADES)
                last = max(await raw_until(leaving, TRADES, ack["seq"] + 2))
            before = {id(ws): max(await raw_until(ws, TRADES, last + 2)) for ws in (a, b)}
            nodes[held_by][0].kill()
            killed = trio.current_time()
            dead.add(held_by)
            with trio.fail_after(10):
                while (taken := await holder()) is None:  # noqa: ASYNC110 - another process's state
                    await trio.sleep(0.02)
            # Within the lease time (plus one retry and this poll's own delay).
            assert trio.current_time() - killed < FAST_LEASES["lease_ttl"] + 1.0
            assert taken != held_by
            with trio.fail_after(5):
                while sim.connections_open != 1:  # noqa: ASYNC110 - another process's state
                    await trio.sleep(0.02)
            for ws in (a, b):
                seqs = sorted(await raw_until(ws, TRADES, before[id(ws)] + 40))
                # Numbering goes on: every seq once, none skipped, none restarted.
                assert seqs == list(range(before[id(ws)] + 1, seqs[-1] + 1))
            assert sim.connections_open == 1
            async with client(f"ws://{HOST}:{others[1]}/ws") as back:
                (ack,) = await subscribe(back, TRADES, since={"seq": last, "epoch": ack["epoch"]})
                assert ack["recovered"] is True
                replay = sorted(await raw_until(back, TRADES, ack["seq"]))
                assert replay == list(range(last + 1, ack["seq"] + 1))


async def test_workers_share_one_port_as_nodes_of_one_cluster(
    nursery: trio.Nursery, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim = SimServer(rate=50.0)
    sim_port = await nursery.start(sim.serve, HOST, 0)
    port = free_port()
    config = relay_config(
        sim_port,
        server={"host": HOST, "port": port},
        cluster={"redis_url": redis_server.url, **FAST_LEASES},
    )
    path = tmp_path / "relay.toml"
    path.write_text(tomli_w.dumps(config))
    async with relay_command("serve", "--config", str(path), "--workers", "2") as supervisor:
        seen: set[str] = set()
        with trio.fail_after(20):
            while len(seen) < 2:
                try:
                    # A new connection each time, so the kernel may hand it to either worker.
                    async with httpx.AsyncClient(timeout=2.0) as http:
                        response = await http.get(f"http://{HOST}:{port}/readyz")
                except httpx.TransportError:
                    await trio.sleep(0.1)
                    continue
                if response.status_code == 200:
                    seen.add(response.json()["cluster"]["node"])
        async with client(f"ws://{HOST}:{port}/ws") as ws:
            (ack,) = await subscribe(ws, TRADES)
            seqs = sorted(await raw_until(ws, TRADES, ack["seq"] + 5))
            assert seqs[-1] - seqs[0] == len(seqs) - 1
        # Two workers, one upstream connection.
        assert sim.stats.connections_total == 1
        # The supervisor killed outright (it passes nothing on): its workers stop by
        # themselves, the port and the upstream connection with them.
        workers = children(supervisor.pid)
        assert len(workers) == 2
        supervisor.kill()
        with trio.fail_after(10):
            while any(map(running, workers)) or tcp_open(port) or sim.connections_open:  # noqa: ASYNC110 - other processes
                await trio.sleep(0.05)


PUBLISHING = {
    "tiers": {"default": {"max_connections": 1000, "publish": ["app:*"]}},
    "published": {"app": {"state": ["app:status:*"]}},
}


async def test_publishes_from_any_node_share_one_numbering_on_every_node(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running_cluster(nursery, redis_server, **PUBLISHING) as cluster:
        events, status = "app:alerts", "app:status:disk"
        async with client(cluster.url(2)) as far, client(cluster.url(0)) as near:
            for ws in (far, near):
                assert [a["seq"] for a in await subscribe(ws, events, status)] == [0, 0]
            for n in range(6):
                # Alternate nodes: Redis numbers the messages, in one order for all.
                base = f"http://{HOST}:{cluster.nodes[n % 2][1]}"
                body = [{"channel": events, "data": {"n": n}}]
                response = await cluster.http.post(f"{base}/v1/publish", json=body)
                assert response.json() == {"published": [{"channel": events, "seq": n + 1}]}
            embedded = cluster.nodes[1][0]
            assert await embedded.publish_message(status, {"used": "91%"}) == 1
            views = [await raws_until(ws, {events: 6, status: 1}) for ws in (far, near)]
        for view in views:
            assert sorted(view[events]) == [1, 2, 3, 4, 5, 6]
            assert [orjson.loads(t)["data"]["n"] for _, t in sorted(view[events].items())] == [
                0,
                1,
                2,
                3,
                4,
                5,
            ]
            assert orjson.loads(view[status][1]) == {
                "channel": status,
                "seq": 1,
                "ts": orjson.loads(view[status][1])["ts"],
                "snapshot": True,
                "data": {"used": "91%"},
            }
        assert views[0] == views[1]
        # A state channel's message is its state, for a later subscriber on any node.
        async with client(cluster.url(1)) as late:
            (ack,) = await subscribe(late, status)
            assert ack["seq"] == 1
            assert (await receive(late))["data"] == {"used": "91%"}


async def test_a_publish_redis_cannot_take_is_refused_with_503(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running_cluster(nursery, redis_server, nodes=1, **PUBLISHING) as cluster:
        base = f"http://{HOST}:{cluster.nodes[0][1]}"
        redis_server.stop()
        with trio.fail_after(10):
            while (await cluster.readyz(0))[0] != 503:  # noqa: ASYNC110 - another process
                await trio.sleep(0.05)
        body = [{"channel": "app:alerts", "data": {}}]
        response = await cluster.http.post(f"{base}/v1/publish", json=body)
        assert response.status_code == 503
        error = response.json()
        assert error["error"] == "unavailable"
        assert error["message"].startswith("Redis unreachable")
        assert error["message"].endswith("published 0 of 1")


async def test_a_keys_connection_limit_holds_across_the_cluster(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    tiers = {"tiers": {"default": {"max_connections": 2}}}
    async with running_cluster(nursery, redis_server, nodes=2, **tiers) as cluster:
        async with client(cluster.url(0)), client(cluster.url(1)) as second:
            # Two open, one on each node: a third is refused on either.
            for node in (0, 1):
                with pytest.raises(HandshakeError) as refused:
                    async with client(cluster.url(node)):
                        pass
                assert isinstance(refused.value, ConnectionRejected)
                assert refused.value.status_code == 429
                assert b"across the cluster" in (refused.value.body or b"")
            await second.aclose()
            # Its place is free again, on the other node too.
            with trio.fail_after(5):
                while True:
                    try:
                        async with client(cluster.url(0)):
                            break
                    except ConnectionRejected:
                        await trio.sleep(0.05)
        relay = cluster.nodes[0][0]
        assert relay.cluster is not None
        await wait_until(lambda: not relay.cluster.connections.open)


async def test_a_node_whose_redis_is_gone_still_stops_promptly(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    sim = SimServer(rate=50.0)
    sim_port = await nursery.start(sim.serve, HOST, 0)
    config = relay_config(sim_port, cluster={"redis_url": redis_server.url, **FAST_LEASES})
    relay = Relay(parse_config(config))
    with trio.CancelScope() as serving:
        async with trio.open_nursery() as inner:
            await inner.start(relay.serve)
            await wait_until(lambda: relay.cluster is not None and bool(relay.cluster.holding))
            redis_server.kill()
            stopped_at = trio.current_time()
            serving.cancel()
    # Within the stop's bound (3 requests' time), not hanging on a Redis that is gone.
    assert trio.current_time() - stopped_at < 3 * FAST_LEASES["request_timeout"] + 1.0


async def test_any_node_answers_a_snapshot_from_redis(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running_cluster(nursery, redis_server, nodes=2) as cluster:
        async with client(cluster.url(0)) as ws:
            await subscribe(ws, BOOK)
            await raw_until(ws, BOOK, 3)
            # Node 1 has no client on the book: it reads the state in Redis.
            base = f"http://{HOST}:{cluster.nodes[1][1]}"
            answer = await cluster.http.get(f"{base}/v1/snapshot/{BOOK}")
            assert answer.status_code == 200
            body = answer.json()
            assert body["channel"] == BOOK and body["seq"] >= 3
            assert set(body["data"]) >= {"bids", "asks"}
            relay = cluster.nodes[1][0]
            assert relay.cluster is not None and not relay.cluster.mirrors.live(BOOK)
        never = await cluster.http.get(f"{base}/v1/snapshot/sim:book:ETH-USD")
        assert never.status_code == 404
        redis_server.stop()
        with trio.fail_after(10):
            while (await cluster.readyz(1))[0] != 503:  # noqa: ASYNC110 - another process
                await trio.sleep(0.05)
        down = await cluster.http.get(f"{base}/v1/snapshot/{BOOK}")
        assert (down.status_code, down.json()["error"]) == (503, "unavailable")


async def test_a_socketio_client_on_one_node_gets_the_envelopes_a_websocket_client_gets_on_another(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running_cluster(nursery, redis_server, nodes=2) as cluster:
        port = cluster.nodes[1][1]
        sio_url = f"ws://{HOST}:{port}/socket.io/?EIO=4&transport=websocket"
        async with client(cluster.url(0)) as ws, open_websocket_url(sio_url) as sio:
            assert (await sio.get_message()).startswith("0{")
            await sio.send_message("40/ws,")
            assert (await sio.get_message()).startswith('40/ws,{"sid":')
            await sio.send_message(f'42/ws,1["subscribe",{{"channel":"{TRADES}"}}]')
            subscribed = orjson.loads((await sio.get_message()).removeprefix("42/ws,"))
            assert subscribed[0] == "subscribed" and subscribed[1]["channel"] == TRADES
            ack = await sio.get_message()
            assert ack == f'43/ws,1[{{"subscribed":["{TRADES}"],"failed":[]}}]'
            await subscribe(ws, TRADES)
            start = subscribed[1]["seq"]
            target = start + 20
            plain = await raw_until(ws, TRADES, target)
            packets: dict[int, str] = {}
            with trio.fail_after(10):
                while max(packets, default=0) < target:
                    text = await sio.get_message()
                    if text.startswith('42/ws,["data",'):
                        envelope = text.removeprefix('42/ws,["data",').removesuffix("]")
                        packets[orjson.loads(envelope)["seq"]] = envelope
            # Consecutive on the Socket.IO side, and byte for byte the WebSocket's envelopes.
            assert sorted(packets) == list(range(start + 1, target + 1))
            common = set(packets) & set(plain)
            assert len(common) >= 10
            assert all(packets[seq] == plain[seq] for seq in common)
