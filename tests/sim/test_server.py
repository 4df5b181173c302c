"""The simulator over real loopback sockets: stream semantics, REST, stats and every fault.

Real time with short intervals (MockClock autojump does not mix with real sockets); every wait is
bounded so a regression fails fast instead of hanging.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
import trio_websocket

from relay.adapters.sim import SimAdapter
from relay.core.model import Ack, Heartbeat, Update, UpstreamFormatError
from relay.core.source import FetchSnapshot
from relay.sim.server import GARBAGE, SimServer

SYMBOLS = ["BTC-USD", "ETH-USD"]
HEARTBEAT = 0.1


@attrs.define
class Sim:
    server: SimServer
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)

    async def post(self, path: str, **params: Any) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.post(path, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["ok"] is True
        return body

    async def settles(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Poll the stats until ``predicate`` holds (connection teardown is asynchronous)."""
        for _ in range(100):
            if predicate(await self.stats()):
                return
            await trio.sleep(0.02)
        raise AssertionError(f"stats never settled: {await self.stats()}")

    async def stats(self) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.get("/control/stats")
        assert response.status_code == 200
        stats: dict[str, Any] = response.json()
        return stats


async def start_sim(nursery: trio.Nursery, **kwargs: Any) -> Sim:
    options: dict[str, Any] = {"rate": 50.0, "heartbeat_interval": HEARTBEAT}
    options.update(kwargs)
    server = SimServer(SYMBOLS, handshake_timeout=0.5, **options)
    port = await nursery.start(server.serve)
    return Sim(server, port)


@pytest.fixture
async def sim(nursery: trio.Nursery) -> Sim:
    return await start_sim(nursery)


class Client:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.req = 0

    async def request(self, op: str, *args: str) -> dict[str, Any]:
        """Send a request and return its answer (skipping heartbeats)."""
        self.req += 1
        message: dict[str, Any] = {"op": op, "req": self.req}
        if op != "ping":
            message["args"] = list(args)
        await self.ws.send_message(orjson.dumps(message).decode())
        return await self.reply()

    async def reply(self, within: float = 2.0) -> dict[str, Any]:
        """The next answer to a request: skips heartbeats and market messages queued before it."""
        with trio.fail_after(within):
            while True:
                message = await self.recv()
                if message.get("op") not in (None, "heartbeat"):
                    return dict(message)

    async def recv(self, within: float = 2.0) -> Any:
        with trio.fail_after(within):
            return orjson.loads(await self.ws.get_message())

    async def recv_data(self, within: float = 2.0) -> dict[str, Any]:
        """The next message that is not a heartbeat."""
        with trio.fail_after(within):
            while True:
                message = await self.recv()
                if message.get("op") != "heartbeat":
                    return dict(message)

    async def until(self, topic: str, seq: int) -> None:
        """Read until ``topic`` reaches ``seq``."""
        with trio.fail_after(2):
            while True:
                message = await self.recv()
                if message.get("topic") == topic and message["seq"] >= seq:
                    assert message["seq"] == seq
                    return

    async def quiet_for(self, seconds: float) -> list[Any]:
        """Everything that arrives within ``seconds``."""
        got: list[Any] = []
        with trio.move_on_after(seconds):
            while True:
                got.append(await self.ws.get_message())
        return got


@asynccontextmanager
async def connect(sim: Sim) -> AsyncIterator[Client]:
    async with trio_websocket.open_websocket_url(sim.url) as ws:
        yield Client(ws)


async def test_subscribe_ack_then_snapshot_first_then_contiguous_seq(sim: Sim) -> None:
    topics = ["depth.BTC-USD", "ticker.BTC-USD", "trade.BTC-USD"]
    async with connect(sim) as client:
        ack = await client.request("subscribe", *topics)
        assert ack == {"op": "subscribe", "req": 1, "ok": True, "args": topics}
        last: dict[str, int] = {}
        with trio.fail_after(3):
            while min((last.get(t, 0) for t in topics), default=0) < 10 or len(last) < 3:
                message = await client.recv_data()
                topic, seq = message["topic"], message["seq"]
                if topic not in last:
                    if topic != "trade.BTC-USD":
                        assert message["kind"] == "snapshot", message  # snapshot first
                    last[topic] = seq
                    continue
                assert seq == last[topic] + 1, (topic, last[topic], seq)
                assert message["kind"] == ("update" if topic != "ticker.BTC-USD" else "snapshot")
                last[topic] = seq
        # Nothing for topics that were not subscribed.
        extra = [orjson.loads(m) for m in await client.quiet_for(0.05)]
        assert {m.get("topic") for m in extra} <= {*topics, None}


async def test_heartbeats_arrive_every_interval(sim: Sim) -> None:
    async with connect(sim) as client:
        with trio.fail_after(1):
            times = [(await client.recv())["time"] for _ in range(4)]
    assert all(isinstance(t, int) for t in times)
    assert times == sorted(times)
    # 4 heartbeats at 0.1 s span about 0.3 s; microseconds.
    assert 150_000 <= times[-1] - times[0] <= 900_000


async def test_ping_and_request_errors(sim: Sim) -> None:
    async with connect(sim) as client:
        assert await client.request("ping") == {"op": "pong", "req": 1}
        for frame, error in [("nope", "bad_json"), ("[1]", "bad_request")]:
            await client.ws.send_message(frame)
            assert await client.reply() == {"op": "error", "error": error}
        await client.ws.send_message('{"op": "dance", "req": "x"}')
        assert await client.reply() == {"op": "error", "error": "unknown_op", "req": "x"}
        refused = await client.request("subscribe", "trade.BTC-USD", "trade.DOGE-USD")
        assert refused["ok"] is False and refused["error"] == "unknown_topic"
        assert refused["unknown"] == ["trade.DOGE-USD"]
        await client.ws.send_message('{"op": "subscribe", "args": "trade.BTC-USD"}')
        assert (await client.reply())["error"] == "bad_args"
        # The refused subscribe subscribed nothing: only heartbeats arrive.
        assert all(orjson.loads(m)["op"] == "heartbeat" for m in await client.quiet_for(0.2))
    stats = await sim.stats()
    assert stats["subscribes"] == 0
    assert stats["bad_requests"] == 5


async def test_stats_count_connections_subscriptions_and_snapshots(sim: Sim) -> None:
    async with connect(sim) as first, connect(sim) as second:
        await first.request("subscribe", "trade.BTC-USD", "depth.ETH-USD")
        await second.request("subscribe", "ticker.ETH-USD")
        await first.until("trade.BTC-USD", sim.server.model.seq("trade.BTC-USD") + 2)
        ack = await first.request("unsubscribe", "trade.BTC-USD")
        assert ack["ok"] is True
        # The ack is queued after every trade sent before it: no trade may follow.
        later = [orjson.loads(m) for m in await first.quiet_for(0.15)]
        assert all(m.get("topic") != "trade.BTC-USD" for m in later)
        assert any(m.get("topic") == "depth.ETH-USD" for m in later)
        async with sim.http() as http:
            for topic in ("depth.BTC-USD", "ticker.ETH-USD"):
                assert (await http.get("/api/snapshot", params={"topic": topic})).status_code == 200
        stats = await sim.stats()
        assert stats["connections_open"] == 2
        assert stats["connections_total"] == 2
        assert stats["subscribes"] == 3
        assert stats["unsubscribes"] == 1
        assert stats["snapshot_requests"] == 2
        assert stats["messages_sent"] > 10
    await sim.settles(lambda stats: stats["connections_open"] == 0)


async def test_rest_snapshot_and_http_errors(sim: Sim) -> None:
    async with sim.http() as http:
        response = await http.get("/api/snapshot", params={"topic": "depth.ETH-USD"})
        assert response.status_code == 200
        body = response.json()
        assert body["topic"] == "depth.ETH-USD" and body["kind"] == "snapshot"
        assert isinstance(body["seq"], int) and 0 < len(body["body"]["bids"]) <= 20
        for params, status, code in [
            ({"topic": "trade.BTC-USD"}, 404, "no_snapshot"),
            ({"topic": "depth.DOGE-USD"}, 404, "no_snapshot"),
            ({}, 400, "bad_request"),
        ]:
            response = await http.get("/api/snapshot", params=params)
            assert response.status_code == status and response.json()["error"] == code
        assert (await http.get("/nowhere")).status_code == 404
        assert (await http.post("/control/unknown")).status_code == 404
        response = await http.get("/control/drop")
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert (
            await http.post("/api/snapshot", params={"topic": "depth.ETH-USD"})
        ).status_code == 405
        assert (await http.get("/ws")).status_code == 426
        assert (await http.post("/control/stall")).status_code == 400
        assert (await http.post("/control/stall", params={"seconds": "soon"})).status_code == 400
        assert (await http.post("/control/skip", params={"n": "0"})).status_code == 400
        assert (await http.post("/control/rate", params={"per_second": "0"})).status_code == 400
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{sim.port}/other"):
            pass
    assert rejected.value.status_code == 404
    # Garbage bytes get a 400 and cost the server nothing.
    stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
    async with stream:
        await stream.send_all(b"\x16\x03\x01 definitely not http\r\n\r\n")
        with trio.fail_after(2):
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 400")
    assert (await sim.stats())["connections_open"] == 0


async def test_handshake_deadline_closes_silent_connections(sim: Sim) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
    async with stream:
        await stream.send_all(b"GET /ws HTTP/1.1\r\n")  # and then nothing
        with trio.fail_after(2):
            assert await stream.receive_some(4096) == b""


async def test_drop_closes_every_connection(sim: Sim) -> None:
    async with connect(sim) as first, connect(sim) as second:
        await first.request("subscribe", "trade.BTC-USD")
        assert (await sim.post("/control/drop"))["dropped"] == 2
        for client in (first, second):
            with trio.fail_after(2), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await client.ws.get_message()
            reason = closed.value.reason
            assert (
                reason is not None and reason.code == 1006
            )  # no close frame: the TCP stream just ended
    stats = await sim.stats()
    assert stats["drops"] == 1 and stats["connections_dropped"] == 2
    assert stats["connections_open"] == 0
    async with connect(sim) as again:  # the market itself carries on
        assert (await again.request("ping"))["op"] == "pong"


async def test_stall_silences_connection_then_seq_jumps(sim: Sim) -> None:
    async with connect(sim) as client:
        await client.request("subscribe", "depth.BTC-USD")
        seqs = [sim.server.model.seq("depth.BTC-USD") + 3]
        await client.until("depth.BTC-USD", seqs[0])
        assert (await sim.post("/control/stall", seconds=0.7))["stalled"] == 1
        in_flight = [orjson.loads(m) for m in await client.quiet_for(0.1)]
        seqs += [m["seq"] for m in in_flight if "topic" in m]
        assert await client.quiet_for(0.35) == []  # no data, no heartbeats
        async with connect(sim) as fresh:  # later connections are not stalled
            assert (await fresh.request("ping"))["op"] == "pong"
        with trio.fail_after(2):
            while len(seqs) < 20:
                message = await client.recv()
                if message.get("topic"):
                    seqs.append(message["seq"])
    gaps = [b - a for a, b in itertools.pairwise(seqs)]
    assert max(gaps) > 5, seqs  # messages of the stall were never delivered
    assert all(gap >= 1 for gap in gaps)
    assert (await sim.stats())["stalls"] == 1


async def test_reset_ends_a_stall_early(sim: Sim) -> None:
    async with connect(sim) as client:
        await sim.post("/control/stall", seconds=30)
        await client.quiet_for(0.1)
        assert await client.quiet_for(0.2) == []
        await sim.post("/control/reset")
        assert (await client.recv(within=1))["op"] == "heartbeat"


async def test_skip_jumps_depth_seq_by_n(sim: Sim) -> None:
    async with connect(sim) as client, sim.http() as http:
        await client.request("subscribe", "depth.BTC-USD", "depth.ETH-USD")
        await sim.post("/control/pause")
        at_rest = (await http.get("/api/snapshot", params={"topic": "depth.BTC-USD"})).json()
        await client.until("depth.BTC-USD", at_rest["seq"])
        skipped = await sim.post("/control/skip", n=5, stream="depth.BTC-USD")
        assert skipped["seqs"] == {"depth.BTC-USD": at_rest["seq"] + 5}
        eth_before = sim.server.model.seq("depth.ETH-USD")
        everywhere = await sim.post("/control/skip", n=2)
        assert set(everywhere["seqs"]) == {"depth.BTC-USD", "depth.ETH-USD"}
        assert everywhere["seqs"]["depth.ETH-USD"] == eth_before + 2
        await sim.post("/control/resume")
        with trio.fail_after(2):
            while (message := await client.recv()).get("topic") != "depth.BTC-USD":
                pass
        assert message["seq"] == at_rest["seq"] + 8
        fresh = (await http.get("/api/snapshot", params={"topic": "depth.BTC-USD"})).json()
        assert fresh["seq"] >= message["seq"]
        bad = await http.post("/control/skip", params={"n": 1, "stream": "trade.BTC-USD"})
        assert bad.status_code == 400
    assert (await sim.stats())["skips"] == 2


async def test_garbage_arrives_as_a_non_json_message(sim: Sim) -> None:
    adapter = SimAdapter("sim", SYMBOLS)
    async with connect(sim) as client:
        assert (await sim.post("/control/garbage"))["sent"] == 1
        with trio.fail_after(2):
            while (frame := await client.ws.get_message()) != GARBAGE:
                pass
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(frame)
        with pytest.raises(UpstreamFormatError):
            adapter.parse(frame)
        assert (await client.request("ping"))["op"] == "pong"  # the connection lives on
    assert (await sim.stats())["garbage"] == 1


async def test_refuse_answers_503_until_it_expires(sim: Sim) -> None:
    await sim.post("/control/refuse", seconds=0.4)
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(sim.url):
            pass
    assert rejected.value.status_code == 503
    assert orjson.loads(rejected.value.body or b"{}")["error"] == "refused"
    stats = await sim.stats()  # plain HTTP is never refused
    assert stats["refusals"] == 1 and stats["connections_refused"] == 1
    await trio.sleep(0.45)
    async with connect(sim) as client:
        assert (await client.request("ping"))["op"] == "pong"
    await sim.post("/control/refuse", seconds=30)
    await sim.post("/control/reset")
    async with connect(sim) as client:
        assert (await client.request("ping"))["op"] == "pong"


async def test_snapshot_faults_until_reset(sim: Sim) -> None:
    params = {"topic": "ticker.BTC-USD"}
    async with sim.http() as http:
        assert (await sim.post("/control/snapshot", status=503))["status"] == 503
        response = await http.get("/api/snapshot", params=params)
        assert response.status_code == 503 and response.json()["error"] == "injected_fault"
        await sim.post("/control/snapshot", delay=0.3)
        started = trio.current_time()
        response = await http.get("/api/snapshot", params=params)
        assert trio.current_time() - started >= 0.3
        assert response.status_code == 503  # the status fault still holds
        await sim.post("/control/reset")
        started = trio.current_time()
        response = await http.get("/api/snapshot", params=params)
        assert response.status_code == 200 and trio.current_time() - started < 0.25
        assert (await http.post("/control/snapshot")).status_code == 400
        assert (await http.post("/control/snapshot", params={"status": 200})).status_code == 400
    stats = await sim.stats()
    assert stats["snapshot_faults"] == 2
    assert stats["snapshot_failures"] == 2
    assert stats["snapshot_requests"] == 1


async def test_burst_emits_n_contiguous_trades(sim: Sim) -> None:
    async with connect(sim) as client:
        await sim.post("/control/pause")
        await client.request("subscribe", "trade.BTC-USD")
        await client.quiet_for(0.05)
        burst = await sim.post("/control/burst", n=600)
        assert burst["topic"] == "trade.BTC-USD" and burst["n"] == 600
        seqs: list[int] = []
        with trio.fail_after(3):
            while len(seqs) < 600:
                message = await client.recv()
                if message.get("topic") == "trade.BTC-USD":
                    seqs.append(message["seq"])
        assert seqs == list(range(burst["first_seq"], burst["last_seq"] + 1))
        assert [m for m in await client.quiet_for(0.05) if "trade." in m] == []
    async with sim.http() as http:
        params: dict[str, str | int] = {"n": 5, "topic": "depth.BTC-USD"}
        assert (await http.post("/control/burst", params=params)).status_code == 400
    assert (await sim.stats())["bursts"] == 1


async def test_slow_consumer_is_dropped_without_stalling_others(nursery: trio.Nursery) -> None:
    sim = await start_sim(nursery, queue_size=16)
    async with connect(sim) as slow, connect(sim) as idle:
        await slow.request("subscribe", "trade.BTC-USD")
        await sim.post("/control/burst", n=1000)  # 256 queued before the writer can run
        with trio.fail_after(2), pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await slow.ws.get_message()
        assert (await idle.request("ping"))["op"] == "pong"
    assert (await sim.stats())["slow_consumers"] == 1


async def test_rate_pause_and_resume(sim: Sim) -> None:
    async with connect(sim) as client:
        await client.request("subscribe", "trade.ETH-USD")
        assert (await sim.post("/control/rate", per_second=100))["rate"] == 100
        await client.quiet_for(0.1)
        trades = [m for m in await client.quiet_for(0.5) if "trade.ETH-USD" in m]
        assert 25 <= len(trades) <= 75, len(trades)  # about 50
        await sim.post("/control/rate", per_second=4)
        await client.quiet_for(0.3)
        trades = [m for m in await client.quiet_for(0.5) if "trade.ETH-USD" in m]
        assert len(trades) <= 4, len(trades)  # about 2
        await sim.post("/control/pause")
        await client.quiet_for(0.05)
        quiet = [orjson.loads(m) for m in await client.quiet_for(0.4)]
        assert quiet and all(m["op"] == "heartbeat" for m in quiet)  # alive but at rest
        assert (await sim.stats())["paused"] is True
        await sim.post("/control/rate", per_second=50)
        await sim.post("/control/resume")
        with trio.fail_after(1):
            while "topic" not in await client.recv():
                pass


async def test_adapter_rebuilds_the_book_against_the_live_market(sim: Sim) -> None:
    """End to end for the upstream side: adapter frames in, adapter parsing out, and the book
    rebuilt from the stream equals the REST snapshot once the market is at rest."""
    adapter = SimAdapter(
        "sim", SYMBOLS, heartbeat_interval=HEARTBEAT, rest_url=f"http://127.0.0.1:{sim.port}"
    )
    channel = "sim:book:ETH-USD"
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    seq = -1
    events: list[object] = []
    async with connect(sim) as client, sim.http() as http:
        for frame in adapter.subscribe_frames([channel, "sim:trades:ETH-USD"]):
            await client.ws.send_message(frame)

        async def consume(until_seq: int | None) -> None:
            nonlocal seq
            with trio.fail_after(2):
                while until_seq is None or seq < until_seq:
                    for event in adapter.parse(await client.ws.get_message()):
                        events.append(event)
                        if isinstance(event, Update) and event.channel == channel:
                            assert event.seq is not None
                            if event.snapshot:
                                bids.clear()
                                asks.clear()
                            else:
                                assert event.seq == seq + 1
                            for side, key in ((bids, "bids"), (asks, "asks")):
                                for price, size in event.data[key]:
                                    if size == "0":
                                        side.pop(price, None)
                                    else:
                                        side[price] = size
                            seq = event.seq
                    if until_seq is None and seq >= 0 and len(events) > 40:
                        return

        await consume(None)
        await sim.post("/control/pause")
        how = adapter.http_repair(FetchSnapshot(channel))
        assert how is not None
        snapshot = how.parse((await http.get(how.request.url)).content)
        assert snapshot is not None
        await consume(snapshot.seq)
    assert seq == snapshot.seq
    assert {p: s for p, s in snapshot.data["bids"]} == bids
    assert {p: s for p, s in snapshot.data["asks"]} == asks
    answers = [e for e in events if not isinstance(e, Heartbeat)]
    assert answers[0] == Ack(
        True,
        "subscribe ['depth.ETH-USD', 'trade.ETH-USD']",
        ("sim:book:ETH-USD", "sim:trades:ETH-USD"),
    )
    assert any(isinstance(e, Heartbeat) for e in events)
    assert any(isinstance(e, Update) and e.channel == "sim:trades:ETH-USD" for e in events)


async def test_serve_ends_cleanly_when_cancelled(nursery: trio.Nursery) -> None:
    """Cancelling serve() ends every connection and loop with it: nothing outlives it."""
    server = SimServer(SYMBOLS, rate=50, heartbeat_interval=HEARTBEAT)
    scope = trio.CancelScope()
    finished = trio.Event()

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await server.serve(task_status=task_status)
        finished.set()

    sim = Sim(server, await nursery.start(run))
    async with connect(sim) as client:
        await client.request("subscribe", "trade.BTC-USD")
        idle = await trio.open_tcp_stream("127.0.0.1", sim.port)  # never sends a request
        scope.cancel()
        with trio.fail_after(2):
            await finished.wait()
        with trio.fail_after(2), pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await client.ws.get_message()
        async with idle:
            with trio.fail_after(2):
                assert await idle.receive_some(100) == b""
    assert server.connections_open == 0
