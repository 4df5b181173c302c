// Comparison peer: Node.js with the `ws` library, `client.send` per subscriber.
//
// `ws` is what most teams reach for when they leave Python for fan-out, so it is the
// reference point for "would we be better off in Node?". Written the obvious way:
// one upstream connection (upstream.js, shared with sio_peer.js), a Set of subscribers per
// channel, JSON.stringify once per message and send() to each open client.
//
// Run: node benchmarks/peers/node/peer.js --port 9200 --upstream ws://127.0.0.1:9101/ws
'use strict';

const WebSocket = require('ws');
const { arg, connectUpstream } = require('./upstream');

const port = Number(arg('port'));
const subscribers = new Map(); // channel -> Set<WebSocket>
let sessions = 0;

function subs(channel) {
  let set = subscribers.get(channel);
  if (!set) {
    set = new Set();
    subscribers.set(channel, set);
  }
  return set;
}

const market = connectUpstream(arg('upstream'), (channel, seq, ts, data) => {
  const text = JSON.stringify({ channel, seq, ts, data });
  for (const client of subs(channel)) {
    if (client.readyState === WebSocket.OPEN) client.send(text);
  }
});

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
          market.want(channel);
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
