"""What every Python peer shares: the synthetic market's topics and the relay's envelope
data, so that the peers differ only in how they fan out.

Book channels carry the market's deltas only: a peer keeps no book, so it has no snapshot to
give a client that subscribes later (the compression workload measures deltas on them).
"""

from __future__ import annotations

from typing import Any

STREAMS = {"trade": "trades", "ticker": "ticker", "depth": "book"}
TOPICS = {"trades": "trade", "ticker": "ticker", "book": "depth"}


def topic_for(channel: str) -> str | None:
    """``sim:trades:BTC-USD`` -> ``trade.BTC-USD`` (None for channels we do not carry)."""
    parts = channel.split(":")
    if len(parts) != 3 or parts[0] != "sim" or parts[1] not in TOPICS:
        return None
    return f"{TOPICS[parts[1]]}.{parts[2]}"


def normalize(msg: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Map one synthetic-market message to (relay channel, protocol data), or None."""
    topic = msg.get("topic")
    if not isinstance(topic, str):
        return None
    stream, _, symbol = topic.partition(".")
    body = msg["body"]
    if stream == "trade":
        data = {
            "symbol": symbol,
            "price": body["px"],
            "size": body["qty"],
            "side": "buy" if body["taker"] == "B" else "sell",
            "trade_id": body["id"],
            "ts": body["time"] // 1000,
        }
    elif stream == "ticker":
        data = {
            "symbol": symbol,
            "bid": body["bid"]["px"],
            "bid_size": body["bid"]["qty"],
            "ask": body["ask"]["px"],
            "ask_size": body["ask"]["qty"],
            "last": body["last"],
            "ts": body["time"] // 1000,
        }
    elif stream == "depth" and msg.get("kind") == "update":
        data = {
            "symbol": symbol,
            "bids": body["bids"],
            "asks": body["asks"],
            "ts": body["time"] // 1000,
        }
    else:
        return None
    return f"sim:{STREAMS[stream]}:{symbol}", data
