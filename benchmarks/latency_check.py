"""An independent latency check: every message to every client, not a sample.

The harness's paced latency comes from about 50 sampling clients of the load generator
(``loadgen.py``), which count every other client's frames without reading them. This program
checks that figure another way: its own client processes (two, like the load generator's,
driven as one) open 1,000 clients (quick: 200) that each parse EVERY message, check that
every ``seq`` follows the one before (counting the missing and the out-of-order), and take
the latency of every message (receipt ``time.time()`` minus the envelope's ``ts``), with the
market paced at 100 and 250 msg/s on one trades channel. Servers, market and process
handling are the harness's own (``run.py``), imported.

    python benchmarks/latency_check.py [--quick] [--runs N] [--only relay,picows] [--skip-node]

It takes the harness's flags (``--workloads`` without ``latency`` skips it, ``--rates``
replaces 100,250) and writes ``latency_check.json`` and ``latency_check.md`` next to the
harness's results, with the harness's sampled p50/p99 from ``latest.json`` beside its own
where that file has them.

Run with ``--url``, it is the client process, driven by the harness over JSON lines.
"""

from __future__ import annotations

import array
import asyncio
import collections
import functools
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import command_loop  # sibling module: run as a script
import orjson
from loadgen import percentile
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

OPEN_CONCURRENCY = 64
"""Connects in flight at once: under the smallest listen backlog among the peers (100)."""


# ----------------------------------------------------------------------------------------------
# The client process


class Tally:
    """What every client saw since the last ``measure`` began."""

    def __init__(self) -> None:
        self.latencies = array.array("d")
        self.missing = 0
        self.out_of_order = 0
        self.lagged = 0
        self.closed = 0


class Checker(WSListener):
    """One client that parses every frame and checks its ``seq``."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.last_seq = 0
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = time.time() * 1000.0
        msg_type = frame.msg_type
        if msg_type != WSMsgType.TEXT:
            if msg_type == WSMsgType.CLOSE:  # answer it, as a client must
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        if "event" in message:
            if message["event"] == "subscribed" and not self.subscribed.done():
                self.subscribed.set_result(None)
            elif message["event"] == "lagged":
                self.tally.lagged += 1
            return
        seq, last = message["seq"], self.last_seq
        if last and seq != last + 1:
            if seq > last:
                self.tally.missing += seq - last - 1
            else:
                self.tally.out_of_order += 1
        self.last_seq = seq
        self.tally.latencies.append(now - message["ts"])

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.tally.closed += 1
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("disconnected during setup"))
            self.subscribed.exception()


class CheckerClients:
    def __init__(self, url: str) -> None:
        self.url = url
        self.tally = Tally()
        self.clients: list[tuple[WSTransport, Checker]] = []

    async def cmd_open(self, n: int, channel: str) -> dict[str, Any]:
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)
        request = orjson.dumps({"action": "subscribe", "channel": channel, "id": 1})

        async def one() -> None:
            async with sem:
                checker = Checker(self.tally)
                transport, _ = await ws_connect(lambda: checker, self.url)
                self.clients.append((transport, checker))
                transport.send(WSMsgType.TEXT, request)
                async with asyncio.timeout(30.0):
                    await checker.subscribed

        await asyncio.gather(*(one() for _ in range(n)))
        return {"opened": len(self.clients)}

    async def cmd_measure(self, seconds: float, raw: bool = False) -> dict[str, Any]:
        """Every client's messages over a window: counts, and the latency percentiles
        (``raw``: with the latencies as a histogram in tenths of a millisecond, for the
        harness to merge several processes'; a list of every latency would be a million
        numbers at 250 msg/s)."""
        self.tally = tally = Tally()
        for _, checker in self.clients:
            checker.tally = tally
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        for _, checker in self.clients:
            checker.tally = Tally()  # later frames do not touch the figures below
        lat = sorted(tally.latencies)
        extra: dict[str, Any] = {}
        if raw:
            tenths = collections.Counter(round(x * 10) for x in lat)
            extra["histogram"] = {str(k): v for k, v in tenths.items()}  # JSON keys are text
        return {
            **extra,
            "seconds": elapsed,
            "clients": len(self.clients),
            "messages": len(lat),
            "deliveries_per_s": len(lat) / elapsed,
            "missing": tally.missing,
            "out_of_order": tally.out_of_order,
            "lagged_events": tally.lagged,
            "closed": tally.closed,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "p999_ms": percentile(lat, 99.9),
            "max_ms": lat[-1] if lat else None,
        }

    async def dispatch(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "open":
            return await self.cmd_open(cmd["n"], cmd["channel"])
        if cmd["cmd"] == "measure":
            return await self.cmd_measure(cmd["seconds"], cmd.get("raw", False))
        raise ValueError(f"unknown command {cmd['cmd']!r}")


async def client_main(url: str) -> None:
    from command_loop import serve_commands  # sibling modules: run as a script

    clients = CheckerClients(url)
    await serve_commands(clients.dispatch, {"pid": os.getpid()})
    for transport, _ in clients.clients:
        transport.disconnect(graceful=False)


# ----------------------------------------------------------------------------------------------
# The harness side


def histogram_percentile(counts: dict[int, int], q: float) -> float | None:
    """Nearest-rank percentile (as ``loadgen.percentile``) of latencies counted in tenths of
    a millisecond, in milliseconds."""
    total = sum(counts.values())
    if not total:
        return None
    index = min(total - 1, max(0, int(q / 100.0 * total + 0.5) - 1))
    seen = 0
    for tenths in sorted(counts):
        seen += counts[tenths]
        if seen > index:
            return tenths / 10
    raise AssertionError("unreachable: the index is below the total")


def merge_check_measures(answers: list[dict[str, Any]]) -> dict[str, Any]:
    counts: collections.Counter[int] = collections.Counter()
    for answer in answers:
        counts.update({int(k): v for k, v in answer["histogram"].items()})
    summed = ("clients", "messages", "deliveries_per_s", "missing", "out_of_order",
              "lagged_events", "closed")  # fmt: skip
    return {
        "ok": True,
        "seconds": max(a["seconds"] for a in answers),
        **{key: sum(a[key] for a in answers) for key in summed},
        "p50_ms": histogram_percentile(counts, 50),
        "p99_ms": histogram_percentile(counts, 99),
        "p999_ms": histogram_percentile(counts, 99.9),
        "max_ms": max(counts) / 10 if counts else None,
    }


@functools.cache
def checker_pool() -> type:
    """The checker's processes driven as one, by the harness's pool (imported late: the
    client process does not load the harness)."""
    import run

    class CheckerPool(run.LoadGenPool):
        SPLIT = {"open": "n"}

        def prepare(self, cmd: dict[str, Any]) -> dict[str, Any]:
            return {**cmd, "raw": True} if cmd["cmd"] == "measure" else cmd

        def merge(self, name: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
            if name == "measure":
                return merge_check_measures(answers)
            return run.merge_sums(answers)

    return CheckerPool


def check(session: Any, rates: tuple[int, ...]) -> dict[str, Any]:
    """Open the checking clients, then measure a window at each rate."""
    import run

    p = session.profile
    opened = session.L.call(180.0, cmd="open", n=p.check_clients, channel=run.CHANNEL)
    steps = []
    for rate in rates:
        session.report.status(f"latency check: {session.impl.name} at {rate} msg/s")
        session.set_rate(rate)
        time.sleep(p.check_warmup)
        step = session.L.call(p.check_seconds + 120.0, cmd="measure", seconds=p.check_seconds)
        step.pop("ok", None)
        step.update(rate=rate, offered_per_s=rate * opened["opened"])
        steps.append(step)
    session.M.post("/control/pause")
    return {"clients": opened["opened"], "steps": steps}


def check_window(session: Any, rate: int) -> dict[str, Any]:
    """One window of the alternating check (``run.run_alternating``): from a paused market,
    the warm-up and a measured window at ``rate``, with the server's CPU over it."""
    import run

    p = session.profile
    session.set_rate(rate)
    time.sleep(p.check_warmup)
    cpu0 = session.S.cpu()
    step: dict[str, Any] = session.L.call(
        p.check_seconds + 120.0, cmd="measure", seconds=p.check_seconds
    )
    step.pop("ok", None)
    step["cpu_server"] = (session.S.cpu() - cpu0) / step["seconds"]
    result: dict[str, Any] = session.window_done(run.rated(step, rate))
    return result


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians (and spread) over the runs, per implementation and rate."""
    import report

    out: dict[str, Any] = {}
    for impl in results["order"]:
        rates: dict[str, Any] = {}
        for rate in results["rates"]:
            steps = [
                st
                for run in results["runs"]
                if (w := report.workload(run, impl, "latency")) is not None
                for st in w["steps"]
                if st["rate"] == rate
            ]
            if steps:
                rates[str(rate)] = {
                    key: report.over_runs(st[key] for st in steps)
                    for key in ("p50_ms", "p99_ms", "p999_ms", "deliveries_per_s", "offered_per_s")
                } | {
                    "missing": [st["missing"] for st in steps],
                    "out_of_order": [st["out_of_order"] for st in steps],
                }
        out[impl] = rates
    return out


def sampled(out: Path) -> dict[str, Any]:
    """The harness's sampled paced figures from ``latest.json`` in ``out`` (if any)."""
    try:
        latest = json.loads((out / "latest.json").read_text())
    except (OSError, ValueError):
        return {}
    summary: dict[str, Any] = latest.get("summary", {})
    return {impl: s["paced"]["steps"] for impl, s in summary.items() if s and "paced" in s}


def markdown(results: dict[str, Any]) -> str:
    import report

    harness = results["harness_sampled"]
    lines = [
        "# Independent latency check",
        "",
        f"{results['clients']:,} clients in {results['processes']} process(es), each reading "
        "every message and "
        f"checking every `seq`; latency = receipt - envelope `ts`, of every message. "
        f"{len(results['runs'])} run(s), finished {results['finished']}; medians over the runs, "
        "spread = min to max (and as a % of the median). `sampled` columns: the harness's "
        "figures (about 50 sampling clients) from latest.json, when it has that rate.",
        "",
        "| implementation | rate msg/s | deliveries/s | p50 ms | p99 ms | p99 spread | p99.9 ms "
        "| missing (each run) | out of order | sampled p50 | sampled p99 |",
        "|---|---:|---:|---:|---:|---|---:|---|---|---:|---:|",
    ]
    for impl, rates in results["summary"].items():
        if not rates:
            why = report.why_missing(results, impl, "latency")
            lines.append(report.md_row(impl, why, *["-"] * 9))
            continue
        for rate, st in rates.items():
            theirs = harness.get(impl, {}).get(rate, {})
            lines.append(
                report.md_row(
                    impl,
                    rate,
                    report.cell(st["deliveries_per_s"]),
                    report.cell(st["p50_ms"], report.fmt_ms),
                    report.cell(st["p99_ms"], report.fmt_ms),
                    report.spread(st["p99_ms"], report.fmt_ms),
                    report.cell(st["p999_ms"], report.fmt_ms),
                    ", ".join(str(m) for m in st["missing"]),
                    ", ".join(str(m) for m in st["out_of_order"]),
                    report.cell(theirs.get("p50_ms"), report.fmt_ms),
                    report.cell(theirs.get("p99_ms"), report.fmt_ms),
                )
            )
    alt = results.get("alternating")
    if alt:
        lines += [
            "",
            "## The same clients in alternating windows",
            "",
            f"After each run's sessions the relay and the peers that come near 100 msg/s are "
            f"all started at once, each with its market, process and {results['clients']:,} "
            "checking clients, and take turns, one window each per round (the order rotating), "
            "everything quiet between windows, as in the harness's alternating workload: "
            "figures over all windows of all runs, median (min to max); `relay - peer` is the "
            "relay's figure less the peer's in the same round, with the rounds in which the "
            "relay was at or below.",
            "",
            *report.alternating_rows(alt),
            "",
            alternating_verdict(alt),
        ]
    return "\n".join([*lines, ""])


def alternating_verdict(alt: dict[str, Any]) -> str:
    """The harness's alternating-windows comparison (relay against the best peer that held
    the rate), on the check's windows, as one line."""
    import report

    lines: list[str] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        verdict = "no peer to compare" if ok is None else ("yes" if ok else "no")
        lines.append(f"Relay at or below the best peer, alternating windows: {verdict}; {detail}")

    report.alternating_target(alt, add)
    return lines[0]


def report_ms(figure: dict[str, Any] | None) -> str:
    import report

    return report.cell(figure, report.fmt_ms)


def main(argv: list[str] | None = None) -> int:
    import report
    import run

    args = run.parse_args(argv)
    if args.workloads and "latency" not in args.workloads:
        print("latency check: not among --workloads; skipped")
        return 0
    profile = run.chosen_profile(args)
    rates = args.rates or profile.check_rates
    # Its clients speak the WebSocket protocol: the Socket.IO servers only when named (to say so).
    selected = [i for i in run.chosen_impls(args) if i.protocol == "ws" or i.name in args.only]
    run.raise_nofile_limit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "profile": profile.name,
        "clients": profile.check_clients,
        "processes": profile.loadgen_processes,
        "rates": list(rates),
        "order": [i.name for i in selected],
        "runs": [],
    }
    steps = args.runs * (len(selected) + 1)
    with run.log_dir(args.keep_logs) as logs, run.Reporter(steps) as rep:
        for k in range(args.runs):
            entries: dict[str, Any] = {}
            for impl in run.rotated(selected, k):
                reason = impl.unavailable(args.skip_node)
                if impl.protocol != "ws":
                    reason = "skipped: the latency check speaks the WebSocket protocol only"
                if reason is not None:
                    entries[impl.name] = {"status": reason}
                    continue
                workdir = logs / f"check-run{k + 1}" / impl.name
                session = run.Session(
                    impl,
                    profile,
                    rep,
                    workdir,
                    client_script=Path(__file__),
                    client_pool=checker_pool(),
                )

                def body(entry: dict[str, Any], session: Any = session) -> None:
                    entry["workloads"]["latency"] = check(session, rates)

                entries[impl.name] = run.run_session(session, body)
                rep.advance()
            run_entry: dict[str, Any] = {"run": k + 1, "implementations": entries}
            if profile.alt_rounds:
                run_entry["alternating"] = run.run_alternating(
                    selected,
                    args.skip_node,
                    rates,
                    profile.alt_rounds,
                    k,
                    rep,
                    lambda impl, k=k: run.Session(
                        impl,
                        profile,
                        rep,
                        logs / f"check-run{k + 1}" / "alternating" / impl.name,
                        client_script=Path(__file__),
                        client_pool=checker_pool(),
                    ),
                    lambda session: session.L.call(
                        180.0, cmd="open", n=profile.check_clients, channel=run.CHANNEL
                    ),
                    check_window,
                )
            results["runs"].append(run_entry)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["summary"] = summarize(results)
    results["alternating"] = report.alternating_summary(results["runs"])
    results["harness_sampled"] = sampled(out)
    (out / "latency_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latency_check.md").write_text(markdown(results))
    print(f"latency check: {out / 'latency_check.md'}")
    if results["alternating"]:
        print(alternating_verdict(results["alternating"]))
    for impl, by_rate in results["summary"].items():
        for rate, st in by_rate.items():
            p50 = report_ms(st["p50_ms"])
            p99 = report_ms(st["p99_ms"])
            print(f"{impl} {rate} msg/s: p50 {p50} ms, p99 {p99} ms, missing {st['missing']}")
    return 0


if __name__ == "__main__":
    if "--url" in sys.argv:
        command_loop.run(client_main(sys.argv[sys.argv.index("--url") + 1]))
    else:
        sys.exit(main())
