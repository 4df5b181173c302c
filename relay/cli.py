"""The ``relay`` command: serve, demo, simulate, tail."""

from __future__ import annotations

import argparse
import errno
import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import trio

from relay import logs

if TYPE_CHECKING:
    from relay.config import RelayConfig
    from relay.server.relay import Relay

log = logging.getLogger("relay")

DEMO_PORT = 8765
DEMO_SIM_PORT = 8766
EXAMPLE_CONFIG = "examples/relay.toml"
EXAMPLE_KEY_MARK = "EXAMPLE-KEY"
"""Part of each API key in examples/relay.toml, so that a relay still using one can say so."""

DESCRIPTION = "A WebSocket fan-out relay for real-time market data."

EPILOG = f"""\
first run:
  relay demo                 the synthetic market and a relay in front of it, on
                             ws://127.0.0.1:{DEMO_PORT}/ws, open to anonymous clients
  relay tail ws://127.0.0.1:{DEMO_PORT}/ws sim:trades:BTC-USD
                             in another terminal: print each message of a channel

with a configuration file:
  relay simulate             the synthetic market alone, on 127.0.0.1:{DEMO_SIM_PORT}
  relay serve --config {EXAMPLE_CONFIG}
                             a relay in front of it, with API keys (see the file)

--log-level and --log-format may also follow the command (relay serve --log-format json).
'relay COMMAND --help' describes each command; docs/configuration.md every configuration key.
"""

NO_CONFIG = f"""\
relay serve: which configuration? Give one with --config, for example the commented example
in the repository, a relay in front of the synthetic market:

  relay simulate                               (in another terminal: the market it connects to)
  relay serve --config {EXAMPLE_CONFIG}

or, with no file at all, the market and a relay in one process:

  relay demo

Every key is described in docs/configuration.md.
"""

_LISTEN_ERRORS = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (they hold command lines), wider option columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def _host(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_log_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The log options, on the main parser (with defaults) and again on each command (without,
    so that ``relay serve --log-format json`` works as well as ``relay --log-format json
    serve``, and a command's value wins only when it is given)."""
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="info" if defaults else argparse.SUPPRESS,
        metavar="LEVEL",
        help="debug, info, warning or error (default: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text" if defaults else argparse.SUPPRESS,
        metavar="FORMAT",
        help="text: one readable line per event; json: one JSON object per line, every field "
        "of the event included (default: text). Logs go to stderr.",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    _add_log_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    log_options = argparse.ArgumentParser(add_help=False)
    _add_log_options(log_options, defaults=False)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=_Formatter,
            # tail prints messages and keys prints keys: neither logs
            parents=[] if name in ("tail", "keys") else [log_options],
        )

    serve = command(
        "serve",
        "run the relay from a TOML configuration",
        "Run the relay from a TOML configuration file (every key: docs/configuration.md).\n\n"
        "  relay serve --config examples/relay.toml\n"
        "  relay serve --config examples/relay.toml --port 9000\n\n"
        "SIGINT or SIGTERM stops it: clients get close code 1001 and the process exits 0.\n"
        "SIGHUP reloads the configuration and the key file without dropping connections\n"
        "(keys, tiers and [auth]; other sections need a restart).\n\n"
        "--workers N runs N relay processes sharing the port, as nodes of a cluster: it needs\n"
        "[cluster] redis_url. The first process supervises them and passes signals on.",
    )
    serve.add_argument(
        "--config", metavar="FILE", help=f"the configuration file, e.g. {EXAMPLE_CONFIG}"
    )
    serve.add_argument(
        "--host", type=_host, help="listen on this address instead of the file's [server] host"
    )
    serve.add_argument(
        "--port",
        type=_port,
        help="listen on this port instead of the file's [server] port (0: any free port)",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="run N relay processes sharing the port (SO_REUSEPORT), restarted if they fail; "
        "they are cluster nodes, so N > 1 needs [cluster] redis_url (default: 1)",
    )
    # Marks a process started by --workers: it shares the port with its siblings.
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    demo = command(
        "demo",
        "run the synthetic market and a relay in front of it, in one process",
        "Run the synthetic market and a relay in front of it, in one process, over real "
        "loopback sockets;\nanonymous clients may subscribe to every sim:* channel. "
        "Ctrl-C stops it.",
    )
    demo.add_argument(
        "--port", type=_port, default=DEMO_PORT, help="relay port (default: %(default)s)"
    )
    demo.add_argument(
        "--sim-port", type=_port, default=DEMO_SIM_PORT, help="market port (default: %(default)s)"
    )
    demo.add_argument(
        "--rate", type=_positive, default=5.0, help="trades per second per symbol (default: 5)"
    )
    demo.add_argument("--host", type=_host, default="127.0.0.1", help="(default: %(default)s)")

    sim = command(
        "simulate",
        "run the synthetic market alone",
        f"Run the synthetic market alone (docs/simulator.md), as the upstream of {EXAMPLE_CONFIG}.",
    )
    sim.add_argument("--port", type=_port, default=DEMO_SIM_PORT, help="(default: %(default)s)")
    sim.add_argument("--host", type=_host, default="127.0.0.1", help="(default: %(default)s)")
    sim.add_argument(
        "--rate", type=_positive, default=5.0, help="trades per second per symbol (default: 5)"
    )
    sim.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD", help="(default: %(default)s)")
    sim.add_argument("--seed", type=int, default=1, help="(default: %(default)s)")

    tail = command(
        "tail",
        "subscribe to channels and print each message",
        "Subscribe to channels and print each message: data on stdout, one message a line, "
        "other events on stderr.\n\n"
        f"  relay tail ws://127.0.0.1:{DEMO_PORT}/ws sim:trades:BTC-USD sim:book:ETH-USD\n"
        f"  relay tail --key KEY ws://127.0.0.1:{DEMO_PORT}/ws sim:book:BTC-USD | jq .",
    )
    tail.add_argument("url", help=f"ws://HOST:PORT/ws, e.g. ws://127.0.0.1:{DEMO_PORT}/ws")
    tail.add_argument("channels", nargs="+", metavar="CHANNEL", help="e.g. sim:trades:BTC-USD")
    tail.add_argument("--key", help="API key (sent as Authorization: Bearer KEY)")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N data messages")
    tail.add_argument(
        "--cafile",
        metavar="FILE",
        help="PEM file of the CA certificates a wss:// relay's certificate is checked against "
        "(default: the system's, or SSL_CERT_FILE)",
    )

    keys = command(
        "keys",
        "add, list or revoke API keys in the key file",
        "Manage the key file ([auth] key_file): it holds a hash of each key, never the key.\n\n"
        f"  relay keys add alice --tier pro --config {EXAMPLE_CONFIG}\n"
        f"  relay keys list --config {EXAMPLE_CONFIG}\n"
        f"  relay keys revoke alice --config {EXAMPLE_CONFIG}\n\n"
        "A running relay notices the change within a second: a revoked key's connections are\n"
        "closed with 1008.",
    )
    keys_actions = keys.add_subparsers(dest="keys_action", title="actions", metavar="ACTION")
    file_options = argparse.ArgumentParser(add_help=False)
    where = file_options.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="the configuration naming the key file")
    where.add_argument("--file", metavar="PATH", help="the key file itself")
    add = keys_actions.add_parser(
        "add", help="add a key and print its secret, once", parents=[file_options]
    )
    add.add_argument("name", help="the key's name, shown in logs")
    add.add_argument("--tier", required=True, help="the key's tier ([tiers.NAME])")
    keys_actions.add_parser(
        "list", help="list the keys (never their secrets)", parents=[file_options]
    )
    revoke = keys_actions.add_parser("revoke", help="remove a key", parents=[file_options])
    revoke.add_argument("name")
    return parser


def run_keys(args: argparse.Namespace) -> int:
    """``relay keys``: 0 on success, 2 on a usage or file problem (said on stderr)."""
    from relay.config import ConfigError, load_config
    from relay.keyfile import add_key, read_key_file, revoke_key

    def fail(message: str) -> int:
        print(f"relay keys: {message}", file=sys.stderr)
        return 2

    tiers = None
    path = args.file
    if args.config is not None:
        try:
            config = load_config(args.config)
        except (ConfigError, OSError) as exc:
            return fail(f"bad configuration {args.config}:\n{exc}")
        if config.auth.key_file is None:
            return fail(f"{args.config} has no [auth] key_file: add one, or give --file")
        path, tiers = config.auth.key_file, config.tiers
    try:
        if args.keys_action == "add":
            if tiers is not None and args.tier not in tiers:
                return fail(f"unknown tier {args.tier!r} (defined: {', '.join(tiers)})")
            secret = add_key(path, args.name, args.tier, datetime.now(UTC))
            print(
                f"Added key {args.name!r} (tier {args.tier}) to {path}. Its secret follows; it is "
                "not stored anywhere and will not be shown again:",
                file=sys.stderr,
            )
            print(secret)
        elif args.keys_action == "list":
            entries = read_key_file(path)
            rows = [("NAME", "TIER", "CREATED", "HASH")] + [
                (e.name, e.tier, e.created.isoformat(), e.hash[:15] + "...") for e in entries
            ]
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        elif args.keys_action == "revoke":
            try:
                revoke_key(path, args.name)
            except KeyError:
                return fail(f"no key named {args.name!r} in {path}")
            print(f"Revoked key {args.name!r} in {path}.", file=sys.stderr)
        else:
            return fail("which action? add, list or revoke (relay keys --help)")
    except FileNotFoundError:
        return fail(f"no key file {path}: `relay keys add` creates it")
    except (ConfigError, ValueError, OSError) as exc:
        return fail(str(exc))
    return 0


#: Reloads rather than stops, where the platform has it.
SIGHUP: signal.Signals | None = getattr(signal, "SIGHUP", None)


async def until_signalled(
    run: Callable[..., Awaitable[object]],
    *args: object,
    on_hangup: Callable[[], object] | None = None,
) -> None:
    """Run until SIGINT or SIGTERM, then cancel: clients hear 1001, upstreams close. SIGHUP
    calls ``on_hangup`` (a reload) when one is given, and the run goes on.

    Explicit handlers rather than KeyboardInterrupt, because SIGTERM (docker stop, systemd) has
    none by default, and a process started in the background may inherit SIGINT ignored.
    """
    watched = [signal.SIGINT, signal.SIGTERM]
    if on_hangup is not None and SIGHUP is not None:
        watched.append(SIGHUP)
    async with trio.open_nursery() as nursery:

        async def run_then_stop() -> None:
            # A run that ends by itself (a worker whose supervisor is gone) ends the process.
            await run(*args)
            nursery.cancel_scope.cancel()

        with trio.open_signal_receiver(*watched) as signals:
            nursery.start_soon(run_then_stop)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == SIGHUP and on_hangup is not None:
                    log.info("%s: reloading", name, extra={"signal": name})
                    on_hangup()
                    continue
                log.info("%s: stopping", name, extra={"signal": name})
                nursery.cancel_scope.cancel()
                break


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _listen_failure(exc: BaseException) -> OSError | None:
    """The error, when ``exc`` is only a failure to open a listening socket (a port in use, an
    address not here, a host name that does not resolve), which deserves one line, not a
    traceback."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if not isinstance(leaf, OSError):
            return None
        if not (isinstance(leaf, socket.gaierror) or leaf.errno in _LISTEN_ERRORS):
            return None
    first = leaves[0]
    assert isinstance(first, OSError)
    return first


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_overrides(config: RelayConfig, args: argparse.Namespace) -> RelayConfig:
    """The command line's --host and --port win over the file's."""
    import attrs

    server = config.server
    if args.host is not None:
        server = attrs.evolve(server, host=args.host)
    if args.port is not None:
        server = attrs.evolve(server, port=args.port)
    return config if server is config.server else attrs.evolve(config, server=server)


def _load(args: argparse.Namespace) -> RelayConfig | None:
    """The configuration with the command line's overrides, or None after saying why not."""

    from relay.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except FileNotFoundError:
        print(
            f"relay: no configuration file {args.config!r} (from {os.getcwd()}).\n"
            f"The example is {EXAMPLE_CONFIG} in the repository; `relay demo` needs no file.",
            file=sys.stderr,
        )
        return None
    except (ConfigError, OSError) as exc:
        print(f"relay: bad configuration {args.config}:\n{exc}", file=sys.stderr)
        return None
    config = _with_overrides(config, args)
    example_keys = [i for i, k in enumerate(config.keys) if EXAMPLE_KEY_MARK in k.key]
    if example_keys and not _is_loopback(config.server.host):
        log.warning(
            "listening on %s, beyond this machine, with the public example API key(s) %s "
            "still in %s: replace them",
            config.server.host,
            ", ".join(f"keys[{i}]" for i in example_keys),
            args.config,
        )
    return config


def _reload(args: argparse.Namespace, relay: Relay) -> None:
    """SIGHUP: read the configuration again (with the same command-line overrides) and apply
    it; a file that cannot be read or is invalid is logged and changes nothing."""
    from relay.config import ConfigError, load_config

    try:
        config = _with_overrides(load_config(args.config), args)
    except (ConfigError, OSError) as exc:
        log.error("reload of %s refused, nothing changed:\n%s", args.config, exc)
        return
    relay.reload(config)


def _require_cluster(config: RelayConfig) -> None:
    """Workers are cluster nodes: without Redis each would be a relay of its own, with its own
    upstream connections, sequence numbers and published messages, behind one port."""
    if not config.cluster.enabled:
        print(
            "relay serve: --workers needs [cluster] redis_url in the configuration: each worker "
            "is a cluster node, and the nodes share their sources through Redis",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker: this ``relay serve`` (same file, overrides and log
    options), marked as a worker, with no --workers of its own."""
    argv = [sys.executable, "-m", "relay", "--log-level", args.log_level]
    argv += ["--log-format", args.log_format, "serve", "--config", args.config, "--worker"]
    if args.host is not None:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    return argv


def _serve_workers(args: argparse.Namespace, config: RelayConfig) -> int:
    """``relay serve --workers N`` with N > 1: checked here, once, then the supervisor."""
    from relay.workers import run_workers

    if config.server.port == 0:
        print(
            "relay serve: --workers needs a fixed port: with port 0 each worker would listen "
            "on a different one",
            file=sys.stderr,
        )
        return 2
    _require_cluster(config)
    log.info("starting %d workers on %s:%d", args.workers, config.server.host, config.server.port)
    return run_workers(_worker_argv(args), args.workers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "tail":
        from relay.tail import run

        return run(args.url, args.channels, args.key, args.count, args.cafile)
    if args.command == "keys":
        return run_keys(args)
    if args.command == "serve" and args.config is None:
        print(NO_CONFIG, file=sys.stderr, end="")
        return 2
    logs.configure(args.log_level, args.log_format)
    if args.command in ("serve", "demo", "simulate"):
        _raise_file_limit()
    if args.command in ("serve", "demo"):
        _tune_gc()
    where = ""
    ports = "--port"
    try:
        try:
            if args.command == "serve":
                from relay.config import ConfigError
                from relay.server.relay import Relay

                config = _load(args)
                if config is None:
                    return 2
                if args.workers > 1:
                    return _serve_workers(args, config)
                where = f"{config.server.host}:{config.server.port}"
                try:
                    relay = Relay(config, reuse_port=args.worker)
                except ConfigError as exc:
                    print(f"relay: bad configuration {args.config}:\n{exc}", file=sys.stderr)
                    return 2
                serve: Callable[[], Awaitable[object]] = relay.serve
                if args.worker:
                    from relay.workers import while_parent_lives

                    serve = partial(while_parent_lives, relay.serve, os.getppid())
                trio.run(partial(until_signalled, serve, on_hangup=partial(_reload, args, relay)))
            elif args.command == "demo":
                from relay.demo import run_demo

                where = f"{args.host}:{args.port} (relay) or {args.host}:{args.sim_port} (market)"
                ports = "--port or --sim-port"
                trio.run(until_signalled, run_demo, args.host, args.port, args.sim_port, args.rate)
            elif args.command == "simulate":
                from relay.sim.server import run_simulator

                where = f"{args.host}:{args.port}"
                symbols = [s for s in args.symbols.split(",") if s]
                trio.run(
                    until_signalled,
                    run_simulator,
                    args.host,
                    args.port,
                    symbols,
                    args.rate,
                    args.seed,
                )
        except (OSError, BaseExceptionGroup) as exc:
            failure = _listen_failure(exc)
            if failure is None:
                raise
            hint = ""
            if failure.errno == errno.EADDRINUSE:
                hint = f"; is another relay running? Choose another port with {ports}"
            log.error("cannot listen on %s: %s%s", where, failure.strerror or failure, hint)
            return 1
    except KeyboardInterrupt:
        pass  # a second Ctrl-C while stopping
    log.info("stopped")
    return 0


def _raise_file_limit() -> None:
    """Each client is a file descriptor; the usual soft limit of 1024 is far too low. A
    process-wide setting, so the command does it, not the library a program embeds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.debug("could not raise RLIMIT_NOFILE", exc_info=True)


GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic garbage collector's thresholds for a serving process (CPython's are 700, 10,
10). Each client holds a few hundred tracked objects (its task, coroutine frames, parser
state), so ten thousand clients are millions. Opening 3,000 connections that subscribe ran
435 collections costing 0.64 s of the 3.6 s the relay spent with the default thresholds, and
55 collections costing 0.2 s with these. Young cycles are still collected every 50,000
allocations, and full collections still run, about seventy times less often."""


def _tune_gc() -> None:
    """Fewer, larger collections, and none of them through the objects that exist before the
    relay starts (modules, classes, configuration: ``gc.freeze``). A process-wide setting, so
    the command does it, not the library a program embeds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


if __name__ == "__main__":
    sys.exit(main())
