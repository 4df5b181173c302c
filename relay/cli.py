"""The ``relay`` command: serve, demo, simulate, tail."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

from relay import logs

DEMO_PORT = 8765
DEMO_SIM_PORT = 8766


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the relay from a TOML configuration")
    serve.add_argument("--config", required=True, help="path to relay.toml")

    demo = commands.add_parser(
        "demo", help="run the synthetic market and a relay in front of it, in one process"
    )
    demo.add_argument("--port", type=int, default=DEMO_PORT, help="relay port")
    demo.add_argument("--sim-port", type=int, default=DEMO_SIM_PORT, help="market port")
    demo.add_argument("--rate", type=float, default=5.0, help="trades per second per symbol")
    demo.add_argument("--host", default="127.0.0.1")

    sim = commands.add_parser("simulate", help="run the synthetic market alone")
    sim.add_argument("--port", type=int, default=DEMO_SIM_PORT)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--rate", type=float, default=5.0, help="trades per second per symbol")
    sim.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD")
    sim.add_argument("--seed", type=int, default=1)

    tail = commands.add_parser("tail", help="subscribe to channels and print each message")
    tail.add_argument("url", help="ws://HOST:PORT/ws")
    tail.add_argument("channels", nargs="+")
    tail.add_argument("--key", help="API key (sent as Authorization: Bearer)")
    tail.add_argument("--count", type=int, help="exit after this many data messages")
    return parser


async def until_signalled(run: Callable[..., Awaitable[object]], *args: object) -> None:
    """Run until SIGINT or SIGTERM, then cancel: clients hear 1001, upstreams close.

    Explicit handlers rather than KeyboardInterrupt, because SIGTERM (docker stop, systemd) has
    none by default, and a process started in the background may inherit SIGINT ignored.
    """
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            nursery.start_soon(run, *args)
            async for signum in signals:
                print(f"\nrelay: {signal.Signals(signum).name}, stopping", file=sys.stderr)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tail":
        from relay.tail import run

        return run(args.url, args.channels, args.key, args.count)
    logs.configure(args.log_level, args.log_format)
    try:
        if args.command == "serve":
            from relay.config import ConfigError, load_config
            from relay.server.relay import Relay

            try:
                config = load_config(args.config)
            except (ConfigError, OSError) as exc:
                print(f"relay: bad configuration {args.config}:\n{exc}", file=sys.stderr)
                return 2
            trio.run(until_signalled, Relay(config).serve)
        elif args.command == "demo":
            from relay.demo import run_demo

            trio.run(until_signalled, run_demo, args.host, args.port, args.sim_port, args.rate)
        elif args.command == "simulate":
            from relay.sim.server import run_simulator

            symbols = [s for s in args.symbols.split(",") if s]
            trio.run(
                until_signalled, run_simulator, args.host, args.port, symbols, args.rate, args.seed
            )
    except KeyboardInterrupt:
        pass  # a second Ctrl-C while stopping
    print("relay: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
