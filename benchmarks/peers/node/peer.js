// Comparison peer: Node.js with the `ws` library, `client.send` per subscriber.
//
// `ws` is what most teams reach for when they leave Python for fan-out, so it is the
// reference point for "would we be better off in Node?". Written the obvious way:
// one upstream connection, a Set of subscribers per channel, JSON.stringify once per
// message and send() to each open client.
//
// Run: node benchmarks/peers/node/peer.js --port 9200 --upstream ws://127.0.0.1:9101/ws
'use strict';

const WebSocket = require('ws');

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const port = Number(arg('port'));
const upstream = arg('upstream');
const STREAMS = { trade: 'trades', ticker: 'ticker' };
const TOPICS = { trades: 'trade', ticker: 'ticker' };
const upstreamTopics = new Set();

const subscribers = new Map(); // channel -> Set<WebSocket>
const seqs = new Map(); // channel -> last relay seq
let sessions = 0;

function subs(channel) {
  let set = subscribers.get(channel);
  if (!set) {
    set = new Set();
    subscribers.set(channel, set);
  }
  return set;
}

// 'sim:trades:BTC-USD' -> 'trade.BTC-USD' (null for channels we do not carry).
function topicFor(channel) {
  const parts = String(channel).split(':');
  if (parts.length !== 3 || parts[0] !== 'sim' || !TOPICS[parts[1]]) return null;
  return `${TOPICS[parts[1]]}.${parts[2]}`;
}

// Subscribe upstream the first time any client asks for a channel.
function want(channel) {
  const topic = topicFor(channel);
  if (topic === null || upstreamTopics.has(topic)) return;
  upstreamTopics.add(topic);
  if (up.readyState === WebSocket.OPEN) up.send(JSON.stringify({ op: 'subscribe', args: [topic] }));
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

const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port, path: '/ws' });

wss.on('connection', (ws) => {
  sessions += 1;
  const subscribed = new Set();
  ws.send(JSON.stringify({
    event: 'welcome', data: { session: String(sessions), heartbeat: 30, protocol: 1 },
  }));
  ws.on('message', (raw) => {
    let cmd;
    try {
      cmd = JSON.parse(raw);
    } catch {
      return;
    }
    const action = cmd.action;
    const channels = cmd.channels || [cmd.channel];
    if (action === 'subscribe' || action === 'unsubscribe') {
      for (const channel of channels) {
        if (action === 'subscribe') {
          subscribed.add(channel);
          subs(channel).add(ws);
          want(channel);
        } else {
          subscribed.delete(channel);
          subs(channel).delete(ws);
        }
        ws.send(JSON.stringify({ event: `${action}d`, data: { channel }, id: cmd.id }));
      }
    } else if (action === 'ping') {
      ws.send(JSON.stringify({ event: 'pong', id: cmd.id }));
    }
  });
  ws.on('close', () => {
    for (const channel of subscribed) subs(channel).delete(ws);
  });
  ws.on('error', () => {});
});

const up = new WebSocket(upstream);
up.on('open', () => {
  if (upstreamTopics.size) up.send(JSON.stringify({ op: 'subscribe', args: [...upstreamTopics] }));
});
up.on('message', (raw) => {
  const ts = Date.now();
  const mapped = normalize(JSON.parse(raw));
  if (!mapped) return;
  const [channel, data] = mapped;
  const seq = (seqs.get(channel) || 0) + 1;
  seqs.set(channel, seq);
  const text = JSON.stringify({ channel, seq, ts, data });
  for (const client of subs(channel)) {
    if (client.readyState === WebSocket.OPEN) client.send(text);
  }
});
up.on('close', () => process.exit(1));
up.on('error', (err) => {
  console.error(`upstream: ${err.message}`);
  process.exit(1);
});
