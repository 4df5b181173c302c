"""What cluster nodes say to each other through Redis: key names, and the byte formats of a
channel message and of the answer to a join.

One node (the source's lease holder) sequences and encodes each message once; every other node
relays the same payload bytes, so clients on different nodes receive identical envelopes. A
message on Pub/Sub therefore carries the payload as the holder encoded it, behind a fixed
binary header (seq, ts, flags, payload length) that a node reads without parsing JSON, and,
for channels with state (tickers, books, blocks), the channel's whole state as a snapshot
payload after it: a node then always holds the state at the seq it last relayed, and answers a
subscribe from its own memory.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs
import orjson

_HEADER = struct.Struct(">qqBI")
HEADER_SIZE = _HEADER.size

SNAPSHOT = 1
"""The payload is itself a snapshot (the update carried the channel's whole state)."""
STATE_IS_PAYLOAD = 2
"""The channel's state is the payload: no separate snapshot follows it."""


@attrs.frozen
class ClusterKeys:
    """Every Redis key and Pub/Sub channel of one cluster, under its prefix."""

    prefix: str

    @property
    def epoch(self) -> str:
        """The cluster's epoch: the numbering every node's clients share."""
        return f"{self.prefix}:epoch"

    @property
    def control(self) -> str:
        """Pub/Sub: a source's status changes and refusals, from its holder to every node."""
        return f"{self.prefix}:ctl"

    @property
    def wants_changed(self) -> str:
        """Pub/Sub: a node's wanted channels of a source changed (the message is the source)."""
        return f"{self.prefix}:wants-changed"

    @property
    def nodes(self) -> str:
        """Sorted set: each live node and the instant (ms) it counts as dead unless it renews."""
        return f"{self.prefix}:nodes"

    def connections(self, identity: str) -> str:
        """Hash: each node and its open connections of one key (an identity: a key's hash,
        a token's subject), for the tier's limit across the cluster."""
        return f"{self.prefix}:conns:{identity}"

    def state(self, channel: str) -> str:
        """Hash: a channel's last seq and ts, and its whole state for a channel that has one
        (the scripts build the same name)."""
        return f"{self.prefix}:chan:{channel}"

    def lease(self, source: str) -> str:
        return f"{self.prefix}:lease:{source}"

    def seqs(self, source: str) -> str:
        """Hash: each channel of a source and its last seq (what a new holder goes on from)."""
        return f"{self.prefix}:seqs:{source}"

    def wants(self, source: str) -> str:
        """Hash: each node and the channels of a source its clients hold (space-separated)."""
        return f"{self.prefix}:wants:{source}"

    def node(self, node: str) -> str:
        """Pub/Sub: answers to one node's joins, in order with the data it receives."""
        return f"{self.prefix}:node:{node}"

    def message_prefix(self) -> str:
        return f"{self.prefix}:msg:"

    def messages(self, channel: str) -> str:
        """Pub/Sub: a channel's messages."""
        return f"{self.prefix}:msg:{channel}"


@attrs.frozen
class ChannelMessage:
    seq: int
    ts: int
    flags: int
    payload: bytes
    """The envelope as the holder encoded it: the same bytes on every node."""
    state: bytes | None
    """The channel's whole state after this message, as a snapshot payload; None for a
    channel without state."""

    @property
    def snapshot(self) -> bool:
        return bool(self.flags & SNAPSHOT)


def message_header(seq: int, ts: int, snapshot: bool, state_is_payload: bool, size: int) -> bytes:
    flags = (SNAPSHOT if snapshot else 0) | (STATE_IS_PAYLOAD if state_is_payload else 0)
    return _HEADER.pack(seq, ts, flags, size)


def encode_message(
    seq: int, ts: int, payload: bytes, snapshot: bool, state: bytes | None
) -> tuple[bytes, bytes]:
    """(header, state part): the holder sends these and the payload to Redis, which joins them
    (header + payload + state part), so the payload crosses once."""
    same = state is not None and state is payload
    header = message_header(seq, ts, snapshot, same, len(payload))
    return header, b"" if same or state is None else state


def decode_message(data: bytes) -> ChannelMessage:
    """ValueError for bytes that are not a channel message (a foreign publisher on our keys)."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"a channel message is at least {HEADER_SIZE} bytes, got {len(data)}")
    seq, ts, flags, size = _HEADER.unpack_from(data)
    end = HEADER_SIZE + size
    if end > len(data):
        raise ValueError(f"the payload is said to be {size} bytes, {len(data) - HEADER_SIZE} came")
    payload = data[HEADER_SIZE:end]
    if flags & STATE_IS_PAYLOAD:
        state: bytes | None = payload
    else:
        state = data[end:] or None
    return ChannelMessage(seq, ts, flags, payload, state)


def envelope_parts(channel: str, ts: int, data_json: bytes, snapshot: bool) -> tuple[bytes, bytes]:
    """An envelope without its seq, as the two parts around it: for a message that Redis
    numbers (an application's publish, from any node), which the publish script joins around
    the seq it takes. The parts joined around a seq are exactly
    :func:`relay.core.protocol.encode_envelope`'s bytes, so every message of a channel looks
    the same whoever numbered it."""
    head = b'{"channel":' + orjson.dumps(channel) + b',"seq":'
    flag = b',"snapshot":true' if snapshot else b""
    return head, b',"ts":' + str(ts).encode() + flag + b',"data":' + data_json + b"}"


@attrs.frozen
class JoinedChannel:
    """One channel of a join's answer, read in Redis at one instant: the instant at which the
    node's Pub/Sub connection delivers the answer, in order with the channel's messages."""

    channel: str
    seq: int
    ts: int
    state: bytes | None
    missed: list[bytes] | None
    """For a resuming client: every payload after its ``since``, or None when Redis's history
    no longer holds them all (the client then gets the snapshot)."""


@attrs.frozen
class JoinAnswer:
    join: str
    channels: list[JoinedChannel]


def decode_join_answer(data: bytes) -> JoinAnswer:
    """The join script's answer (Lua's cjson). ValueError for anything else."""
    try:
        raw = orjson.loads(data)
        channels = [_joined(item) for item in _items(raw["channels"])]
        join = raw["id"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a join answer: {exc}") from None
    if not isinstance(join, str):
        raise ValueError("not a join answer: its id is not a string")
    return JoinAnswer(join, channels)


def _items(value: Any) -> list[Any]:
    # Lua's cjson writes an empty table as {}, never [].
    if value == {}:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _joined(item: dict[str, Any]) -> JoinedChannel:
    state = item["snap"]
    missed = item.get("missed", False)
    return JoinedChannel(
        channel=item["channel"],
        seq=int(item["seq"]),
        ts=int(item["ts"]),
        state=state.encode() if isinstance(state, str) else None,
        missed=None if missed is False else [m.encode() for m in _items(missed)],
    )
