// Comparison peer for the relay's Socket.IO endpoint: Node.js with `socket.io`, a room per
// channel and `io.of('/ws').to(channel).emit('data', envelope)` per message (`nsp` below).
//
// What a Node team would write to serve the relay's Socket.IO clients (namespace `/ws`,
// `auth.token`, `subscribe` with an acknowledgement, `subscribed` and `data` events with the
// relay's event bodies), written the obvious way: one upstream connection (upstream.js,
// shared with peer.js), socket.io's defaults (in-memory adapter, no compression), and a
// broadcast to the channel's room, which socket.io encodes once and writes to each socket.
//
// Run: node benchmarks/peers/node/sio_peer.js --port 9200 --upstream ws://127.0.0.1:9101/ws
'use strict';

const http = require('http');
const { Server } = require('socket.io');
const { arg, connectUpstream } = require('./upstream');

const port = Number(arg('port'));
// The seq numbering's epoch: seqs count from 1 in each process.
const epoch = `node-${process.pid}-${Date.now()}`;

const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false });
const nsp = io.of('/ws');

const market = connectUpstream(arg('upstream'), (channel, seq, ts, data) => {
  nsp.to(channel).emit('data', { channel, seq, ts, data });
});

// `auth: {token: KEY}` (or `{key: KEY}`) is accepted as given: the peer keeps no key list,
// as the relay's benchmark configuration admits every client.
nsp.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  socket.data.key = auth.token || auth.key || null;
  next();
});

// `{channel}` or `{channels: [...]}`, as the relay takes them.
function channelsOf(body) {
  if (body === null || typeof body !== 'object') return null;
  const channels = body.channels || [body.channel];
  return Array.isArray(channels) && channels.every((c) => typeof c === 'string') ? channels : null;
}

function badRequest(socket, ack) {
  const error = { code: 'bad_request', message: 'expected {channel} or {channels: [...]}' };
  if (typeof ack === 'function') ack({ error });
  else socket.emit('error', error);
}

nsp.on('connection', (socket) => {
  socket.on('subscribe', (body, ack) => {
    const channels = channelsOf(body);
    if (channels === null) return badRequest(socket, ack);
    for (const channel of channels) {
      socket.join(channel);
      market.want(channel);
      socket.emit('subscribed', { channel, seq: market.seq(channel), epoch });
    }
    if (typeof ack === 'function') ack({ subscribed: channels, failed: [] });
  });
  socket.on('unsubscribe', (body, ack) => {
    const channels = channelsOf(body);
    if (channels === null) return badRequest(socket, ack);
    for (const channel of channels) {
      socket.leave(channel);
      socket.emit('unsubscribed', { channel });
    }
    if (typeof ack === 'function') ack({ unsubscribed: channels, failed: [] });
  });
});

httpServer.listen(port, '127.0.0.1');
