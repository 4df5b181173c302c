// A Socket.IO client on npm's socket.io-client, driven by the relay's end-to-end tests
// (tests/e2e/node_sio.py).
//
//   node sio_client.mjs '{"url": "http://127.0.0.1:PORT/ws", "auth": {"token": "KEY"},
//                         "transports": ["websocket"], "pings": false}'
//
// The URL's path is the namespace (`/ws`); `auth` and `transports` are optional (the client's
// defaults: no auth payload, long-polling then the upgrade to WebSocket). The client never
// reconnects. Every line on stdin is one command:
//   {"emit": "subscribe", "args": [{"channel": "..."}]}              an event, no acknowledgement
//   {"emit": "subscribe", "args": [{"channel": "..."}], "ack": "a1"} with one (see "ack" below)
//   {"disconnect": true}                                             the client disconnects
// and the end of stdin disconnects too. Everything that happens is printed on stdout as one
// JSON object a line, in order:
//   {"event": "open", "transport": "polling"}          the Engine.IO handshake is done
//   {"event": "connect", "id": "...", "transport": "polling"}     the namespace accepted us
//   {"event": "upgrade", "transport": "websocket"}     the engine moved to another transport
//   {"event": "server", "name": "data", "args": [...], "transport": "websocket"}  a server event
//   {"event": "ack", "id": "a1", "args": [...]}        the acknowledgement of an emit
//   {"event": "ping"}                                  an Engine.IO ping (only with "pings": true)
//   {"event": "connect_error", "message": "...", "data": {...}, "description": ...}
//   {"event": "disconnect", "reason": "...", "description": "...", "code": 4008}
// ("code": the WebSocket close code, when a WebSocket transport closed), and the process exits 0
// after a connect_error or a disconnect, whichever way the session ended.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const options = JSON.parse(process.argv[2]);
const print = (event) => process.stdout.write(JSON.stringify(event) + "\n");
// A JSON-friendly view of what socket.io-client gives as an error's or a close's description
// (a status code, a string, an Error, a CloseEvent...).
const describe = (value) => {
  if (value === undefined || value === null) return null;
  if (typeof value !== "object") return value;
  if (value instanceof Error) return value.message;
  if (typeof value.description === "string") return value.description;
  return String(value);
};

const socket = io(options.url, {
  auth: options.auth ?? undefined,
  transports: options.transports ?? undefined,
  reconnection: false,
  forceNew: true,
  timeout: 10000,
});
const transport = () => socket.io.engine?.transport?.name ?? null;

socket.io.on("open", () => {
  print({ event: "open", transport: transport() });
  socket.io.engine.on("upgrade", (upgraded) => print({ event: "upgrade", transport: upgraded.name }));
});
if (options.pings) socket.io.on("ping", () => print({ event: "ping" }));

socket.on("connect", () => print({ event: "connect", id: socket.id, transport: transport() }));
socket.onAny((name, ...args) => print({ event: "server", name, args, transport: transport() }));
socket.on("connect_error", (error) => {
  print({
    event: "connect_error",
    message: error.message,
    data: error.data ?? null,
    description: describe(error.description),
  });
  process.exit(0);
});
socket.on("disconnect", (reason, description) => {
  const code = description?.context?.code;
  print({
    event: "disconnect",
    reason,
    description: describe(description),
    code: typeof code === "number" ? code : null,
  });
  process.exit(0);
});

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const command = JSON.parse(line);
  if (command.disconnect) {
    socket.disconnect();
  } else if (command.ack !== undefined && command.ack !== null) {
    socket.emit(command.emit, ...(command.args ?? []), (...args) =>
      print({ event: "ack", id: command.ack, args }),
    );
  } else {
    socket.emit(command.emit, ...(command.args ?? []));
  }
});
lines.on("close", () => {
  socket.disconnect();
  process.exit(0);
});
