"""Adapter for an Ethereum node's JSON-RPC over WebSocket (``eth_subscribe``), and over HTTP for
the blocks the relay has to fetch itself.

Channels: ``SOURCE:blocks`` (``newHeads``), ``SOURCE:pending`` (``newPendingTransactions``) and
``SOURCE:logs:<address>`` (``logs`` filtered by one contract address, lower-case ``0x`` hex): one
upstream subscription per channel. JSON-RPC correlates by ids, so this adapter keeps, per
connection, which request id asked for what and which subscription id feeds which channel; a new
connection starts with none (:meth:`EthereumAdapter.reset`).

Quantities come from the node as ``0x`` hex; the protocol wants block numbers, timestamps and log
indexes as integers and the other quantities as decimal strings (exact at any size, which a
JSON number is not for a client in JavaScript). Every field read is validated: a malformed
message becomes one counted :class:`UpstreamFormatError`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from relay.adapters.base import HttpRepair, HttpRequest
from relay.adapters.wire import describe, load_object, source_name
from relay.core.chain import FetchByNumber
from relay.core.model import (
    Ack,
    Head,
    Heartbeat,
    RepairKind,
    Reply,
    StreamKind,
    Update,
    UpstreamEvent,
    UpstreamFormatError,
)
from relay.core.source import NO_RULES, BookRules, FetchItem, FetchSnapshot

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_QUANTITY = re.compile(r"0x(?:0|[1-9a-fA-F][0-9a-fA-F]*)")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")

_Purpose = tuple[Literal["subscribe", "unsubscribe", "probe"], str | None]


class EthereumAdapter:
    """Translates between relay channels and ``eth_subscribe`` subscriptions."""

    def __init__(self, source: str, rpc_url: str | None, heartbeat_interval: float = 5.0) -> None:
        self.source = source_name(source)
        self._rpc_url = rpc_url
        self.heartbeat_interval = heartbeat_interval
        self._blocks = f"{source}:blocks"
        self._pending_txs = f"{source}:pending"
        self._logs_prefix = f"{source}:logs:"
        self._ids = itertools.count(1)
        self._requests: dict[int, _Purpose] = {}
        """Request id -> what it asked, until its answer comes."""
        self._subscriptions: dict[str, str] = {}
        """Subscription id -> channel, for the subscriptions this connection holds."""
        self._subscription_of: dict[str, str] = {}
        """Channel -> subscription id: the inverse, to unsubscribe."""
        self._abandoned: set[int] = set()
        """Subscribe requests given up before their answer: unsubscribed when it comes. By
        request, not channel: the channel may be subscribed again meanwhile, by a new request."""

    def channels(self) -> frozenset[str]:
        return frozenset({self._blocks, self._pending_txs})

    def kind(self, channel: str) -> StreamKind | None:
        if channel == self._blocks:
            return StreamKind.STATE  # the newest block is what a new subscriber gets
        if channel == self._pending_txs:
            return StreamKind.EVENT
        if channel.startswith(self._logs_prefix) and _ADDRESS.fullmatch(
            channel[len(self._logs_prefix) :]
        ):
            return StreamKind.EVENT
        return None

    def repair(self, channel: str) -> RepairKind:
        """Blocks are backfilled over HTTP; logs and pending transactions are events with no
        sequence of their own (a reorg's removed logs come from the node with ``removed``)."""
        return RepairKind.BACKFILL if channel == self._blocks else RepairKind.NONE

    def book_rules(self, channel: str) -> BookRules:
        """A node has no books."""
        return NO_RULES

    def reset(self) -> None:
        self._requests.clear()
        self._subscriptions.clear()
        self._subscription_of.clear()
        self._abandoned.clear()

    # Requests ------------------------------------------------------------------------------

    def _request(self, method: str, params: list[Any], purpose: _Purpose) -> str:
        request_id = next(self._ids)
        self._requests[request_id] = purpose
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        return orjson.dumps(body).decode()

    def _params(self, channel: str) -> list[Any]:
        if channel == self._blocks:
            return ["newHeads"]
        if channel == self._pending_txs:
            return ["newPendingTransactions"]
        if self.kind(channel) is None:
            raise KeyError(f"unknown channel {channel!r}")
        return ["logs", {"address": channel[len(self._logs_prefix) :]}]

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """One ``eth_subscribe`` per channel: each gets its own subscription id."""
        frames = []
        for channel in channels:
            params = self._params(channel)
            frames.append(self._request("eth_subscribe", params, ("subscribe", channel)))
        return frames

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        frames = []
        for channel in channels:
            subscription = self._subscription_of.pop(channel, None)
            if subscription is None:
                # Not confirmed yet: its id is unknown until the answer comes.
                self._abandoned.update(
                    request_id
                    for request_id, purpose in self._requests.items()
                    if purpose == ("subscribe", channel)
                )
                continue
            del self._subscriptions[subscription]
            frames.append(self._unsubscribe(channel, subscription))
        return frames

    def _unsubscribe(self, channel: str, subscription: str) -> str:
        return self._request("eth_unsubscribe", [subscription], ("unsubscribe", channel))

    def probe_frame(self) -> str:
        """``eth_blockNumber``: proves the node answers (a node that is idle between blocks
        sends nothing by itself), and its answer tells the relay which blocks exist."""
        return self._request("eth_blockNumber", [], ("probe", None))

    # Frames --------------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[UpstreamEvent]:
        message = load_object(frame)
        if message.get("method") == "eth_subscription":
            return self._notification(message)
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            raise UpstreamFormatError(f"neither a notification nor an answer: {describe(message)}")
        purpose = self._requests.pop(request_id, None)
        if purpose is None:
            raise UpstreamFormatError(f"answer to no request of ours (id {request_id})")
        what, channel = purpose
        # Only a subscribe's answer is about a channel's subscription: an unsubscribe's (even a
        # refused one) must not touch a new subscribe of the same channel.
        channels = (channel,) if what == "subscribe" and channel is not None else ()
        abandoned = request_id in self._abandoned
        self._abandoned.discard(request_id)
        error = message.get("error")
        if error is not None:
            return [Ack(False, f"{what} {channel or ''} refused: {describe(error)}", channels)]
        if "result" not in message:
            raise UpstreamFormatError(f"answer {request_id} without result or error")
        result = message["result"]
        if what == "probe":
            return [Head(self._blocks, _quantity(result, "eth_blockNumber result"))]
        assert channel is not None  # subscribe and unsubscribe always name their channel
        if what == "unsubscribe":
            return [Ack(True, f"unsubscribed {channel}", channels)]
        if not isinstance(result, str) or not result:
            raise UpstreamFormatError(f"subscription id must be a string, got {describe(result)}")
        if abandoned:
            return [
                Ack(True, f"subscribed {channel}", channels),
                Reply(self._unsubscribe(channel, result)),
            ]
        self._subscriptions[result] = channel
        self._subscription_of[channel] = result
        return [Ack(True, f"subscribed {channel}", channels)]

    def _notification(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        params = message.get("params")
        if not isinstance(params, dict) or "result" not in params:
            raise UpstreamFormatError("eth_subscription without params.result")
        subscription = params.get("subscription")
        if not isinstance(subscription, str):
            raise UpstreamFormatError(f"subscription id must be a string: {describe(subscription)}")
        channel = self._subscriptions.get(subscription)
        if channel is None:
            # A notification already on the wire when its subscription was dropped.
            return [Heartbeat()]
        result = params["result"]
        if channel == self._blocks:
            return [self.block_update(result)]
        if channel == self._pending_txs:
            return [Update(channel, {"tx_hash": _pending_hash(result)}, None, False)]
        return [Update(channel, _log(result), None, False)]

    def block_update(self, block: object) -> Update:
        """A block from ``newHeads`` or ``eth_getBlockBy*`` in the protocol's schema, with its
        number as the upstream seq."""
        if not isinstance(block, dict):
            raise UpstreamFormatError(f"block must be an object, got {describe(block)}")
        number = _quantity(block.get("number"), "block number")
        data = {
            "number": number,
            "hash": _hash(block.get("hash"), "block hash"),
            "parent_hash": _hash(block.get("parentHash"), "parentHash"),
            "timestamp": _quantity(block.get("timestamp"), "timestamp"),
            "gas_used": _decimal(block.get("gasUsed"), "gasUsed"),
            "gas_limit": _decimal(block.get("gasLimit"), "gasLimit"),
            "base_fee_per_gas": _decimal(block.get("baseFeePerGas"), "baseFeePerGas"),
        }
        return Update(self._blocks, data, number, False)

    # Repairs -------------------------------------------------------------------------------

    def http_repair(self, repair: FetchSnapshot | FetchItem) -> HttpRepair | None:
        """Blocks by number or hash over HTTP JSON-RPC, without their transactions. A node has
        no snapshot of a channel: blocks are backfilled one by one instead."""
        if isinstance(repair, FetchSnapshot) or self._rpc_url is None:
            return None
        if repair.channel != self._blocks:
            return None
        fetch = repair.fetch
        if isinstance(fetch, FetchByNumber):
            method, key = "eth_getBlockByNumber", hex(fetch.number)
        else:
            method, key = "eth_getBlockByHash", fetch.hash
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": [key, False]}
        return HttpRepair(HttpRequest("POST", self._rpc_url, body), self.parse_block_answer)

    def parse_block_answer(self, body: bytes) -> Update | None:
        """The block, or None when the node has no such block (``"result": null``)."""
        message = load_object(body)
        if message.get("error") is not None:
            raise UpstreamFormatError(f"block fetch refused: {describe(message['error'])}")
        if "result" not in message:
            raise UpstreamFormatError("block fetch answer without result")
        result = message["result"]
        return None if result is None else self.block_update(result)


def _quantity(value: object, what: str) -> int:
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise UpstreamFormatError(f"{what} must be a 0x quantity, got {describe(value)}")
    return int(value, 16)


def _decimal(value: object, what: str) -> str | None:
    """A quantity as a decimal string; a field the node does not give is None."""
    return None if value is None else str(_quantity(value, what))


def _hash(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise UpstreamFormatError(f"{what} must be a 32-byte 0x hash, got {describe(value)}")
    return value.lower()


def _pending_hash(result: object) -> str:
    # Some nodes can send the whole transaction; its hash is what the channel carries.
    if isinstance(result, dict):
        result = result.get("hash")
    return _hash(result, "pending transaction hash")


def _log(log: object) -> dict[str, Any]:
    if not isinstance(log, dict):
        raise UpstreamFormatError(f"log must be an object, got {describe(log)}")
    address = log.get("address")
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address.lower()):
        raise UpstreamFormatError(f"log address must be 0x hex, got {describe(address)}")
    topics = log.get("topics")
    if not isinstance(topics, list):
        raise UpstreamFormatError("log topics must be a list")
    data = log.get("data")
    if not isinstance(data, str) or not _DATA.fullmatch(data):
        raise UpstreamFormatError(f"log data must be 0x hex, got {describe(data)}")
    removed = log.get("removed", False)
    if not isinstance(removed, bool):
        raise UpstreamFormatError("log removed must be a boolean")
    return {
        "address": address.lower(),
        "topics": [_hash(topic, "log topic") for topic in topics],
        "data": data,
        "block_number": _quantity(log.get("blockNumber"), "log blockNumber"),
        "block_hash": _hash(log.get("blockHash"), "log blockHash"),
        "tx_hash": _hash(log.get("transactionHash"), "log transactionHash"),
        "log_index": _quantity(log.get("logIndex"), "log logIndex"),
        "removed": removed,
    }
