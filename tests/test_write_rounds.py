"""The write rounds on trio's MockClock over real socket pairs, so the sessions' synchronous
``os.write`` path runs: an idle relay writes a message at once, a backlog is written in one
batch, and the rest after a round follows the backlog it carried, in both directions.

MockClock (autojump) makes time stand still while anything can run, so "written at the same
virtual instant it was published" is exact, and a round's cost is whatever the test makes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import TextMessage
from wsproto.frame_protocol import FrameProtocol, Opcode

from relay.core.deflate import CompressionPolicy
from relay.core.hub import Hub, Limits
from relay.core.latency import LatencyHistogram
from relay.core.model import StreamKind, Update
from relay.core.outbox import Policy
from relay.core.pacing import RoundPacer
from relay.core.timers import SessionTimers
from relay.core.websocket import ServerWebSocket
from relay.server.rounds import WriteRounds
from relay.server.session import CloseCode, Closing, Session, SessionSettings
from tests.deflate_client import agreed_deflate

CHANNEL = "sim:trades:BTC-USD"
SETTINGS = SessionSettings(
    heartbeat=15.0,
    heartbeat_timeout=10.0,
    idle_timeout=60.0,
    send_timeout=10.0,
    close_timeout=1.0,
    max_messages=4096,
    max_bytes=4 << 20,
    rate_limit=50.0,
    rate_burst=100,
)


class Source:
    def want(self, channel: str) -> None:
        pass

    def unwant(self, channel: str) -> None:
        pass

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        return None


class Peer:
    """The client end of a socket pair, reading server frames with wsproto's parser."""

    def __init__(self, sock: trio.socket.SocketType, deflate: int = 0) -> None:
        """``deflate``: the server window bits of a permessage-deflate agreed to (0: none)."""
        self.sock = sock
        self.frames = FrameProtocol(client=True, extensions=agreed_deflate(deflate))
        self.compressed = 0
        """Frames that arrived compressed (RSV1 set)."""

    async def messages(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` text messages, and the virtual time the last one arrived."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            data = await self.sock.recv(1 << 16)
            self.compressed += data[0] == 0xC1
            self.frames.receive_bytes(data)
            for frame in self.frames.received_frames():
                assert frame.opcode is Opcode.TEXT
                out.append(orjson.loads(frame.payload))
        return out


class Fixture:
    def __init__(self, clients: int, pacer: RoundPacer | None = None) -> None:
        self.hub = Hub(lambda _: StreamKind.EVENT, lambda _: Policy.DROP, epoch="test")
        self.hub.add_source("sim", Source())
        self.latency = LatencyHistogram()
        """Every write's fan-out latency: the round's flush and the sessions record here."""
        self.rounds = WriteRounds(self.hub, pacer, latency=self.latency)
        self.hub.flush_before_writing(self.rounds.published)
        self.timers: SessionTimers[Session] = SessionTimers(15.0, 60.0, 10.0)
        self.sessions: list[Session] = []
        self.peers: list[Peer] = []
        for _ in range(clients):
            session, theirs = self.session()
            assert session._fd is not None  # the synchronous os.write path is the one tested
            self.hub.subscribe(session, [CHANNEL], None, Limits(10))
            self.sessions.append(session)
            self.peers.append(Peer(theirs))
        self.published = 0

    def session(self) -> tuple[Session, trio.socket.SocketType]:
        """A session on one end of a socket pair, and the other end."""
        return paired_session(self.hub, self.rounds, SETTINGS, self.timers, latency=self.latency)

    def publish(self) -> None:
        self.published += 1
        self.hub.publish(Update(CHANNEL, {"n": self.published}, self.published, False), 1)

    def writes(self) -> list[int]:
        """The writes each session made itself (its release, its writer task)."""
        return [session.writes for session in self.sessions]

    def flushed(self) -> int:
        """The writes the rounds' flushes made whole, for all the sessions."""
        return self.hub.round_writes

    async def confirmed(self) -> None:
        for peer in self.peers:
            assert (await peer.messages(1))[0]["event"] == "subscribed"


def paired_session(
    hub: Hub,
    rounds: WriteRounds,
    settings: SessionSettings = SETTINGS,
    timers: SessionTimers[Session] | None = None,
    deflate: int = 0,
    latency: LatencyHistogram | None = None,
) -> tuple[Session, trio.socket.SocketType]:
    """A session on one end of a socket pair, and the other end; ``deflate`` as for
    :class:`Peer`."""
    ours, theirs = trio.socket.socketpair()
    session = Session(
        trio.SocketStream(ours),
        ServerWebSocket(Connection(ConnectionType.SERVER), 1 << 20, deflate),
        hub,
        Limits(10),
        settings,
        timers if timers is not None else SessionTimers(15.0, 60.0, 10.0),
        rounds,
        latency=latency if latency is not None else LatencyHistogram(),
    )
    return session, theirs


def batching_hub(kind: StreamKind, policy: Policy) -> tuple[Hub, WriteRounds]:
    """A hub whose batches wait for write rounds (none runs unless a test starts one)."""
    hub = Hub(lambda _: kind, lambda _: policy, epoch="test")
    hub.add_source("sim", Source())
    rounds = WriteRounds(hub)
    hub.flush_before_writing(rounds.published)
    return hub, rounds


def read_texts(data: bytes) -> list[dict[str, Any]]:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return [orjson.loads(e.data) for e in client.events() if isinstance(e, TextMessage)]


async def test_an_idle_relay_writes_a_message_the_moment_it_arrives(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    f = Fixture(3)
    nursery.start_soon(f.rounds.run)
    await f.confirmed()
    for n in range(1, 4):
        await trio.sleep(7.0)  # idle between messages
        published_at = trio.current_time()
        f.publish()
        for peer in f.peers:
            assert [m["seq"] for m in await peer.messages(1)] == [n]
            assert trio.current_time() == published_at  # no settle delay, no rest
        # The confirmation (each session's release), then one write per message and client,
        # made by the flush.
        assert (f.writes(), f.flushed()) == ([1] * 3, 3 * n)
    assert f.rounds.rested == 0.0


async def test_a_backlog_goes_out_in_one_write_per_client(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The ingest publishes eight queued messages, one per scheduler tick (as it does when
    messages wait in the upstream socket): the round waits for the last and writes them all
    in one system call per client."""
    f = Fixture(3)
    nursery.start_soon(f.rounds.run)
    await f.confirmed()
    rounds = f.rounds.rounds
    for _ in range(8):
        f.publish()
        await trio.lowlevel.checkpoint()
    for peer in f.peers:
        assert [m["seq"] for m in await peer.messages(8)] == list(range(1, 9))
    assert (f.writes(), f.flushed()) == ([1, 1, 1], 3)
    assert f.rounds.rounds == rounds + 1


async def test_light_load_writes_each_message_and_a_backlog_batches_then_back_again(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    f = Fixture(2)
    nursery.start_soon(f.rounds.run)
    await f.confirmed()

    async def light(count: int) -> None:
        for _ in range(count):
            f.publish()
            await trio.sleep(0.010)  # 100 msg/s

    async def backlog(count: int) -> None:
        for _ in range(count):
            f.publish()
            await trio.lowlevel.checkpoint()

    await light(5)
    assert (f.writes(), f.flushed()) == ([1] * 2, 5 * 2)
    await backlog(20)
    await trio.sleep(0.001)
    assert (f.writes(), f.flushed()) == ([1] * 2, (5 + 1) * 2)
    await light(5)
    assert (f.writes(), f.flushed()) == ([1] * 2, (5 + 1 + 5) * 2)
    for peer in f.peers:
        assert [m["seq"] for m in await peer.messages(30)] == list(range(1, 31))


class Counter:
    """An ingest that only counts: its messages reach no outbox here."""

    messages_in = 0
    flushes = 0

    def flush_round(
        self, clock_ms: Callable[[], int] | None, latency: LatencyHistogram | None = None
    ) -> None:
        self.flushes += 1


class CostlyWriter:
    """A writer whose write takes ``cost`` seconds of (virtual) time."""

    def __init__(self, clock: trio.testing.MockClock, cost: float) -> None:
        self.clock = clock
        self.cost = cost
        self.released_at: list[float] = []

    def release(self, now_ms: int = 0) -> None:
        assert now_ms > 0  # the round read the wall clock for it
        self.released_at.append(trio.current_time())
        self.clock.jump(self.cost)


@pytest.mark.parametrize(
    ("batch", "rest"),
    [(1, 0.0), (2, 0.010 * 0.5 / 3), (3, 0.010 * 0.5 * 2 / 3), (4, 0.005), (50, 0.005)],
)
async def test_the_rest_after_a_round_follows_its_backlog(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, batch: int, rest: float
) -> None:
    ingest = Counter()
    rounds = WriteRounds(ingest, RoundPacer(pacing=0.5, full_batch=4))
    writer = CostlyWriter(autojump_clock, 0.010)
    nursery.start_soon(rounds.run)
    ingest.messages_in += batch
    rounds.request(writer)
    await trio.sleep(0.001)  # the round runs (and costs 10 ms) meanwhile
    assert len(writer.released_at) == 1
    ended = writer.released_at[0] + 0.010
    ingest.messages_in += 1  # the next message, written as soon as the rest allows
    rounds.request(writer)
    await trio.sleep(0.100)
    assert writer.released_at[1] == pytest.approx(ended + rest)
    assert rounds.rested == pytest.approx(rest)


async def test_after_a_loaded_round_a_light_one_does_not_rest(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ingest = Counter()
    rounds = WriteRounds(ingest, RoundPacer(pacing=0.5, full_batch=4))
    writer = CostlyWriter(autojump_clock, 0.010)
    nursery.start_soon(rounds.run)
    requested_at = []
    for batch in (10, 1, 1, 10, 1):
        ingest.messages_in += batch
        requested_at.append(trio.current_time())
        rounds.request(writer)
        await trio.sleep(0.013)  # each round costs 10 ms; a full rest would end 2 ms later
    delays = [
        round(released - requested, 6)
        for released, requested in zip(writer.released_at, requested_at, strict=True)
    ]
    # Only the rounds after a loaded one wait (for the end of its 5 ms rest).
    assert delays == [0.0, 0.002, 0.0, 0.0, 0.002]


async def test_a_batch_started_brings_a_round_that_flushes_it_before_the_writes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """No writer asks for a round until the flush offers it something: the ingest's word that
    a batch started is what brings the round, and the flush comes before the writes."""
    writer = CostlyWriter(autojump_clock, 0.001)
    writes_before_flush: list[int] = []

    class Batching(Counter):
        def flush_round(
            self, clock_ms: Callable[[], int] | None, latency: LatencyHistogram | None = None
        ) -> None:
            super().flush_round(clock_ms, latency)
            writes_before_flush.append(len(writer.released_at))
            rounds.request(writer)  # what a subscriber offered a batch does

    ingest = Batching()
    rounds = WriteRounds(ingest, RoundPacer())
    nursery.start_soon(rounds.run)
    await trio.sleep(1.0)
    assert (rounds.rounds, ingest.flushes) == (0, 0)
    ingest.messages_in += 1
    rounds.published()
    await trio.sleep(0.1)
    assert (rounds.rounds, ingest.flushes) == (1, 1)
    assert writes_before_flush == [0] and len(writer.released_at) == 1


async def test_slow_ticks_do_not_hold_a_round_back_past_the_settle_bound(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A reconnect storm: every scheduler tick runs thousands of handshake steps (here a
    neighbour that costs 0.2 s of virtual time per tick) and the ingest publishes in each
    tick. Counted in ticks, settling went on for 256 of them (51 s here); bounded in time,
    the round starts at the first tick past ``max_settle``."""
    ingest = Counter()
    rounds = WriteRounds(ingest, RoundPacer(max_settle=0.050))
    writer = CostlyWriter(autojump_clock, 0.001)

    async def storm() -> None:
        while True:
            autojump_clock.jump(0.2)
            ingest.messages_in += 1
            await trio.lowlevel.checkpoint()

    nursery.start_soon(rounds.run)
    nursery.start_soon(storm)
    await trio.lowlevel.checkpoint()
    requested_at = trio.current_time()
    rounds.request(writer)
    with trio.fail_after(5.0):
        while not writer.released_at:
            await trio.lowlevel.checkpoint()
    # Woken in the next tick, then a tick or two of settling: at most four of the
    # neighbour's ticks, depending on where trio puts each task in its (shuffled) batches.
    assert writer.released_at[0] - requested_at <= 0.8 + 1e-9
    # The rest after a round is at most half of what its writes cost (1 ms), never a part of
    # the slow ticks around it (with them, 0.2 s a round).
    for _ in range(3):
        rounds.request(writer)
        await trio.sleep(1.0)
    assert rounds.rounds == 4
    assert 0 < rounds.rested <= 4 * 0.0005 + 1e-9


async def test_a_fresh_snapshot_is_never_followed_by_a_message_it_reflects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A state channel under the coalesce policy, one message of room: the outbox holds a
    request for a fresh snapshot when the session collects, and a message published since
    waits in the hub's batch. The channel's state already has it, so the snapshot reflects it;
    the batch must reach the outbox first (into the held slot), never after the snapshot."""
    hub, rounds = batching_hub(StreamKind.STATE, Policy.COALESCE)
    session, _ = paired_session(hub, rounds, attrs.evolve(SETTINGS, max_messages=1))
    hub.subscribe(session, [CHANNEL], None, Limits(10))
    session.outbox.drain()
    for n in (1, 2, 3):
        hub.publish(Update(CHANNEL, {"n": n}, n, False), n)
        if n < 3:
            hub.flush()  # 1 is queued; 2 finds no room, and its channel waits for a snapshot
    data, _ = session._collect()
    assert data is not None
    hub.flush()
    assert not session.outbox.pending  # nothing left to follow the snapshot
    got = read_texts(data)
    assert [(m["seq"], m.get("snapshot", False)) for m in got] == [(1, False), (3, True)]
    assert got[-1]["data"] == {"n": 3}


async def test_a_reply_follows_the_messages_published_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, rounds = batching_hub(StreamKind.EVENT, Policy.DROP)
    session, _ = paired_session(hub, rounds)
    hub.subscribe(session, [CHANNEL], None, Limits(10))
    session.outbox.drain()
    hub.publish(Update(CHANNEL, {"n": 1}, 1, False), 1)  # waits in the hub's batch
    session._queue(hub.event_frame(0, "pong", None, 5))
    data, _ = session._collect()
    assert data is not None
    assert [m.get("seq", m.get("event")) for m in read_texts(data)] == [1, "pong"]


async def test_a_close_for_what_the_client_sent_writes_the_waiting_batch_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, rounds = batching_hub(StreamKind.EVENT, Policy.DROP)
    session, theirs = paired_session(hub, rounds)
    hub.subscribe(session, [CHANNEL], None, Limits(10))
    session.outbox.drain()
    hub.publish(Update(CHANNEL, {"n": 1}, 1, False), 1)  # waits in the hub's batch
    session.closing = Closing(4029, "rate limited", flush=True)
    await session._close()  # gives up waiting for the client's close after close_timeout
    frames = FrameProtocol(client=True, extensions=[])
    frames.receive_bytes(await theirs.recv(1 << 16))
    got = list(frames.received_frames())
    assert [f.opcode for f in got] == [Opcode.TEXT, Opcode.CLOSE]
    assert orjson.loads(got[0].payload)["seq"] == 1


async def test_replies_are_written_by_the_reader_without_a_write_round(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The welcome and the answer to a command go out from the session's own task: no write
    round runs in this test at all (a round in a storm can be a long scheduler pass away)."""
    f = Fixture(0)
    session, theirs = f.session()
    connection = trio.CancelScope()

    async def serve() -> None:
        with connection:
            async with trio.open_nursery() as conn:
                await session.run(conn)

    nursery.start_soon(serve)
    peer = Peer(theirs)
    with trio.fail_after(1):  # virtual time: nothing else would ever write them
        assert (await peer.messages(1))[0]["event"] == "welcome"
        client = FrameProtocol(client=True, extensions=[])
        command = orjson.dumps({"action": "subscribe", "channels": [CHANNEL], "id": 7})
        await theirs.send(client.send_data(command.decode(), fin=True))
        reply = (await peer.messages(1))[0]
    assert (reply["event"], reply["id"]) == ("subscribed", 7)
    assert f.rounds.rounds == 0
    connection.cancel()


async def test_the_welcome_goes_out_with_the_handshake_response_and_only_there(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The relay writes the 101 and the welcome as one (``Session.handshake``); the session
    then answers the client's first command without queueing a second welcome."""
    f = Fixture(0)
    session, theirs = f.session()
    response = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    first = session.handshake(response)
    assert first.startswith(response)
    welcome_frame = first[len(response) :]
    frames = FrameProtocol(client=True, extensions=[])
    frames.receive_bytes(welcome_frame)
    (welcome,) = [orjson.loads(frame.payload) for frame in frames.received_frames()]
    assert welcome["event"] == "welcome" and welcome["data"]["session"] == session.id
    assert (session.writes, session.bytes_out) == (1, len(welcome_frame))

    async def serve() -> None:
        async with trio.open_nursery() as conn:
            await session.run(conn)

    nursery.start_soon(serve)
    command = orjson.dumps({"action": "subscribe", "channels": [CHANNEL], "id": 7})
    await theirs.send(FrameProtocol(client=True, extensions=[]).send_data(command.decode(), True))
    with trio.fail_after(1):
        reply = (await Peer(theirs).messages(1))[0]
    assert (reply["event"], reply["id"]) == ("subscribed", 7)
    assert session.writes == 2
    nursery.cancel_scope.cancel()


async def test_each_write_records_how_long_its_oldest_message_waited(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Whether a session's release writes a message (queued by a reply's flush) or the
    round's flush does (nothing waiting), the write is recorded once, against the receipt
    time of its oldest message."""
    f = Fixture(3)
    nursery.start_soon(f.rounds.run)
    await f.confirmed()
    assert f.latency.count == 0  # the confirmations carry no message to measure
    received_ms = time.time_ns() // 1_000_000 - 30  # the relay got them 30 ms ago
    f.hub.publish(Update(CHANNEL, {"n": 1}, 1, False), received_ms)
    f.sessions[0].reply("pong", None, 7)  # queues the message in every outbox, then the pong
    assert [m.get("seq") for m in await f.peers[0].messages(2)] == [1, None]
    for peer in f.peers[1:]:
        await peer.messages(1)
    assert (f.writes(), f.flushed()) == ([2, 2, 2], 0)  # each session's release: one write
    f.hub.publish(Update(CHANNEL, {"n": 2}, 2, False), received_ms)
    for peer in f.peers:
        await peer.messages(1)
    assert (f.writes(), f.flushed()) == ([2, 2, 2], 3)  # the flush: one write each
    # Six writes in the 25-50 ms bucket (the wall clock moved a little since).
    assert f.latency.counts == [0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0]


async def test_a_subscriber_with_nothing_waiting_is_written_in_the_flush_itself(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At light load the round's flush writes each message straight to the socket: nothing
    passes through an outbox, and no writer is released."""
    f = Fixture(3)
    nursery.start_soon(f.rounds.run)
    await f.confirmed()
    released: list[Session] = []
    monkeypatch.setattr(Session, "release", lambda self, now_ms=0: released.append(self))
    for n in range(1, 4):
        f.publish()
        for peer in f.peers:
            with trio.fail_after(1.0):  # virtual time: nothing else would ever write it
                assert [m["seq"] for m in await peer.messages(1)] == [n]
    assert released == []
    assert (f.writes(), f.flushed()) == ([1] * 3, 3 * 3)
    assert all(not session.outbox.pending for session in f.sessions)


async def test_a_message_for_a_subscriber_with_something_waiting_queues_behind_it(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A reply queued and not yet written, then a message in the same round: the message may
    not overtake it, so it goes to the outbox and both leave in one write, in order; the
    other subscribers are written in the flush."""
    f = Fixture(2)
    nursery.start_soon(f.rounds.run)
    await f.confirmed()
    waiting, idle = f.sessions
    waiting.reply("pong", None, 7)
    f.publish()
    first = await f.peers[0].messages(2)
    assert [m.get("seq", m.get("event")) for m in first] == ["pong", 1]
    assert [m["seq"] for m in await f.peers[1].messages(1)] == [1]
    # One write each after the confirmation: the waiting one's release, the idle one's flush.
    assert (waiting.writes, idle.writes, f.flushed()) == (2, 1, 1)


async def test_a_direct_write_the_socket_takes_in_part_finishes_in_the_writer_task(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A message bigger than the socket takes at once: the flush writes what fits, the
    writer task the rest, and the next message follows it whole."""
    f = Fixture(1)
    nursery.start_soon(f.rounds.run)
    nursery.start_soon(f.sessions[0].run, nursery)
    await f.confirmed()
    big = "x" * (1 << 21)
    f.published += 1
    f.hub.publish(Update(CHANNEL, {"big": big}, f.published, False), 1)
    await trio.sleep(0.001)  # the round: part of it written, the writer task has the rest
    assert f.sessions[0]._writing
    f.publish()  # queues behind the rest of the first
    client = Connection(ConnectionType.CLIENT)
    messages: list[dict[str, Any]] = []
    text = ""
    while len(messages) < 2:
        client.receive_data(await f.peers[0].sock.recv(1 << 20))
        for event in client.events():
            assert isinstance(event, TextMessage)
            text += event.data
            if event.message_finished:
                messages.append(orjson.loads(text))
                text = ""
    assert [m["seq"] for m in messages] == [1, 2] and messages[0]["data"]["big"] == big
    assert not f.sessions[0]._writing
    # Two writes measured, each once: both finished by the writer task, which records them
    # (the flush that began the first records nothing).
    assert f.latency.count == 2


async def test_a_direct_write_to_a_client_gone_ends_its_session_and_records_nothing(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The peer closed its end: the flush's write fails, that session ends as lost, nothing
    is queued for it or recorded as written, and the other subscriber is written as ever."""
    f = Fixture(2)
    nursery.start_soon(f.rounds.run)
    await f.confirmed()
    gone, alive = f.sessions
    f.peers[0].sock.close()
    f.publish()
    assert [m["seq"] for m in await f.peers[1].messages(1)] == [1]
    assert gone.closing is not None and gone.closing.code == CloseCode.LOST
    assert not gone.outbox.pending and not gone._writing
    assert (gone.writes, alive.writes, f.flushed()) == (1, 1, 1)
    assert f.latency.count == 1


async def test_a_compressing_subscriber_with_nothing_waiting_is_written_in_the_flush_too(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser's permessage-deflate connection takes the same direct path as a plain one:
    the message, compressed once, goes out in the round's flush, at the instant it was
    published, and no writer is released."""
    hub = Hub(
        lambda _: StreamKind.EVENT,
        lambda _: Policy.DROP,
        epoch="test",
        compression=CompressionPolicy(min_bytes=0),
    )
    hub.add_source("sim", Source())
    rounds = WriteRounds(hub)
    hub.flush_before_writing(rounds.published)
    peers = []
    for deflate in (0, 15, 15):
        session, theirs = paired_session(hub, rounds, deflate=deflate)
        hub.subscribe(session, [CHANNEL], None, Limits(10))
        peers.append(Peer(theirs, deflate))
    nursery.start_soon(rounds.run)
    for peer in peers:
        assert (await peer.messages(1))[0]["event"] == "subscribed"
    released: list[Session] = []
    monkeypatch.setattr(Session, "release", lambda self, now_ms=0: released.append(self))
    for n in range(1, 3):
        await trio.sleep(1.0)
        published_at = trio.current_time()
        hub.publish(Update(CHANNEL, {"n": n, "text": "compressible " * 10}, n, False), 1)
        for peer in peers:
            with trio.fail_after(1.0):  # virtual time: nothing else would ever write it
                assert [m["seq"] for m in await peer.messages(1)] == [n]
            assert trio.current_time() == published_at
    assert released == []
    assert [peer.compressed for peer in peers] == [0, 2, 2]
    assert hub.compressions == 2


async def _write_rounds_scenario(ops: list[tuple[str, int]]) -> None:
    """Run ``ops`` against three sessions on real socket pairs, checking after each that a
    session whose outbox holds anything has been woken, is being written or is closing
    (what lets :meth:`Session.write_now` answer without looking into the outbox); then
    read everything and check each client got every message once, in order, and each reply
    exactly where it was queued among them."""
    f = Fixture(3)
    replies_after: list[list[int]] = [[] for _ in f.sessions]
    """Per client: for each reply, how many messages had been published when it was queued."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(f.rounds.run)
        for session in f.sessions:
            nursery.start_soon(session.run, nursery)
        await trio.testing.wait_all_tasks_blocked()  # each session has queued its welcome
        readers = [FrameProtocol(client=True, extensions=[]) for _ in f.peers]
        partial = ["" for _ in f.peers]
        got: list[list[dict[str, Any]]] = [[] for _ in f.peers]

        async def read(k: int, wait: float) -> bool:
            """What peer ``k`` receives within ``wait`` (virtual) seconds; False if nothing."""
            with trio.move_on_after(wait):
                data = await f.peers[k].sock.recv(1 << 20)
                readers[k].receive_bytes(data)
                for frame in readers[k].received_frames():
                    if frame.opcode is Opcode.PING:
                        continue
                    partial[k] += frame.payload
                    if frame.message_finished:
                        got[k].append(orjson.loads(partial[k]))
                        partial[k] = ""
                return True
            return False

        for op, k in ops:
            if op == "publish":
                f.published += 1
                pad = "x" * (k * 100_000)  # 0, 100 or 200 kB: big ones fill the socket
                f.hub.publish(Update(CHANNEL, {"n": f.published, "pad": pad}, 1, False), 1)
            elif op == "reply":
                f.sessions[k].reply("pong", None, len(replies_after[k]))
                replies_after[k].append(f.published)
            elif op == "ping":
                f.sessions[k].ping(trio.current_time())
            elif op == "read":
                await read(k, 0.001)  # a client that reads now and then
            elif op == "tick":
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep(0.01)
            for session in f.sessions:
                if session.outbox.pending:
                    assert session._requested or session._writing or session.closing is not None
        for k in range(len(f.peers)):
            while await read(k, 1.0):
                pass
            # The confirmation, then the welcome the session queued when it started.
            assert [m.get("event") for m in got[k][:2]] == ["subscribed", "welcome"]
            assert len(got[k]) == 2 + f.published + len(replies_after[k])
            seqs = [m["seq"] for m in got[k] if "seq" in m]
            assert seqs == list(range(1, f.published + 1))
            before = [
                sum("seq" in m for m in got[k][:i])
                for i, m in enumerate(got[k])
                if m.get("event") == "pong"
            ]
            assert before == replies_after[k]
        assert all(session.closing is None for session in f.sessions)
        nursery.cancel_scope.cancel()


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from([0, 0, 0, 0, 1, 2])),
        st.tuples(st.sampled_from(["reply", "ping", "read"]), st.integers(0, 2)),
        st.tuples(st.sampled_from(["tick", "wait"]), st.just(0)),
    ),
    max_size=40,
)


@given(_ops)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_direct_writes_never_pass_what_waits_in_an_outbox(ops: list[tuple[str, int]]) -> None:
    """Whatever mix of messages, replies, pings, slow reads and round timing: the flush
    writes a session directly only when nothing of it waits, so every client sees each
    message once and in order, with each reply where it was queued."""
    trio.run(_write_rounds_scenario, ops, clock=trio.testing.MockClock(autojump_threshold=0))
