"""The Ethereum adapter without a node: channels, JSON-RPC correlation, normalization, repairs."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.adapters.base import HttpRequest
from relay.adapters.ethereum import EthereumAdapter
from relay.core.chain import FetchByHash, FetchByNumber
from relay.core.model import (
    Ack,
    Head,
    Heartbeat,
    RepairKind,
    Reply,
    StreamKind,
    Update,
    UpstreamFormatError,
)
from relay.core.source import FetchItem, FetchSnapshot

ADDRESS = "0x" + "ab" * 20
LOGS = f"eth:logs:{ADDRESS}"
H1 = "0x" + "11" * 32
H2 = "0x" + "22" * 32
TOPIC = "0x" + "33" * 32
RPC = "http://127.0.0.1:8545"

HEAD = {
    "number": "0x1b4",
    "hash": H2,
    "parentHash": H1,
    "timestamp": "0x6553f100",
    "gasUsed": "0x5208",
    "gasLimit": "0x1c9c380",
    "baseFeePerGas": "0x7",
    "miner": "0x" + "00" * 20,
}
LOG = {
    "address": "0xABABABABABABABABABABABABABABABABABABABAB",
    "topics": [TOPIC],
    "data": "0x68656c6c6f",
    "blockNumber": "0x1b4",
    "blockHash": H2,
    "transactionHash": H1,
    "logIndex": "0x0",
    "removed": False,
}


@pytest.fixture
def adapter() -> EthereumAdapter:
    return EthereumAdapter("eth", RPC)


def frame(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def request_of(text: str) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(text)
    assert message["jsonrpc"] == "2.0"
    return message


def subscribed(adapter: EthereumAdapter, channel: str, subscription: str) -> None:
    (request,) = adapter.subscribe_frames([channel])
    answer = {"jsonrpc": "2.0", "id": request_of(request)["id"], "result": subscription}
    assert adapter.parse(frame(answer)) == [Ack(True, f"subscribed {channel}", (channel,))]


def notification(subscription: str, result: object) -> str:
    params = {"subscription": subscription, "result": result}
    return frame({"jsonrpc": "2.0", "method": "eth_subscription", "params": params})


def test_channels_kinds_and_repairs(adapter: EthereumAdapter) -> None:
    assert adapter.channels() == {"eth:blocks", "eth:pending"}
    assert adapter.kind("eth:blocks") is StreamKind.STATE
    assert adapter.kind("eth:pending") is StreamKind.EVENT
    assert adapter.kind(LOGS) is StreamKind.EVENT  # an open family: any contract address
    for bad in ("eth:logs:0xAB", f"eth:logs:{ADDRESS.upper()}", "eth:logs:", "eth:heads"):
        assert adapter.kind(bad) is None, bad
    assert adapter.kind("other:blocks") is None
    assert adapter.repair("eth:blocks") is RepairKind.BACKFILL
    assert adapter.repair(LOGS) is RepairKind.NONE
    with pytest.raises(ValueError):
        EthereumAdapter("a:b", RPC)


def test_subscribe_frames_one_request_per_channel(adapter: EthereumAdapter) -> None:
    frames = [request_of(f) for f in adapter.subscribe_frames(["eth:blocks", "eth:pending", LOGS])]
    assert [f["method"] for f in frames] == ["eth_subscribe"] * 3
    assert [f["params"] for f in frames] == [
        ["newHeads"],
        ["newPendingTransactions"],
        ["logs", {"address": ADDRESS}],
    ]
    assert len({f["id"] for f in frames}) == 3
    with pytest.raises(KeyError):
        adapter.subscribe_frames(["eth:nope"])


def test_notifications_are_routed_by_subscription_id(adapter: EthereumAdapter) -> None:
    subscribed(adapter, "eth:blocks", "0x1")
    subscribed(adapter, LOGS, "0x2")
    subscribed(adapter, "eth:pending", "0x3")
    (block,) = adapter.parse(notification("0x1", HEAD))
    assert block == Update(
        "eth:blocks",
        {
            "number": 436,
            "hash": H2,
            "parent_hash": H1,
            "timestamp": 0x6553F100,
            "gas_used": "21000",
            "gas_limit": "30000000",
            "base_fee_per_gas": "7",
        },
        436,
        False,
    )
    (log,) = adapter.parse(notification("0x2", LOG))
    assert log == Update(
        LOGS,
        {
            "address": ADDRESS,
            "topics": [TOPIC],
            "data": "0x68656c6c6f",
            "block_number": 436,
            "block_hash": H2,
            "tx_hash": H1,
            "log_index": 0,
            "removed": False,
        },
        None,
        False,
    )
    assert adapter.parse(notification("0x3", H1)) == [
        Update("eth:pending", {"tx_hash": H1}, None, False)
    ]
    # Nodes that send the whole transaction: its hash is what the channel carries.
    assert adapter.parse(notification("0x3", {"hash": H2, "nonce": "0x0"}))[0].data == {
        "tx_hash": H2
    }


def test_a_pre_london_block_has_null_base_fee(adapter: EthereumAdapter) -> None:
    subscribed(adapter, "eth:blocks", "0x1")
    old = {k: v for k, v in HEAD.items() if k != "baseFeePerGas"}
    (update,) = adapter.parse(notification("0x1", old))
    assert isinstance(update, Update) and update.data["base_fee_per_gas"] is None


def test_unsubscribe_uses_the_subscription_id(adapter: EthereumAdapter) -> None:
    subscribed(adapter, "eth:blocks", "0x9")
    (request,) = adapter.unsubscribe_frames(["eth:blocks"])
    message = request_of(request)
    assert message["method"] == "eth_unsubscribe" and message["params"] == ["0x9"]
    answer = frame({"jsonrpc": "2.0", "id": message["id"], "result": True})
    # An unsubscribe's answer names no channel: it must not touch a new subscribe of it.
    assert adapter.parse(answer) == [Ack(True, "unsubscribed eth:blocks", ())]
    # A notification already on the wire for it proves life and publishes nothing.
    assert adapter.parse(notification("0x9", HEAD)) == [Heartbeat()]


def test_unsubscribing_before_the_answer_unsubscribes_when_it_comes(
    adapter: EthereumAdapter,
) -> None:
    (request,) = adapter.subscribe_frames(["eth:blocks"])
    assert adapter.unsubscribe_frames(["eth:blocks"]) == []  # its id is not known yet
    answer = frame({"jsonrpc": "2.0", "id": request_of(request)["id"], "result": "0x4"})
    ack, reply = adapter.parse(answer)
    assert ack == Ack(True, "subscribed eth:blocks", ("eth:blocks",))
    assert isinstance(reply, Reply)
    unsubscribe = request_of(reply.frame)
    assert unsubscribe["method"] == "eth_unsubscribe" and unsubscribe["params"] == ["0x4"]
    assert adapter.parse(notification("0x4", HEAD)) == [Heartbeat()]


def test_a_refused_subscribe_names_its_channel(adapter: EthereumAdapter) -> None:
    (request,) = adapter.subscribe_frames(["eth:pending"])
    error = {"code": -32601, "message": "not supported"}
    answer = frame({"jsonrpc": "2.0", "id": request_of(request)["id"], "error": error})
    (ack,) = adapter.parse(answer)
    assert isinstance(ack, Ack) and not ack.ok and ack.channels == ("eth:pending",)
    assert "not supported" in ack.detail


def test_the_probe_answer_is_the_chain_height(adapter: EthereumAdapter) -> None:
    probe = request_of(adapter.probe_frame())
    assert probe["method"] == "eth_blockNumber"
    answer = frame({"jsonrpc": "2.0", "id": probe["id"], "result": "0x10"})
    assert adapter.parse(answer) == [Head("eth:blocks", 16)]
    probe = request_of(adapter.probe_frame())
    refused = frame({"jsonrpc": "2.0", "id": probe["id"], "error": {"code": -1}})
    (ack,) = adapter.parse(refused)
    assert isinstance(ack, Ack) and not ack.ok and ack.channels == ()


def test_reset_forgets_the_connections_ids(adapter: EthereumAdapter) -> None:
    """Ganache numbers subscriptions 0x1, 0x2, ... again on every connection."""
    subscribed(adapter, "eth:blocks", "0x1")
    (pending,) = adapter.subscribe_frames(["eth:pending"])
    adapter.reset()
    assert adapter.parse(notification("0x1", HEAD)) == [Heartbeat()]
    late = frame({"jsonrpc": "2.0", "id": request_of(pending)["id"], "result": "0x2"})
    with pytest.raises(UpstreamFormatError, match="no request of ours"):
        adapter.parse(late)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"jsonrpc": "2.0"}',
        '{"jsonrpc": "2.0", "id": 999, "result": "0x1"}',
        '{"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": "0x1"}}',
    ],
)
def test_malformed_frames_are_format_errors(adapter: EthereumAdapter, text: str) -> None:
    with pytest.raises(UpstreamFormatError):
        adapter.parse(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", 436),
        ("number", "0x"),
        ("number", "0x01"),
        ("hash", "0x12"),
        ("parentHash", None),
        ("timestamp", "-0x1"),
        ("gasUsed", "twelve"),
    ],
)
def test_malformed_blocks_are_format_errors(
    adapter: EthereumAdapter, field: str, value: object
) -> None:
    subscribed(adapter, "eth:blocks", "0x1")
    with pytest.raises(UpstreamFormatError):
        adapter.parse(notification("0x1", {**HEAD, field: value}))


@given(
    st.dictionaries(
        st.sampled_from(sorted(LOG)), st.none() | st.integers(-(2**63), 2**63 - 1) | st.text()
    )
)
def test_any_malformed_log_is_a_format_error_never_a_crash(changes: dict[str, Any]) -> None:
    adapter = EthereumAdapter("eth", RPC)
    subscribed(adapter, LOGS, "0x2")
    try:
        (update,) = adapter.parse(notification("0x2", {**LOG, **changes}))
    except UpstreamFormatError:
        return
    assert isinstance(update, Update) and update.data["address"] == ADDRESS


def test_blocks_are_fetched_over_http_json_rpc(adapter: EthereumAdapter) -> None:
    by_number = adapter.http_repair(FetchItem("eth:blocks", FetchByNumber(436)))
    assert by_number is not None
    assert by_number.request == HttpRequest(
        "POST",
        RPC,
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["0x1b4", False]},
    )
    by_hash = adapter.http_repair(FetchItem("eth:blocks", FetchByHash(H2)))
    assert by_hash is not None and by_hash.request.json["method"] == "eth_getBlockByHash"
    assert by_hash.request.json["params"] == [H2, False]
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": HEAD})
    fetched = by_number.parse(body)
    assert fetched is not None and fetched.seq == 436 and fetched.data["hash"] == H2
    assert by_number.parse(b'{"jsonrpc": "2.0", "id": 1, "result": null}') is None
    with pytest.raises(UpstreamFormatError):
        by_number.parse(b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32000}}')
    # Nothing else is repaired over HTTP, and nothing without an rpc_url.
    assert adapter.http_repair(FetchSnapshot("eth:blocks")) is None
    assert adapter.http_repair(FetchItem(LOGS, FetchByNumber(1))) is None
    no_rpc = EthereumAdapter("eth", None)
    assert no_rpc.http_repair(FetchItem("eth:blocks", FetchByNumber(1))) is None


def test_a_channel_subscribed_again_before_the_first_answer_gets_one_subscription(
    adapter: EthereumAdapter,
) -> None:
    """Subscribe, give up, subscribe again, then both answers: the first is unsubscribed at
    once, only the second feeds the channel (else every log would be published twice)."""
    (first,) = adapter.subscribe_frames([LOGS])
    assert adapter.unsubscribe_frames([LOGS]) == []
    (second,) = adapter.subscribe_frames([LOGS])
    answer_1 = frame({"jsonrpc": "2.0", "id": request_of(first)["id"], "result": "0xa"})
    _ack, reply = adapter.parse(answer_1)
    assert isinstance(reply, Reply) and request_of(reply.frame)["params"] == ["0xa"]
    answer_2 = frame({"jsonrpc": "2.0", "id": request_of(second)["id"], "result": "0xb"})
    assert adapter.parse(answer_2) == [Ack(True, f"subscribed {LOGS}", (LOGS,))]
    assert adapter.parse(notification("0xa", LOG)) == [Heartbeat()]
    assert len(adapter.parse(notification("0xb", LOG))) == 1
    (unsubscribe,) = adapter.unsubscribe_frames([LOGS])
    assert request_of(unsubscribe)["params"] == ["0xb"]


def test_a_subscription_id_that_is_not_a_string_is_malformed(adapter: EthereumAdapter) -> None:
    with pytest.raises(UpstreamFormatError):
        adapter.parse(notification([1], {}))  # type: ignore[arg-type]


# What the log says -------------------------------------------------------------------------------
# A refusal's Ack detail and a format error's text are all an operator sees of them.


def _error(adapter: EthereumAdapter, text: str) -> str:
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse(text)
    return str(caught.value)


def _answer(request: str, **fields: object) -> str:
    return frame({"jsonrpc": "2.0", "id": request_of(request)["id"], **fields})


def test_answers_name_what_is_wrong_with_them(adapter: EthereumAdapter) -> None:
    assert _error(adapter, '{"jsonrpc": "2.0"}') == (
        "neither a notification nor an answer: {'jsonrpc': '2.0'}"
    )
    assert (
        _error(adapter, '{"id": 999, "result": "0x1"}') == "answer to no request of ours (id 999)"
    )
    (request,) = adapter.subscribe_frames(["eth:blocks"])
    assert _error(adapter, _answer(request)) == "answer 1 without result or error"
    (request,) = adapter.subscribe_frames(["eth:blocks"])
    assert _error(adapter, _answer(request, result=5)) == "subscription id must be a string, got 5"
    (request,) = adapter.subscribe_frames(["eth:blocks"])
    assert (
        _error(adapter, _answer(request, result="")) == "subscription id must be a string, got ''"
    )
    assert _error(adapter, _answer(adapter.probe_frame(), result=16)) == (
        "eth_blockNumber result must be a 0x quantity, got 16"
    )


def test_refusals_name_the_request_and_the_nodes_error(adapter: EthereumAdapter) -> None:
    error = {"code": -32601, "message": "not supported"}
    (request,) = adapter.subscribe_frames(["eth:pending"])
    assert adapter.parse(_answer(request, error=error)) == [
        Ack(False, f"subscribe eth:pending refused: {error!r}", ("eth:pending",))
    ]
    assert adapter.parse(_answer(adapter.probe_frame(), error={"code": -1})) == [
        Ack(False, "probe  refused: {'code': -1}")
    ]


def test_notifications_name_what_is_wrong_with_them(adapter: EthereumAdapter) -> None:
    without_result = {"jsonrpc": "2.0", "method": "eth_subscription", "params": {}}
    assert _error(adapter, frame(without_result)) == "eth_subscription without params.result"
    assert _error(adapter, notification([1], {})) == (  # type: ignore[arg-type]
        "subscription id must be a string: [1]"
    )
    subscribed(adapter, "eth:pending", "0x3")
    assert _error(adapter, notification("0x3", "0x12")) == (
        "pending transaction hash must be a 32-byte 0x hash, got '0x12'"
    )


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("number", 436, "block number must be a 0x quantity, got 436"),
        ("hash", "0x12", "block hash must be a 32-byte 0x hash, got '0x12'"),
        ("parentHash", None, "parentHash must be a 32-byte 0x hash, got None"),
        ("timestamp", "-0x1", "timestamp must be a 0x quantity, got '-0x1'"),
        ("gasUsed", "twelve", "gasUsed must be a 0x quantity, got 'twelve'"),
        ("gasLimit", "0x01", "gasLimit must be a 0x quantity, got '0x01'"),
        ("baseFeePerGas", 7, "baseFeePerGas must be a 0x quantity, got 7"),
    ],
)
def test_a_malformed_block_names_its_field(
    adapter: EthereumAdapter, field: str, value: object, text: str
) -> None:
    subscribed(adapter, "eth:blocks", "0x1")
    assert _error(adapter, notification("0x1", {**HEAD, field: value})) == text


def test_a_block_that_is_not_an_object_is_named(adapter: EthereumAdapter) -> None:
    subscribed(adapter, "eth:blocks", "0x1")
    assert _error(adapter, notification("0x1", "x")) == "block must be an object, got 'x'"


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("address", "0x12", "log address must be 0x hex, got '0x12'"),
        ("topics", "x", "log topics must be a list"),
        ("topics", ["x"], "log topic must be a 32-byte 0x hash, got 'x'"),
        ("data", "0x1", "log data must be 0x hex, got '0x1'"),
        ("removed", "no", "log removed must be a boolean"),
        ("blockNumber", None, "log blockNumber must be a 0x quantity, got None"),
        ("blockHash", 1, "log blockHash must be a 32-byte 0x hash, got 1"),
        ("transactionHash", "", "log transactionHash must be a 32-byte 0x hash, got ''"),
        ("logIndex", "1", "log logIndex must be a 0x quantity, got '1'"),
    ],
)
def test_a_malformed_log_names_its_field(
    adapter: EthereumAdapter, field: str, value: object, text: str
) -> None:
    subscribed(adapter, LOGS, "0x2")
    assert _error(adapter, notification("0x2", {**LOG, field: value})) == text


def test_a_log_that_is_not_an_object_is_named(adapter: EthereumAdapter) -> None:
    subscribed(adapter, LOGS, "0x2")
    assert _error(adapter, notification("0x2", 1)) == "log must be an object, got 1"


def test_a_block_fetch_names_a_refusal_and_a_missing_result(adapter: EthereumAdapter) -> None:
    how = adapter.http_repair(FetchItem("eth:blocks", FetchByNumber(436)))
    assert how is not None
    with pytest.raises(UpstreamFormatError) as caught:
        how.parse(b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32000}}')
    assert str(caught.value) == "block fetch refused: {'code': -32000}"
    with pytest.raises(UpstreamFormatError) as caught:
        how.parse(b'{"jsonrpc": "2.0", "id": 1}')
    assert str(caught.value) == "block fetch answer without result"


def test_an_unknown_channel_is_named(adapter: EthereumAdapter) -> None:
    with pytest.raises(KeyError) as caught:
        adapter.subscribe_frames(["eth:logs:0x12"])
    assert caught.value.args == ("unknown channel 'eth:logs:0x12'",)


def test_defaults_and_request_ids() -> None:
    adapter = EthereumAdapter("eth", RPC)
    assert adapter.heartbeat_interval == 5.0
    # Ids count from 1 on every kind of request; the probe has an empty params list.
    assert request_of(adapter.probe_frame()) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_blockNumber",
        "params": [],
    }
    (subscribe,) = adapter.subscribe_frames(["eth:blocks"])
    assert request_of(subscribe)["id"] == 2


def test_a_log_is_removed_only_when_the_node_says_so(adapter: EthereumAdapter) -> None:
    subscribed(adapter, LOGS, "0x2")
    without = {k: v for k, v in LOG.items() if k != "removed"}
    (update,) = adapter.parse(notification("0x2", without))
    assert isinstance(update, Update) and update.data["removed"] is False
    (update,) = adapter.parse(notification("0x2", {**LOG, "removed": True}))
    assert isinstance(update, Update) and update.data["removed"] is True


def test_unsubscribing_an_unconfirmed_channel_still_unsubscribes_the_others(
    adapter: EthereumAdapter,
) -> None:
    subscribed(adapter, "eth:blocks", "0x1")
    adapter.subscribe_frames(["eth:pending"])  # not answered yet
    (request,) = adapter.unsubscribe_frames(["eth:pending", "eth:blocks"])
    assert request_of(request)["params"] == ["0x1"]


def test_the_unsubscribe_sent_for_an_abandoned_subscribe_is_answered_for_its_channel(
    adapter: EthereumAdapter,
) -> None:
    (request,) = adapter.subscribe_frames(["eth:blocks"])
    adapter.unsubscribe_frames(["eth:blocks"])
    _ack, reply = adapter.parse(_answer(request, result="0x4"))
    assert isinstance(reply, Reply)
    assert adapter.parse(_answer(reply.frame, result=True)) == [
        Ack(True, "unsubscribed eth:blocks")
    ]
