"""Hostile clients against a live relay, over real loopback sockets.

Hypothesis generates what one connection sends after a valid handshake: raw bytes, hand-built
frames (reserved opcodes and bits, unmasked frames, headers announcing far too much), WebSocket
text and binary messages, and JSON commands both valid and not. Meanwhile a bystander on the same
relay, subscribed to ``sim:trades:BTC-USD``, checks that every ``seq`` arrives, once and in order.

One stack serves the whole test: it runs in its own thread (its own ``trio.run``) and each
example drives one fuzzed connection with ``trio.run`` in the test's thread, so examples are
cheap and the bystander watches across all of them.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Request,
    TextMessage,
)

from tests.e2e.conftest import HOST, client, receive, running_stack, subscribe

pytestmark = pytest.mark.e2e

CHANNEL = "sim:trades:BTC-USD"
MAX_MESSAGE_SIZE = 4096
SENTINEL = "sentinel-ping"

# docs/protocol.md: the close codes the relay may send a misbehaving client.
DOCUMENTED_CLOSE_CODES = {1002, 1003, 1007, 1008, 1009, 4000, 4001, 4008, 4029}
ERROR_CODES = {
    "bad_json",
    "bad_request",
    "unknown_action",
    "unknown_channel",
    "forbidden",
    "too_many_subscriptions",
    "rate_limited",
}
REPLY_EVENTS = {"pong", "subscribed", "unsubscribed", "lagged", "status"}


# --------------------------------------------------------------------------------------------
# The stack and the bystander, in a thread of their own


@attrs.define
class Bystander:
    """What the bystander saw; written by the stack's thread, read by the test's."""

    lock: threading.Lock = attrs.field(factory=threading.Lock)
    last_seq: int | None = None
    received: int = 0
    problems: list[str] = attrs.field(factory=list)

    def saw(self, message: dict[str, Any]) -> None:
        with self.lock:
            if message.get("channel") != CHANNEL or "seq" not in message:
                self.problems.append(f"unexpected message: {message!r}")
                return
            seq = message["seq"]
            if self.last_seq is not None and seq != self.last_seq + 1:
                self.problems.append(f"seq {seq} after {self.last_seq}")
            self.last_seq = seq
            self.received += 1

    def state(self) -> tuple[int | None, int, list[str]]:
        with self.lock:
            return self.last_seq, self.received, list(self.problems)


@attrs.define
class LiveStack:
    port: int
    relay: Any
    bystander: Bystander

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"


async def _watch(url: str, bystander: Bystander) -> None:
    try:
        async with client(url) as ws:
            for message in await subscribe(ws, CHANNEL):
                bystander.saw(message)
            while True:
                bystander.saw(await receive(ws, within=30.0))
    except Exception as exc:  # recorded, and the test fails on it
        with bystander.lock:
            bystander.problems.append(f"bystander failed: {exc!r}")


@pytest.fixture(scope="module")
def live_stack() -> Iterator[LiveStack]:
    started = threading.Event()
    box: dict[str, Any] = {}
    bystander = Bystander()

    async def main() -> None:
        stop = trio.Event()
        box["token"] = trio.lowlevel.current_trio_token()
        box["stop"] = stop
        async with trio.open_nursery() as nursery:
            async with running_stack(
                nursery,
                rate=100.0,
                server={"max_message_size": MAX_MESSAGE_SIZE, "close_timeout": 0.2},
            ) as stack:
                box["stack"] = LiveStack(stack.relay_port, stack.relay, bystander)
                nursery.start_soon(_watch, stack.url, bystander)
                await stack.wait_for(lambda: bystander.received > 0)
                started.set()
                await stop.wait()
            nursery.cancel_scope.cancel()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            box["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="relay-stack", daemon=True)
    thread.start()
    started.wait(timeout=15)
    if "stack" not in box:
        thread.join(timeout=1)
        raise RuntimeError(f"the stack did not start: {box.get('error')!r}")
    try:
        yield box["stack"]
    finally:
        trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
        thread.join(timeout=10)
        assert "error" not in box, box["error"]


# --------------------------------------------------------------------------------------------
# What a hostile client sends


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """A frame built by hand, so any field can be wrong."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        header = bytes([first, mask_bit | length])
    elif length < 1 << 16:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return header + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


@attrs.frozen
class Raw:
    """Bytes that go onto the socket as they are."""

    data: bytes
    close_code: int | None = None
    """The code of a well-formed close frame in ``data``, which the relay may echo."""


@attrs.frozen
class Text:
    text: str


@attrs.frozen
class Binary:
    data: bytes


Item = Raw | Text | Binary

masks = st.binary(min_size=4, max_size=4)
payloads = st.binary(max_size=200)


@st.composite
def hand_built_frames(draw: st.DrawFn) -> Raw:
    opcode = draw(st.integers(0, 15))
    payload = draw(payloads)
    rsv = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7]))
    fin = draw(st.booleans()) if opcode < 8 else draw(st.sampled_from([True, True, False]))
    mask = draw(st.one_of(masks, masks, masks, st.none()))
    close_code = None
    if opcode == 8 and fin and rsv == 0 and mask is not None and len(payload) >= 2:
        close_code = struct.unpack("!H", payload[:2])[0]
    return Raw(frame(opcode, payload, fin=fin, rsv=rsv, mask=mask), close_code)


@st.composite
def oversized_headers(draw: st.DrawFn) -> Raw:
    """A header announcing more than the cap, and only a little of the payload (if any)."""
    opcode = draw(st.sampled_from([0, 1, 2]))
    length = draw(st.integers(MAX_MESSAGE_SIZE + 1, 2**63 - 1))
    fin = draw(st.booleans())
    ext = (
        bytes([127]) + struct.pack("!Q", length)
        if length >= 1 << 16 or draw(st.booleans())
        else bytes([126]) + struct.pack("!H", length)
    )
    header = bytes([(0x80 if fin else 0) | opcode, 0x80 | ext[0]]) + ext[1:]
    return Raw(header + draw(masks) + draw(st.binary(max_size=32)))


@st.composite
def close_frames(draw: st.DrawFn) -> Raw:
    """A well-formed close frame with any code and reason bytes."""
    valid = st.sampled_from([1000, 1001, 1003, 1008, 1011, 3000, 4000, 4999])
    code = draw(st.one_of(valid, valid, st.integers(0, 65535)))
    reason = draw(st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=20)))
    return Raw(frame(8, struct.pack("!H", code) + reason, mask=draw(masks)), code)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
channel_names = st.one_of(
    st.sampled_from(
        [
            CHANNEL,
            "sim:trades:ETH-USD",
            "sim:ticker:SOL-USD",
            "sim:book:ETH-USD",
            "sim:trades",
            "sim:trades:DOGE-USD",
            "nope:trades:BTC-USD",
            "",
            "x" * 300,
        ]
    ),
    st.text(max_size=30),
)
commands = st.fixed_dictionaries(
    {"action": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]), json_values)},
    optional={
        "channel": st.one_of(channel_names, json_values),
        "channels": st.one_of(st.lists(channel_names, max_size=5), json_values),
        "symbols": st.one_of(st.lists(st.sampled_from(["BTC-USD", "XRP-USD"]), max_size=3)),
        "id": st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=10), json_values),
        "extra": json_values,
    },
)


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits: orjson refuses them, the wire need not
        return json.dumps(value)


json_texts = st.one_of(commands, json_values).map(_dumps)

items: st.SearchStrategy[Item] = st.one_of(
    st.binary(min_size=1, max_size=64).map(Raw),
    hand_built_frames(),
    oversized_headers(),
    close_frames(),
    st.text(max_size=100).map(Text),
    st.binary(max_size=100).map(Binary),
    json_texts.map(Text),
    json_texts.map(Text),
    json_texts.map(lambda text: Binary(text.encode())),
)


# --------------------------------------------------------------------------------------------
# One fuzzed connection


@attrs.define
class Outcome:
    messages: list[dict[str, Any]] = attrs.field(factory=list)
    close: CloseConnection | None = None
    eof: bool = False
    """The relay hung up (EOF or reset) without a close frame."""
    sentinel_answered: bool = False


class Reader:
    """The relay's side of the conversation, as wsproto parses it."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.outcome = Outcome()
        self._text = ""

    @property
    def done(self) -> bool:
        o = self.outcome
        return o.close is not None or o.eof or o.sentinel_answered

    async def read_until_done(self) -> None:
        while not self.done:
            try:
                data = await self.stream.receive_some()
            except trio.BrokenResourceError:  # a reset: the relay hung up
                data = b""
            if not data:
                self.outcome.eof = True
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, CloseConnection):
                    self.outcome.close = event
                    return
                if isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        message = orjson.loads(self._text)
                        self._text = ""
                        self.outcome.messages.append(message)
                        if message.get("id") == SENTINEL and message.get("event") == "pong":
                            self.outcome.sentinel_answered = True
                elif isinstance(event, BytesMessage):
                    raise AssertionError(f"the relay sent a binary message: {event.data!r}")


async def fuzz_one(port: int, sequence: list[Item], tail: bytes | None) -> tuple[Outcome, set[int]]:
    """Send ``sequence``, then either a sentinel ping (answered, or the connection closed) or,
    with ``tail``, the start of a frame and a half-close (the relay must then hang up)."""
    ws = WSConnection(ConnectionType.CLIENT)
    framer = Connection(ConnectionType.CLIENT)  # frames messages; its state never matters
    echoable: set[int] = set()
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(ws.send(Request(host=HOST, target="/ws")))
        pending: list[Any] = []
        with trio.fail_after(5):
            while not any(isinstance(e, TextMessage) for e in pending):
                ws.receive_data(await stream.receive_some())
                pending += list(ws.events())
        assert isinstance(pending[0], AcceptConnection)
        welcome = orjson.loads(next(e for e in pending if isinstance(e, TextMessage)).data)
        assert welcome["event"] == "welcome"

        out = bytearray()
        for item in sequence:
            if isinstance(item, Raw):
                out += item.data
                if item.close_code is not None:
                    echoable.add(item.close_code)
            elif isinstance(item, Text):
                out += framer.send(TextMessage(data=item.text))
            else:
                out += framer.send(BytesMessage(data=item.data))
        if tail is None:
            ping = orjson.dumps({"action": "ping", "id": SENTINEL}).decode()
            out += framer.send(TextMessage(data=ping))
        else:
            out += tail
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(bytes(out))

        reader = Reader(stream, ws)
        if tail is None:
            with trio.fail_after(5):
                await reader.read_until_done()
            assert reader.done, "the relay neither answered the ping nor closed"
        else:
            # The relay waits for the rest of the frame (unless what came before closed it)...
            with trio.move_on_after(0.1):
                await reader.read_until_done()
            if not reader.done:
                # ...which never comes: the client stops sending. It must hang up at once.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_eof()
                with trio.fail_after(3):
                    await reader.read_until_done()
                assert reader.outcome.close is not None or reader.outcome.eof
        if reader.outcome.sentinel_answered:
            # Still open and well: leave politely, as a normal client would.
            await stream.send_all(ws.send(CloseConnection(code=1000)))
    return reader.outcome, echoable


def check(outcome: Outcome, echoable: set[int], well_framed: bool, tail: bool) -> None:
    for message in outcome.messages:
        event = message.get("event")
        if event == "error":
            assert message["data"]["code"] in ERROR_CODES, message
        elif event is not None:
            assert event in REPLY_EVENTS, message
        else:  # data, for a channel the fuzz subscribed to
            assert str(message.get("channel", "")).startswith("sim:") and "seq" in message, message
    if outcome.close is not None:
        code = outcome.close.code
        assert code in DOCUMENTED_CLOSE_CODES | echoable | {1000}, outcome.close
    if outcome.eof:
        # Hanging up without a close frame is only for a client that stopped mid-frame and
        # half-closed: a relay that closes for what it read sends a close frame first.
        assert tail, f"the relay hung up without a close frame: {outcome!r}"
    if well_framed and not tail:
        # Only whole, valid messages (text or binary, JSON or not): an error never closes the
        # connection, so the sentinel ping behind them is answered.
        assert outcome.sentinel_answered and outcome.close is None, outcome


@st.composite
def truncated_frames(draw: st.DrawFn) -> bytes:
    """The header of a masked data frame within the cap and less than its payload."""
    length = draw(st.integers(1, MAX_MESSAGE_SIZE))
    opcode = draw(st.sampled_from([1, 2]))
    payload = draw(st.binary(max_size=min(length - 1, 64)))
    header = frame(opcode, bytes(length), mask=draw(masks))
    return header[: len(header) - length] + payload


# --------------------------------------------------------------------------------------------
# The test


def test_hostile_clients_get_errors_or_documented_closes_and_the_bystander_misses_nothing(
    live_stack: LiveStack,
) -> None:
    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.lists(items, min_size=1, max_size=6),
        st.one_of(st.none(), st.none(), st.none(), truncated_frames()),
    )
    def one_connection(sequence: list[Item], tail: bytes | None) -> None:
        outcome, echoable = trio.run(fuzz_one, live_stack.port, sequence, tail)
        well_framed = not any(isinstance(i, Raw) for i in sequence)
        check(outcome, echoable, well_framed, tail is not None)
        _, _, problems = live_stack.bystander.state()
        assert not problems, problems

    one_connection()

    async def afterwards() -> None:
        # Every fuzzed connection is gone; only the bystander remains.
        with trio.fail_after(5):
            while len(live_stack.relay.sessions) != 1:  # noqa: ASYNC110 - another thread's state
                await trio.sleep(0.02)
        # The relay still serves: a new client subscribes and gets data.
        async with client(live_stack.url) as ws:
            await subscribe(ws, CHANNEL, id=99)
            message = await receive(ws)
            assert message["channel"] == CHANNEL
        # And the bystander is still streaming, without a gap.
        last, _, _ = live_stack.bystander.state()
        assert last is not None
        with trio.fail_after(5):
            while (live_stack.bystander.state()[0] or 0) < last + 5:  # noqa: ASYNC110
                await trio.sleep(0.02)

    trio.run(afterwards)
    _, received, problems = live_stack.bystander.state()
    assert not problems, problems
    assert received > 50, received
