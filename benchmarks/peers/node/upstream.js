// What the Node peers share: their command line, and the one upstream connection to the
// synthetic market with the normalization of its messages into the relay's envelope data
// (trades and ticker).
//
// Used by peer.js (`ws`) and sio_peer.js (`socket.io`), so the two differ only in how they
// serve their clients.
'use strict';

const WebSocket = require('ws');

const STREAMS = { trade: 'trades', ticker: 'ticker' };
const TOPICS = { trades: 'trade', ticker: 'ticker' };

// The value of `--name VALUE` on the command line (exits when it is missing).
function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

// 'sim:trades:BTC-USD' -> 'trade.BTC-USD' (null for channels we do not carry).
function topicFor(channel) {
  const parts = String(channel).split(':');
  if (parts.length !== 3 || parts[0] !== 'sim' || !TOPICS[parts[1]]) return null;
  return `${TOPICS[parts[1]]}.${parts[2]}`;
}

// Map one synthetic-market message to [channel, data], or null.
function normalize(msg) {
  if (typeof msg.topic !== 'string') return null;
  const dot = msg.topic.indexOf('.');
  const stream = msg.topic.slice(0, dot);
  const symbol = msg.topic.slice(dot + 1);
  const b = msg.body;
  let data;
  if (stream === 'trade') {
    data = {
      symbol, price: b.px, size: b.qty, side: b.taker === 'B' ? 'buy' : 'sell',
      trade_id: b.id, ts: Math.floor(b.time / 1000),
    };
  } else if (stream === 'ticker') {
    data = {
      symbol, bid: b.bid.px, bid_size: b.bid.qty, ask: b.ask.px, ask_size: b.ask.qty,
      last: b.last, ts: Math.floor(b.time / 1000),
    };
  } else {
    return null;
  }
  return [`sim:${STREAMS[stream]}:${symbol}`, data];
}

// One upstream connection to the market at `url`. Each message it carries becomes
// `onMessage(channel, seq, ts, data)`: `ts` the receive time (ms), `seq` counted per channel
// from 1. The process exits when the connection fails or closes (the harness reports it).
// Returns `want(channel)`, which subscribes upstream the first time any client asks for a
// channel, and `seq(channel)`, the channel's last seq (0 before the first message).
function connectUpstream(url, onMessage) {
  const topics = new Set();
  const seqs = new Map(); // channel -> last seq
  const up = new WebSocket(url);
  up.on('open', () => {
    if (topics.size) up.send(JSON.stringify({ op: 'subscribe', args: [...topics] }));
  });
  up.on('message', (raw) => {
    const ts = Date.now();
    const mapped = normalize(JSON.parse(raw));
    if (!mapped) return;
    const [channel, data] = mapped;
    const seq = (seqs.get(channel) || 0) + 1;
    seqs.set(channel, seq);
    onMessage(channel, seq, ts, data);
  });
  up.on('close', () => process.exit(1));
  up.on('error', (err) => {
    console.error(`upstream: ${err.message}`);
    process.exit(1);
  });
  return {
    want(channel) {
      const topic = topicFor(channel);
      if (topic === null || topics.has(topic)) return;
      topics.add(topic);
      if (up.readyState === WebSocket.OPEN) {
        up.send(JSON.stringify({ op: 'subscribe', args: [topic] }));
      }
    },
    seq(channel) {
      return seqs.get(channel) || 0;
    },
  };
}

module.exports = { arg, topicFor, normalize, connectUpstream };
