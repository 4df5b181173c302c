"""``relay demo``: the synthetic market and a relay in one process, over real loopback sockets,
exactly as they would run apart in production."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from relay.config import demo_config
from relay.server.relay import Relay
from relay.sim.server import SimServer

SNIPPET = """\
  import trio, trio_websocket

  async def main():
      async with trio_websocket.open_websocket_url("{url}") as ws:
          await ws.send_message('{{"action":"subscribe","channel":"sim:trades:BTC-USD","id":1}}')
          while True:
              print(await ws.get_message())

  trio.run(main)
"""


async def run_demo(host: str, port: int, sim_port: int, rate: float) -> None:
    sim = SimServer(rate=rate)
    async with trio.open_nursery() as nursery:
        sim_port = await nursery.start(sim.serve, host, sim_port)
        relay = Relay(demo_config(port=port, sim_port=sim_port, host=host))
        port = await nursery.start(relay.serve)
        url = f"ws://{host}:{port}/ws"
        channels = "\n".join(f"  {c}" for c in relay.channels())
        print(
            f"relay demo: relay on {url}  (synthetic market on {host}:{sim_port})\n\n"
            f"Watch a stream, from another terminal{_activate_hint()}:\n"
            f"  relay tail {url} sim:trades:BTC-USD sim:ticker:BTC-USD\n\n"
            f"Or from Python:\n{SNIPPET.format(url=url)}\n"
            f"HTTP: http://{host}:{port}/healthz  /readyz  /metrics  /v1/snapshot/<channel>\n\n"
            f"Channels:\n{channels}\n\nCtrl-C stops.",
            file=sys.stderr,
            flush=True,
        )


def _activate_hint() -> str:
    """Where the ``relay`` command is, when this runs from a virtual environment: a new
    terminal needs it activated first."""
    if sys.prefix == sys.base_prefix:
        return ""
    activate = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin") / "activate"
    return f" (with the virtual environment active there: . {activate})"
