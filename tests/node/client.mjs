// A WebSocket client on Node's `ws`, driven by the relay's end-to-end tests (tests/e2e/node_ws.py).
//
//   node client.mjs '{"url": "wss://127.0.0.1:PORT/ws", "ca": "ca.pem", "origin": "...",
//                     "headers": {"x-forwarded-for": "..."}}'
//
// Every line on stdin is sent as one text frame; the end of stdin closes with 1000. Everything
// that happens is printed on stdout as one JSON object a line, in order:
//   {"event": "open"}
//   {"event": "message", "data": <the frame's JSON>}
//   {"event": "refused", "status": 429, "headers": {...}, "body": "..."}   (an HTTP answer)
//   {"event": "error", "code": "DEPTH_ZERO_SELF_SIGNED_CERT", "message": "..."}
//   {"event": "close", "code": 1000, "reason": "..."}
// and the process exits 0 after the connection is over, whichever way it ended.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const options = JSON.parse(process.argv[2]);
const print = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const ws = new WebSocket(options.url, {
  headers: options.headers ?? {},
  origin: options.origin,
  ca: options.ca ? readFileSync(options.ca) : undefined,
  handshakeTimeout: 10000,
});

ws.on("open", () => {
  print({ event: "open" });
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => ws.send(line));
  lines.on("close", () => ws.close(1000, "done"));
});
ws.on("message", (data) => print({ event: "message", data: JSON.parse(data.toString()) }));
ws.on("unexpected-response", (request, response) => {
  let body = "";
  response.on("data", (chunk) => (body += chunk));
  response.on("end", () => {
    print({ event: "refused", status: response.statusCode, headers: response.headers, body });
    process.exit(0);
  });
});
ws.on("error", (error) => {
  print({ event: "error", code: error.code ?? null, message: error.message });
  process.exit(0);
});
ws.on("close", (code, reason) => {
  print({ event: "close", code, reason: reason.toString() });
  process.exit(0);
});
