"""The harness's results, read: every headline figure over the runs (median, min-max and the
spread as a % of the median), the tables of ``latest.md``, the relay's must-show targets
checked on every run, and the plots.

A single run's figure moves by up to a third on two shared cores (benchmarks/README.md), so
nothing here rests on one run: tables show medians with their spread, and a target passes
only when it held in every run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * 1024
HELD_P99_MS = 50.0
HELD_DELIVERY_FRACTION = 0.95
ISO_ABS_FLOOR_MS = 2.0
"""Envelope ``ts`` has millisecond resolution, so p99 changes under 2 ms are noise."""
BURST_FLOOR = 600_000
BURST_VS_PICOWS = 3.0
HELD_RATE_FLOOR = 500
"""Highest paced rate held (msg/s on the channel) that every run must reach."""
IDLE_CEILING = 11 * KIB
LATENCY_RATES = (100, 250)
"""Rates at which the relay's p50 and p99 must be no higher than the best peer's."""

SOCKETIO_IMPLS = ("relay_sio", "node_sio")
"""The Socket.IO profile: the relay's Socket.IO endpoint and the Node socket.io server, whose
clients speak Socket.IO; compared with each other only (:func:`socketio_table`)."""

Figure = dict[str, Any]
"""One figure over the runs: ``median``, ``min``, ``max``, ``spread_pct``, ``values``."""


# ----------------------------------------------------------------------------------------------
# Over the runs


def over_runs(values: Iterable[float | None]) -> Figure | None:
    """Median, range and spread (max - min as a % of the median) of the runs' values; runs
    without the figure are left out, and None when no run has it."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    median = statistics.median(present)
    low, high = min(present), max(present)
    spread = (high - low) / median * 100.0 if median else None
    return {"median": median, "min": low, "max": high, "spread_pct": spread, "values": present}


def workload(run: dict[str, Any], impl: str, name: str) -> dict[str, Any] | None:
    entry = run["implementations"].get(impl, {})
    value: dict[str, Any] | None = entry.get("workloads", {}).get(name)
    return value


def per_run(
    runs: list[dict[str, Any]], impl: str, name: str, get: Callable[[dict[str, Any]], Any]
) -> list[Any]:
    """``get`` of the workload's result in every run that has it."""
    return [get(w) for run in runs if (w := workload(run, impl, name)) is not None]


def step_at(paced: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((s for s in paced["steps"] if s["rate"] == rate), None)


PACED_FIGURES = (
    "offered_per_s",
    "deliveries_per_s",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "e2e_p99_ms",
    "cpu_server",
)
STORM_TIMES = {"connected_s": "t_connected", "subscribed_s": "t_subscribed", "data_s": "t_data"}


def burst_cpu(key: str) -> Callable[[dict[str, Any]], float | None]:
    """The median over a run's bursts of a process's CPU during each (``loadgen_cpu``,
    ``server_cpu``), in cores; None in results from before it was measured."""

    def median(burst: dict[str, Any]) -> float | None:
        cores = [r[key] for r in burst["reps"] if key in r]
        return statistics.median(cores) if cores else None

    return median


def burst_idle(clients: bool) -> Callable[[dict[str, Any]], float | None]:
    """The median over a run's bursts of the server's CPU's idle share (``clients`` False)
    or of the clients' CPUs' mean idle share (True), from each burst's ``cpu_idle``. Pinned
    (``pin_burst``), the server runs on the lowest-numbered CPU and the load generator on the
    others, so these say which side set the pace: a load generator's process time counts
    neither the kernel's work on its CPU nor the market's, which shares that CPU, and
    read alone it showed the clients' side short of its core (0.83) when that core was
    full. None for results from before it was measured; the caller passes it only for
    pinned runs."""

    def median(burst: dict[str, Any]) -> float | None:
        shares = []
        for rep in burst["reps"]:
            idle = rep.get("cpu_idle") or {}
            cpus = sorted(idle, key=int)
            side = [idle[c] for c in (cpus[1:] if clients else cpus[:1])]
            if len(cpus) >= 2 and all(v is not None for v in side):
                shares.append(statistics.mean(side))
        return statistics.median(shares) if shares else None

    return median


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Every headline figure of every implementation over the runs."""
    runs = results["runs"]
    rates = results["profile"]["paced_rates"]
    pinned = results["profile"].get("pin_burst") is True
    out: dict[str, Any] = {}
    for impl in results["order"]:
        s: dict[str, Any] = {}

        def fig(name: str, get: Callable[[dict[str, Any]], Any], impl: str = impl) -> Any:
            return over_runs(per_run(runs, impl, name, get))

        s["burst"] = {
            "deliveries_per_s": fig("burst", lambda w: w["deliveries_per_s"]),
            "best_deliveries_per_s": fig("burst", lambda w: w["best_deliveries_per_s"]),
            "lost": fig("burst", lambda w: w["lost"]),
            "first_delivery_ms": fig(
                "burst",
                lambda w: statistics.median(
                    [r["first_delivery_ms"] for r in w["reps"] if r["first_delivery_ms"]] or [0]
                ),
            ),
            "server_cpu": fig("burst", burst_cpu("server_cpu")),
            "loadgen_cpu": fig("burst", burst_cpu("loadgen_cpu")),
            "server_core_idle": fig("burst", burst_idle(False)) if pinned else None,
            "clients_core_idle": fig("burst", burst_idle(True)) if pinned else None,
        }
        paced = per_run(runs, impl, "paced", lambda w: w)
        steps: dict[str, Any] = {}
        for rate in rates:
            at = [st for pc in paced if (st := step_at(pc, rate)) is not None]
            if at:
                entry: dict[str, Any] = {k: over_runs(st[k] for st in at) for k in PACED_FIGURES}
                entry.update(runs=len(at), held=sum(st["held"] for st in at))
                steps[str(rate)] = entry
        # A run in which no rate held counts as 0 msg/s: it held nothing.
        s["paced"] = {
            "runs": len(paced),
            "steps": steps,
            "max_rate_held": over_runs(pc["max_rate_held"] or 0 for pc in paced),
        }
        s["idle"] = {
            key: fig("idle", lambda w, key=key: w[key])  # type: ignore[misc]
            for key in ("bytes_per_connection", "rss_before", "rss_after", "connections")
        }
        s["storm"] = storm_summary(per_run(runs, impl, "storm", lambda w: w))
        s["isolation"] = {
            "p99_before_ms": fig("isolation", lambda w: w["baseline"]["p99_ms"]),
            "p99_after_ms": fig("isolation", lambda w: w["with_stalled"]["p99_ms"]),
            "p99_change": fig("isolation", lambda w: w["p99_change"]),
            "deliveries_before": fig("isolation", lambda w: w["baseline"]["deliveries_per_s"]),
            "deliveries_after": fig("isolation", lambda w: w["with_stalled"]["deliveries_per_s"]),
            "rss_growth_prefill": fig("isolation", lambda w: w["rss_growth_prefill"]),
            "rss_growth_window": fig("isolation", lambda w: w["rss_growth_window"]),
            "bounded": per_run(runs, impl, "isolation", lambda w: w["memory_bounded"]),
            "flood": per_run(runs, impl, "isolation", lambda w: w["prefill_note"]),
        }
        s["upstream"] = {
            "with_subscribers": per_run(runs, impl, "upstream", lambda w: w["connections_open"]),
            "with_idle": per_run(runs, impl, "idle", lambda w: w["upstream_connections"]),
        }
        out[impl] = s
    floors = [run["storm_floor"] for run in runs if "storm_floor" in run]
    out["storm_floor"] = storm_summary([f for f in floors if "timeline" in f])
    rows: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for row, entry in run.get("compression", {}).items():
            if (c := entry.get("workloads", {}).get("compression")) is not None:
                rows.setdefault(row, []).append(c)
    out["compression"] = {row: compression_summary(cs) for row, cs in rows.items()}
    out["alternating"] = alternating_summary(runs)
    return out


def storm_summary(storms: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A storm's times to the last client (connected, subscribed, first data), failures and
    the kernel's listen-queue counters, over the runs."""
    if not storms:
        return None
    out: dict[str, Any] = {
        key: over_runs(st["timeline"][t]["last"] for st in storms) for key, t in STORM_TIMES.items()
    }
    out["data_p50_s"] = over_runs(st["timeline"]["t_data"]["p50"] for st in storms)
    out["failed"] = over_runs(st["failed"] for st in storms)
    out["failures"] = [st["failures"] for st in storms]
    out["clients"] = storms[0]["clients"]
    out["server_cpu_seconds"] = over_runs(st["server_cpu_seconds"] for st in storms)
    out["loadgen_cpu"] = over_runs(st["loadgen_cpu"] for st in storms)
    out["listen_overflows"] = over_runs(st["kernel"].get("ListenOverflows") for st in storms)
    return out


ALTERNATING_FIGURES = (
    "deliveries_per_s",
    "p50_ms",
    "p99_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "cpu_server",
)


def alternating_summary(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The alternating light load, per rate and server: each figure over every window of
    every run (median, range), how many windows held the rate, and the relay's p50 and p99
    less each peer's in the same round (paired, so the machine's speed cancels out), with
    how many of those rounds had the relay at or below. None when it did not run."""
    windows = [w for run in runs for w in run.get("alternating", {}).get("windows", [])]
    if not windows:
        return None
    order: list[str] = []
    for run in runs:
        order += [i for i in run.get("alternating", {}).get("order", []) if i not in order]
    out: dict[str, Any] = {"order": order, "rates": {}}
    for rate in sorted({w["rate"] for w in windows}):
        at = [w for w in windows if w["rate"] == rate]
        rounds: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
        for k, run in enumerate(runs):
            for w in run.get("alternating", {}).get("windows", []):
                if w["rate"] == rate:
                    rounds.setdefault((k, w["round"]), {})[w["impl"]] = w
        servers: dict[str, Any] = {}
        for impl in order:
            mine = [w for w in at if w["impl"] == impl]
            if not mine:
                continue
            entry: dict[str, Any] = {
                k: over_runs(w.get(k) for w in mine) for k in ALTERNATING_FIGURES
            }
            entry.update(windows=len(mine), held=sum(w["held"] for w in mine))
            if impl != "relay":
                for key in ("p50_ms", "p99_ms"):
                    diffs = [
                        r["relay"][key] - r[impl][key]
                        for r in rounds.values()
                        if "relay" in r
                        and impl in r
                        and r["relay"][key] is not None
                        and r[impl][key] is not None
                    ]
                    entry[f"relay_minus_{key}"] = over_runs(diffs)
                    entry[f"relay_at_or_below_{key}"] = sum(d <= 0 for d in diffs)
            servers[impl] = entry
        out["rates"][str(rate)] = servers
    return out


def compression_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"negotiated": [c["negotiated"] for c in runs], "phases": {}}
    for kind in ("snapshot", "delta", "trade"):
        phases = [c["phases"][kind] for c in runs if kind in c["phases"]]
        if phases:
            out["phases"][kind] = {
                key: over_runs(ph.get(key) for ph in phases)
                for key in ("bytes_per_message", "cpu_us_per_message", "messages")
            }
            relay_count = [
                ph["relay_bytes_out"] / ph["wire_bytes"]
                for ph in phases
                if ph.get("relay_bytes_out") is not None and ph["wire_bytes"]
            ]
            out["phases"][kind]["relay_count_vs_clients"] = over_runs(relay_count)
    return out


# ----------------------------------------------------------------------------------------------
# Formatting


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_pct(value: float | None) -> str:
    """A fraction (a server's CPU in cores, 0.6) as a whole percentage ("60%")."""
    return "-" if value is None else f"{value:.0%}"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def med(figure: Figure | None) -> float | None:
    return None if figure is None else figure["median"]


def cell(figure: Figure | None, fmt: Callable[[float | None], str] = fmt_int) -> str:
    return fmt(med(figure))


def spread(figure: Figure | None, fmt: Callable[[float | None], str] = fmt_int) -> str:
    """``min to max (x%)`` over the runs; "-" without a figure."""
    if figure is None:
        return "-"
    pct = "-" if figure["spread_pct"] is None else f"{figure['spread_pct']:.0f}%"
    return f"{fmt(figure['min'])} to {fmt(figure['max'])} ({pct})"


def ratio(relay: float | None, other: float | None, name: str) -> str:
    """The "vs relay" cell: "-" on the relay's own row, where either side is missing, and for
    the Socket.IO peer (another protocol than the relay's row: see the Socket.IO profile)."""
    if name in ("relay", "node_sio") or relay is None or other is None or other <= 0:
        return "-"
    return f"relay / {name} = {relay / other:.2f}x"


def md_row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def is_peer(impl: str) -> bool:
    """A comparison server of the plain WebSocket protocol, not the relay in one of its
    configurations (``relay_*``) nor a Socket.IO server (:data:`SOCKETIO_IMPLS`)."""
    return impl != "relay" and not impl.startswith("relay_") and impl not in SOCKETIO_IMPLS


def why_missing(results: dict[str, Any], impl: str, name: str) -> str:
    """The first run's reason for a missing workload (status, error, or not run)."""
    for run in results["runs"]:
        entry = run["implementations"].get(impl, {})
        if entry.get("status", "ok") != "ok":
            return str(entry["status"])
        if name in entry.get("errors", {}):
            return str(entry["errors"][name])
    return "not run"


# ----------------------------------------------------------------------------------------------
# latest.md


def warmup_line(warmup: dict[str, Any] | None) -> list[str]:
    """The discarded warm-up session's bursts (run.py, ``Profile.warmup``), shown so a reader
    can see what run 1 would have started with; none of it is in the tables."""
    if not warmup:
        return []
    burst = warmup.get("workloads", {}).get("burst")
    if burst is None:
        return [
            f"Warm-up session before run 1 ({warmup['implementation']}, not counted): "
            f"{warmup.get('status', 'no bursts')}.",
            "",
        ]
    each = ", ".join(f"{r['deliveries_per_s'] / 1e6:.2f}M" for r in burst["reps"])
    return [
        f"Warm-up session before run 1 ({warmup['implementation']}, not counted): bursts of "
        f"{each} deliveries/s, median {fmt_int(burst['deliveries_per_s'])}.",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    """One table per workload, one row per implementation, medians over the runs."""
    profile = results["profile"]
    meta = results["meta"]
    summary = results["summary"]
    names = results["order"]
    nruns = len(results["runs"])
    lines = [
        "# Relay benchmark results",
        "",
        f"Run `{profile['name']}`, {nruns} run(s), finished {meta['finished']} on "
        f"{meta['machine']['cpu']} ({meta['machine']['cores']} cores), git "
        f"`{meta['machine']['git_commit']}`, {meta['seconds']:.0f} s. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["machine"]["versions"].items())
        + ".",
        "",
        "Every figure is the median over the runs (each run a fresh set of processes, the "
        "implementations interleaved, the order rotating by one each run); `spread` is min to "
        "max over the runs and (max - min) as a % of the median. Ratios are relay / peer of "
        "the medians; how to read them is in benchmarks/README.md. Per-run figures are in "
        "latest.json.",
        "",
    ]

    def missing(impl: str, name: str, ncols: int) -> str:
        return md_row(impl, why_missing(results, impl, name), *["-"] * (ncols - 2))

    def has(impl: str, name: str) -> bool:
        return any(workload(run, impl, name) is not None for run in results["runs"])

    relay = summary.get("relay", {})
    if any(has(i, "burst") for i in names):
        lines += [
            f"## Burst fan-out: {profile['clients']:,} clients x {profile['burst_m']:,} messages "
            "(higher is better)",
            "",
            "| implementation | deliveries/s | spread | best | lost (all runs) "
            "| first delivery ms | server CPU | load generator CPU | idle, server's core "
            "| idle, clients' core | vs relay |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        relay_burst = med(relay.get("burst", {}).get("deliveries_per_s"))
        for impl in names:
            b = summary[impl]["burst"]
            if b["deliveries_per_s"] is None:
                lines.append(missing(impl, "burst", 11))
                continue
            lines.append(
                md_row(
                    impl,
                    cell(b["deliveries_per_s"]),
                    spread(b["deliveries_per_s"]),
                    fmt_int(b["best_deliveries_per_s"]["max"]),
                    fmt_int(sum(b["lost"]["values"])),
                    cell(b["first_delivery_ms"], fmt_ms),
                    cell(b["server_cpu"], fmt_cores),
                    cell(b["loadgen_cpu"], fmt_cores),
                    cell(b["server_core_idle"], fmt_pct),
                    cell(b["clients_core_idle"], fmt_pct),
                    ratio(relay_burst, med(b["deliveries_per_s"]), impl),
                )
            )
        lines.append("")
        lines += warmup_line(results.get("warmup"))
    if any(has(i, "paced") for i in names):
        lines += paced_tables(results)
    if "relay_cluster" in names and "relay" in names:
        lines += cluster_table(results)
    if any(i in names for i in SOCKETIO_IMPLS):
        lines += socketio_table(results)
    if any(has(i, "idle") for i in names):
        lines += [
            f"## Idle connections: {profile['idle']:,} unsubscribed connections (lower is better)",
            "",
            "| implementation | connections | RSS before MiB | RSS after MiB | bytes/connection "
            "| spread | vs relay |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        relay_idle = med(relay.get("idle", {}).get("bytes_per_connection"))
        for impl in names:
            i = summary[impl]["idle"]
            if i["bytes_per_connection"] is None:
                lines.append(missing(impl, "idle", 7))
                continue
            mib = lambda v: "-" if v is None else f"{v / MIB:.1f}"  # noqa: E731
            lines.append(
                md_row(
                    impl,
                    cell(i["connections"]),
                    cell(i["rss_before"], mib),
                    cell(i["rss_after"], mib),
                    cell(i["bytes_per_connection"]),
                    spread(i["bytes_per_connection"]),
                    ratio(relay_idle, med(i["bytes_per_connection"]), impl),
                )
            )
        lines.append("")
    if any(has(i, "storm") for i in names):
        lines += storm_table(results)
    if any(has(i, "isolation") for i in names):
        lines += isolation_table(results)
    if summary.get("alternating"):
        lines += alternating_table(results)
    if summary.get("compression"):
        lines += compression_table(results)
    if any(has(i, "upstream") for i in names):
        lines += [
            "## Upstream connections (each run)",
            "",
            "| implementation | with subscribers | with idle connections too |",
            "|---|---|---|",
        ]
        for impl in names:
            u = summary[impl]["upstream"]
            if not u["with_subscribers"]:
                lines.append(missing(impl, "upstream", 3))
                continue
            lines.append(md_row(impl, u["with_subscribers"], u["with_idle"] or "-"))
        lines.append("")
    lines += ["## Must-show targets (relay)", ""]
    for t in results["targets"]:
        lines.append(f"- **{t['verdict']}** {t['name']}: {t['detail']}")
    if not results["targets"]:
        lines.append("- none checked: the relay did not run the workloads they need")
    failed = [
        f"- run {k + 1}, {name}: {entry['status']}"
        for k, run in enumerate(results["runs"])
        for name, entry in [*run["implementations"].items(), *run.get("compression", {}).items()]
        if entry.get("status", "ok") != "ok"
    ] + [
        f"- run {k + 1}, alternating, {name}: {status}"
        for k, run in enumerate(results["runs"])
        for name, status in run.get("alternating", {}).get("status", {}).items()
        if status != "ok"
    ]
    if failed:
        lines += ["", "## Not run or failed", "", *failed]
    lines.append("")
    return "\n".join(lines)


def paced_tables(results: dict[str, Any]) -> list[str]:
    profile = results["profile"]
    summary = results["summary"]
    lines = [
        f"## Paced fan-out: {profile['clients']:,} clients (latency = receipt - envelope ts)",
        "",
        "| implementation | rate msg/s | offered/s | deliveries/s | spread | p50 ms | p99 ms "
        "| p99 spread | p99.9 ms | e2e p99 ms | server CPU | held (runs) |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for impl in results["order"]:
        pc = summary[impl]["paced"]
        if not pc["runs"]:
            lines.append(md_row(impl, why_missing(results, impl, "paced"), *["-"] * 10))
            continue
        not_run = []
        for rate in profile["paced_rates"]:
            st = pc["steps"].get(str(rate))
            if st is None:
                not_run.append(str(rate))
                continue
            lines.append(
                md_row(
                    impl,
                    f"{rate:,}",
                    cell(st["offered_per_s"]),
                    cell(st["deliveries_per_s"]),
                    spread(st["deliveries_per_s"]),
                    cell(st["p50_ms"], fmt_ms),
                    cell(st["p99_ms"], fmt_ms),
                    spread(st["p99_ms"], fmt_ms),
                    cell(st["p999_ms"], fmt_ms),
                    cell(st["e2e_p99_ms"], fmt_ms),
                    cell(st["cpu_server"], fmt_pct),
                    f"{st['held']} of {st['runs']}",
                )
            )
        if not_run:
            what = "not run: saturated at a lower rate in every run"
            lines.append(md_row(impl, ", ".join(not_run), what, *["-"] * 9))
    lines += [
        "",
        f"Highest rate held (p99 < {HELD_P99_MS:.0f} ms and >= "
        f"{HELD_DELIVERY_FRACTION:.0%} of offered deliveries; 0 in a run where none held):",
        "",
        "| implementation | max rate held msg/s | spread | each run | vs relay |",
        "|---|---:|---|---|---|",
    ]
    relay_held = med(summary.get("relay", {}).get("paced", {}).get("max_rate_held"))
    for impl in results["order"]:
        held = summary[impl]["paced"]["max_rate_held"]
        if held is None:
            continue
        lines.append(
            md_row(
                impl,
                cell(held),
                spread(held),
                ", ".join(fmt_int(v) for v in held["values"]),
                ratio(relay_held, med(held), impl),
            )
        )
    return [*lines, ""]


def cluster_table(results: dict[str, Any]) -> list[str]:
    """What the cluster adds: the 2-node cluster (relay_cluster) against the single process
    (relay), medians of the same runs."""
    summary = results["summary"]
    one, two = summary["relay"], summary["relay_cluster"]
    burst_one = med(one["burst"]["deliveries_per_s"])
    burst_two = med(two["burst"]["deliveries_per_s"])
    lines = [
        "## Cluster profile: 2 nodes on Redis against one process",
        "",
        "The same clients and workloads through `relay serve --workers 2` with `[cluster]` "
        "(each message: holder -> Redis -> every node), beside the single process.",
        "",
        "| figure | one process | 2-node cluster | cluster / one | added |",
        "|---|---:|---:|---:|---:|",
    ]
    if burst_one and burst_two:
        lines.append(
            md_row(
                "burst deliveries/s",
                fmt_int(burst_one),
                fmt_int(burst_two),
                f"{burst_two / burst_one:.2f}x",
                "-",
            )
        )
    for rate in results["profile"]["paced_rates"]:
        a, b = one["paced"]["steps"].get(str(rate)), two["paced"]["steps"].get(str(rate))
        if a is None or b is None:
            continue
        for name, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
            x, y = med(a[key]), med(b[key])
            if x is None or y is None:
                continue
            lines.append(
                md_row(
                    f"paced {rate:,} msg/s {name} ms",
                    fmt_ms(x),
                    fmt_ms(y),
                    f"{y / x:.2f}x" if x else "-",
                    f"{y - x:+.1f}",
                )
            )
    return [*lines, ""]


def socketio_table(results: dict[str, Any]) -> list[str]:
    """The Socket.IO profile: the relay's Socket.IO endpoint (relay_sio) beside the Node
    socket.io server (node_sio), the same clients on both; medians and spread over the runs."""
    summary = results["summary"]
    names = results["order"]
    lines = [
        "## Socket.IO profile: the relay's Socket.IO endpoint against Node socket.io",
        "",
        f"{results['profile']['clients']:,} Socket.IO clients (websocket transport, namespace "
        "`/ws`, `auth.token`) on both; the same burst and paced workloads. `relay_sio / "
        "node_sio` is the ratio of the medians: above 1x the relay delivers more, for "
        "latencies below 1x the relay is faster.",
        "",
        "| figure | relay_sio | spread | node_sio | spread | relay_sio / node_sio |",
        "|---|---:|---|---:|---|---:|",
    ]
    missing = [  # on one line: a reason may hold the tail of a log
        f"`{impl}`: {' '.join(why_missing(results, impl, 'burst').split())}"
        for impl in SOCKETIO_IMPLS
        if impl not in names or summary[impl]["burst"]["deliveries_per_s"] is None
    ]

    def row(label: str, get: Callable[[dict[str, Any]], Any], fmt: Callable[..., str]) -> None:
        figs = [get(summary[i]) if i in names else None for i in SOCKETIO_IMPLS]
        if all(f is None for f in figs):
            return
        mine, theirs = (med(f) for f in figs)
        cells = [c for f in figs for c in (cell(f, fmt), spread(f, fmt))]
        share = f"{mine / theirs:.2f}x" if mine is not None and theirs else "-"
        lines.append(md_row(label, *cells, share))

    def paced(rate: int, key: str) -> Callable[[dict[str, Any]], Figure | None]:
        def get(s: dict[str, Any]) -> Figure | None:
            st = s["paced"]["steps"].get(str(rate))
            return None if st is None else st[key]

        return get

    row("burst deliveries/s", lambda s: s["burst"]["deliveries_per_s"], fmt_int)
    for rate in results["profile"]["paced_rates"]:
        row(f"paced {rate:,} msg/s deliveries/s", paced(rate, "deliveries_per_s"), fmt_int)
        row(f"paced {rate:,} msg/s p50 ms", paced(rate, "p50_ms"), fmt_ms)
        row(f"paced {rate:,} msg/s p99 ms", paced(rate, "p99_ms"), fmt_ms)
    row("highest paced rate held msg/s", lambda s: s["paced"]["max_rate_held"], fmt_int)
    if missing:
        lines += ["", "Not measured: " + "; ".join(missing) + "."]
    return [*lines, ""]


def storm_table(results: dict[str, Any]) -> list[str]:
    profile = results["profile"]
    summary = results["summary"]
    lines = [
        f"## Reconnect storm: {profile['storm_clients']:,} clients at once, each subscribing "
        f"and waiting for its first message (market at {profile['storm_rate']} msg/s; lower is "
        "better)",
        "",
        "Seconds from the start to the moment the last client had its 101, its `subscribed` "
        "and its first data message; `vs relay` is relay / peer of the last, so below 1x the "
        "relay was done sooner. The first row is the load generator's own floor: the same "
        "storm against a server that does nothing else.",
        "",
        "| implementation | listen backlog | all connected s | all subscribed s "
        "| all first data s | spread | median client s | failed (each run) "
        "| listen overflows | server CPU s | vs relay |",
        "|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|",
    ]
    relay_storm = summary.get("relay", {}).get("storm")
    relay_data = med(relay_storm["data_s"]) if relay_storm else None
    backlogs = {
        impl: entry.get("startup", {}).get("listen_backlog")
        for run in results["runs"]
        for impl, entry in run["implementations"].items()
    }
    floors = [run["storm_floor"] for run in results["runs"] if "storm_floor" in run]
    floor_backlog = floors[0].get("listen_backlog") if floors else None
    rows = [("load generator floor", summary.get("storm_floor"), floor_backlog)]
    rows += [(impl, summary[impl]["storm"], backlogs.get(impl)) for impl in results["order"]]
    for name, st, backlog in rows:
        if st is None:
            why = "not run" if name not in results["order"] else why_missing(results, name, "storm")
            lines.append(md_row(name, why, *["-"] * 9))
            continue
        failed = "; ".join(
            ", ".join(f"{n} {kind}" for kind, n in f.items()) or "0" for f in st["failures"]
        )
        lines.append(
            md_row(
                name,
                fmt_int(backlog),
                cell(st["connected_s"], fmt_s),
                cell(st["subscribed_s"], fmt_s),
                cell(st["data_s"], fmt_s),
                spread(st["data_s"], fmt_s),
                cell(st["data_p50_s"], fmt_s),
                failed,
                cell(st["listen_overflows"]),
                cell(st["server_cpu_seconds"], fmt_s),
                ratio(relay_data, med(st["data_s"]), name) if name in results["order"] else "-",
            )
        )
    return [*lines, ""]


def isolation_table(results: dict[str, Any]) -> list[str]:
    profile = results["profile"]
    lines = [
        f"## Slow-consumer isolation: {profile['clients']:,} clients at {profile['iso_rate']} "
        f"msg/s, plus {profile['iso_stalled']} that never read",
        "",
        "| implementation | p99 before ms | p99 with stalled ms | change | deliveries/s before "
        "| with stalled | RSS growth prefill MiB | RSS growth window MiB | bounded (each run) "
        "| flood |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    if profile.get("iso_rounds"):
        lines[1:1] = [
            "",
            f"Windows without and with the stalled clients alternate ({profile['iso_rounds']} "
            "with, each between two without); `before` and `with stalled` are the means of "
            "their windows' p99 (each window's is in the PASS/FAIL line and latest.json), "
            "`change` is with / before - 1, and the RSS figures are the stalled phase's "
            "closest to its bound.",
        ]
    for impl in results["order"]:
        iso = results["summary"][impl]["isolation"]
        if not iso["bounded"]:
            lines.append(md_row(impl, why_missing(results, impl, "isolation"), *["-"] * 8))
            continue
        change = med(iso["p99_change"])
        mib = lambda v: "-" if v is None else f"{v / MIB:.2f}"  # noqa: E731
        lines.append(
            md_row(
                impl,
                cell(iso["p99_before_ms"], fmt_ms),
                cell(iso["p99_after_ms"], fmt_ms),
                "-" if change is None else f"{change * 100:+.0f}%",
                cell(iso["deliveries_before"]),
                cell(iso["deliveries_after"]),
                cell(iso["rss_growth_prefill"], mib),
                cell(iso["rss_growth_window"], mib),
                ", ".join("yes" if b else "no" for b in iso["bounded"]),
                "; ".join(sorted(set(iso["flood"]))),
            )
        )
    return [*lines, ""]


def alternating_table(results: dict[str, Any]) -> list[str]:
    alt = results["summary"]["alternating"]
    profile = results["profile"]
    lines = [
        f"## Light load in alternating windows: {profile['clients']:,} clients per server, "
        "every server connected at once, taking turns",
        "",
        f"Each round gives every server one {profile['paced_seconds']:.0f}-s paced window "
        f"({profile['alt_rounds']} round(s) per run, the order rotating), its market paused "
        "and everything quiet between windows. Figures are over all windows of all runs: "
        "median (min to max). `relay - peer` is the relay's figure less the peer's in the same "
        "round, median (min to max), with the rounds in which the relay was at or below; "
        "latency = receipt - envelope `ts`, `e2e` = receipt - the market's event time.",
        "",
        *alternating_rows(alt),
        "",
    ]
    return lines


def alternating_rows(alt: dict[str, Any]) -> list[str]:
    """The alternating windows' table (:func:`alternating_summary`), one row per server and
    rate; the columns a kind of client did not measure (the check has no e2e) show "-"."""
    lines = [
        "| implementation | rate msg/s | windows (held) | deliveries/s | p50 ms | p99 ms "
        "| e2e p50 ms | e2e p99 ms | server CPU | relay - peer p50 ms | relay - peer p99 ms |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---|---|",
    ]

    def ranged(figure: Figure | None) -> str:
        if figure is None:
            return "-"
        return f"{fmt_ms(figure['median'])} ({fmt_ms(figure['min'])} to {fmt_ms(figure['max'])})"

    def paired(entry: dict[str, Any], key: str) -> str:
        figure = entry.get(f"relay_minus_{key}")
        if figure is None:
            return "-"
        n = len(figure["values"])
        return (
            f"{figure['median']:+.1f} ({figure['min']:+.1f} to {figure['max']:+.1f}); "
            f"{entry[f'relay_at_or_below_{key}']} of {n}"
        )

    for rate, servers in alt["rates"].items():
        for impl, e in servers.items():
            lines.append(
                md_row(
                    impl,
                    f"{int(rate):,}",
                    f"{e['windows']} ({e['held']})",
                    cell(e["deliveries_per_s"]),
                    ranged(e["p50_ms"]),
                    ranged(e["p99_ms"]),
                    cell(e["e2e_p50_ms"], fmt_ms),
                    cell(e["e2e_p99_ms"], fmt_ms),
                    cell(e["cpu_server"], fmt_pct),
                    paired(e, "p50_ms"),
                    paired(e, "p99_ms"),
                )
            )
    return lines


def compression_table(results: dict[str, Any]) -> list[str]:
    profile = results["profile"]
    lines = [
        f"## Compression: bytes on the wire and server CPU per delivery ({profile['comp_clients']}"
        " clients per channel)",
        "",
        "Rows: the server, whether permessage-deflate is on in it (relay), and whether the "
        "clients offer it. Bytes are counted by the clients as their sockets delivered them "
        "(frame headers included); a snapshot's bytes include its `subscribed` event. "
        "`relay count` is the relay's own `relay_bytes_out` over the clients' count (1.00 "
        "when they agree).",
        "",
        "| row | deflate negotiated (each run) | snapshot B | delta B | trade B "
        "| snapshot CPU µs | delta CPU µs | trade CPU µs | relay count |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = {
        row: entry for run in results["runs"] for row, entry in run.get("compression", {}).items()
    }
    for row, entry in rows.items():
        c = results["summary"]["compression"].get(row)
        if c is None:
            lines.append(md_row(row, entry.get("status", "failed"), *["-"] * 7))
            continue
        phases = c["phases"]

        def get(
            kind: str, key: str, fmt: Callable[[float | None], str], phases: Any = phases
        ) -> str:
            return cell(phases[kind][key], fmt) if kind in phases else "-"

        checks = [
            f"{kind} {fmt_s(med(ph['relay_count_vs_clients']))}"
            for kind, ph in phases.items()
            if ph["relay_count_vs_clients"] is not None
        ]
        lines.append(
            md_row(
                row,
                ", ".join(f"{n}/{2 * profile['comp_clients']}" for n in c["negotiated"]),
                get("snapshot", "bytes_per_message", fmt_int),
                get("delta", "bytes_per_message", fmt_int),
                get("trade", "bytes_per_message", fmt_int),
                get("snapshot", "cpu_us_per_message", fmt_ms),
                get("delta", "cpu_us_per_message", fmt_ms),
                get("trade", "cpu_us_per_message", fmt_ms),
                ", ".join(checks) or "-",
            )
        )
    return [*lines, ""]


# ----------------------------------------------------------------------------------------------
# Must-show targets


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The relay's must-show targets, each checked on every run (spreads and latencies on
    the medians); at quick scale they are indicative only."""
    quick = results["profile"]["name"] == "quick"
    scale = " [quick scale: indicative]" if quick else ""
    runs = results["runs"]
    summary = results["summary"]
    peers = [i for i in results["order"] if is_peer(i) and i in summary]
    out: list[dict[str, Any]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        out.append({"name": name, "pass": ok, "verdict": verdict, "detail": detail + scale})

    def each_run(
        label: str, name: str, check: Callable[[dict[str, Any]], tuple[bool, str]]
    ) -> None:
        """``check`` on the relay's ``name`` workload of every run; all must pass."""
        verdicts = []
        for k, run in enumerate(runs):
            w = workload(run, "relay", name)
            if w is None:
                verdicts.append((False, f"run {k + 1}: no result"))
            else:
                ok, text = check(w)
                verdicts.append((ok, f"run {k + 1}: {text}"))
        add(label, all(ok for ok, _ in verdicts), "; ".join(text for _, text in verdicts))

    def in_run(run: dict[str, Any]) -> Callable[[str, str], dict[str, Any] | None]:
        return lambda impl, name: workload(run, impl, name)

    if any(workload(run, "relay", "burst") for run in runs):
        details, oks = [], []
        for k, run in enumerate(runs):
            b, pb = in_run(run)("relay", "burst"), in_run(run)("picows", "burst")
            if b is None:
                oks.append(False)
                details.append(f"run {k + 1}: no result")
                continue
            x = b["deliveries_per_s"] / pb["deliveries_per_s"] if pb else None
            oks.append(
                b["deliveries_per_s"] >= BURST_FLOOR
                and b["lost"] == 0
                and (x is None or x >= BURST_VS_PICOWS)
            )
            details.append(
                f"run {k + 1}: {b['deliveries_per_s']:,.0f}/s, "
                + (f"{x:.1f}x picows" if x else "picows not measured")
                + f", lost {b['lost']}"
            )
        add(
            "burst",
            all(oks),
            f"need >= {BURST_FLOOR:,}/s, >= {BURST_VS_PICOWS:.0f}x picows and nothing lost in "
            "every run: " + "; ".join(details),
        )

    if any(workload(run, "relay", "paced") for run in runs):
        each_run(
            "paced held rate",
            "paced",
            lambda pc: (
                (pc["max_rate_held"] or 0) >= HELD_RATE_FLOOR,
                f"{pc['max_rate_held'] or 0} msg/s x {pc['clients']:,} clients",
            ),
        )
        out[-1]["detail"] = (
            f"need >= {HELD_RATE_FLOOR} msg/s held (p99 < {HELD_P99_MS:.0f} ms, >= "
            f"{HELD_DELIVERY_FRACTION:.0%} delivered) in every run: " + out[-1]["detail"]
        )
        if max(results["profile"]["paced_rates"]) < HELD_RATE_FLOOR:
            out[-1].update({"pass": None, "verdict": "SKIP"})
            out[-1]["detail"] = "the rates stepped through stop below it; " + out[-1]["detail"]
        latency_target(results, add)

    if summary.get("alternating"):
        alternating_target(summary["alternating"], add)

    spread_target(results, peers, add)

    if any(workload(run, "relay", "idle") for run in runs):
        each_run(
            "idle memory",
            "idle",
            lambda i: (
                i["bytes_per_connection"] is not None and i["bytes_per_connection"] <= IDLE_CEILING,
                "-"
                if i["bytes_per_connection"] is None
                else f"{i['bytes_per_connection'] / KIB:.1f} KiB x {i['connections']:,}",
            ),
        )
        out[-1]["detail"] = (
            f"need <= {IDLE_CEILING / KIB:.0f} KiB per idle connection: " + (out[-1]["detail"])
        )

    if any(workload(run, "relay", "isolation") for run in runs):
        each_run("isolation", "isolation", isolation_verdict)

    if any(workload(run, "relay", "upstream") for run in runs):

        def upstream(w: dict[str, Any]) -> tuple[bool, str]:
            return w["connections_open"] == 1, f"{w['connections_open']}"

        each_run("upstream connections", "upstream", upstream)
        idle_counts = summary["relay"]["upstream"]["with_idle"]
        out[-1]["pass"] = out[-1]["pass"] and all(c == 1 for c in idle_counts)
        out[-1]["verdict"] = "PASS" if out[-1]["pass"] else "FAIL"
        out[-1]["detail"] = (
            "need exactly 1 in every run; with subscribers: "
            + out[-1]["detail"]
            + f"; with idle connections too: {idle_counts or '-'}"
        )
    return out


def isolation_verdict(iso: dict[str, Any]) -> tuple[bool, str]:
    """p99 change < +20% (or < 2 ms), deliveries held on both sides, memory bounded."""
    change = iso["p99_change"]
    before, after = iso["baseline"]["p99_ms"], iso["with_stalled"]["p99_ms"]
    small = change is not None and (
        change < 0.20 or (after is not None and after - before < ISO_ABS_FLOOR_MS)
    )
    ok = bool(small and iso["memory_bounded"] and iso["deliveries_held"])
    return ok, (
        f"p99 {fmt_ms(before)} -> {fmt_ms(after)} ms{window_p99s(iso)} "
        f"({'-' if change is None else f'{change * 100:+.0f}%'}; need < +20% or "
        f"< {ISO_ABS_FLOOR_MS:.0f} ms), deliveries/s "
        f"{iso['baseline']['deliveries_per_s']:,.0f} -> "
        f"{iso['with_stalled']['deliveries_per_s']:,.0f} of {iso['offered_per_s']:,} "
        f"(need >= {HELD_DELIVERY_FRACTION:.0%} both), RSS "
        f"{iso['rss_growth_window'] / MIB:+.2f} MiB over the window while "
        f"{iso['sent_to_stalled_bytes'] / MIB:.2f} MiB went to stalled clients "
        f"(need <= {iso['memory_bound_bytes'] / MIB:.2f} MiB)"
    )


def window_p99s(iso: dict[str, Any]) -> str:
    """Each window's p99 in the order measured, when the isolation alternated windows (its
    before and after are their means); nothing for results from before it did."""
    windows = [w["p99_ms"] for w in iso.get("baseline_windows", [])]
    stalled = [phase["window"]["p99_ms"] for phase in iso.get("phases", [])]
    if not stalled:
        return ""
    order = []
    for i, p99 in enumerate(windows):
        order.append(fmt_ms(p99))
        if i < len(stalled):
            order.append(f"[{fmt_ms(stalled[i])}]")
    return f" (means of windows {', '.join(order)}; [stalled])"


PeerFigures = dict[str, tuple[dict[str, Any], int, int]]
"""Per peer at one rate: its figures (``p50_ms`` and ``p99_ms`` over runs or windows), in how
many of them it held the rate, and how many there were."""


def against_best_peer(
    at_rate: Callable[[int], tuple[dict[str, Any] | None, PeerFigures]],
) -> tuple[list[bool], list[str]]:
    """At each of the latency targets' rates, the relay's median p50 and p99 (``at_rate``
    gives its figures and the peers') against the best peer's median, among the peers that
    held that rate at least half the time (a peer that could not deliver the rate is no
    benchmark for latency at it): a verdict per comparison made, and a text per rate."""
    details, oks = [], []
    for rate in LATENCY_RATES:
        mine, peers = at_rate(rate)
        if mine is None:
            details.append(f"{rate} msg/s not measured")
            continue
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            theirs = {
                impl: value
                for impl, (figures, held, count) in peers.items()
                if held * 2 >= count and (value := med(figures[key])) is not None
            }
            relay = med(mine[key])
            if not theirs or relay is None:
                details.append(f"{label} at {rate}: no peer held it")
                continue
            best = min(theirs, key=lambda impl: theirs[impl])
            oks.append(relay <= theirs[best])
            details.append(f"{label} at {rate}: {relay:.1f} vs {best} {theirs[best]:.1f} ms")
    return oks, details


def latency_target(results: dict[str, Any], add: Callable[[str, bool | None, str], None]) -> None:
    """:func:`against_best_peer` on the paced workload's medians over the runs."""
    summary = results["summary"]

    def at_rate(rate: int) -> tuple[dict[str, Any] | None, PeerFigures]:
        peers = {
            impl: (st, st["held"], st["runs"])
            for impl in results["order"]
            if is_peer(impl) and (st := summary[impl]["paced"]["steps"].get(str(rate))) is not None
        }
        return summary["relay"]["paced"]["steps"].get(str(rate)), peers

    oks, details = against_best_peer(at_rate)
    add(
        "latency at low rates",
        all(oks) if oks else None,
        "need the relay's median p50 and p99 <= the best peer's median: " + "; ".join(details),
    )


def alternating_target(alt: dict[str, Any], add: Callable[[str, bool | None, str], None]) -> None:
    """:func:`against_best_peer` on the alternating windows: medians over each server's
    windows, a peer counted when it held the rate in at least half of its own."""

    def at_rate(rate: int) -> tuple[dict[str, Any] | None, PeerFigures]:
        servers = alt["rates"].get(str(rate), {})
        peers = {
            impl: (e, e["held"], e["windows"]) for impl, e in servers.items() if impl != "relay"
        }
        return servers.get("relay"), peers

    oks, details = against_best_peer(at_rate)
    add(
        "latency at low rates, alternating windows",
        all(oks) if oks else None,
        "need the relay's median over its windows <= the best peer's: " + "; ".join(details),
    )


def spread_target(
    results: dict[str, Any], peers: list[str], add: Callable[[str, bool | None, str], None]
) -> None:
    """The relay's run-to-run spread of the burst rate and of the highest rate held, no
    wider than any peer's (each peer with that figure in two runs or more)."""
    summary = results["summary"]
    if "relay" not in summary:
        return
    figures = {
        "burst": lambda s: s["burst"]["deliveries_per_s"],
        "held rate": lambda s: s["paced"]["max_rate_held"],
    }
    if all(get(summary["relay"]) is None for get in figures.values()):
        return
    details, oks = [], []
    for label, get in figures.items():
        mine = get(summary["relay"])
        if mine is None or len(mine["values"]) < 2:
            continue
        others = {
            p: f["spread_pct"]
            for p in peers
            if (f := get(summary[p])) is not None
            and len(f["values"]) >= 2
            and f["spread_pct"] is not None
        }
        ok = mine["spread_pct"] is not None and all(
            mine["spread_pct"] <= pct for pct in others.values()
        )
        oks.append(ok)
        theirs = ", ".join(f"{p} {pct:.0f}%" for p, pct in others.items()) or "no peer"
        details.append(f"{label}: relay {mine['spread_pct'] or 0:.0f}% vs {theirs}")
    add(
        "run-to-run spread",
        all(oks) if oks else None,
        "need the relay's (max - min) / median no wider than any peer's: "
        + ("; ".join(details) if details else "needs --runs 2 or more"),
    )


# ----------------------------------------------------------------------------------------------
# Plots


def plots(results: dict[str, Any], out: Path) -> list[str]:
    """PNG charts of the medians over the runs; one line (or bar) per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    summary = results["summary"]
    profile = results["profile"]
    thousands = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")
    written: list[str] = []
    paced = {
        i: summary[i]["paced"]["steps"] for i in results["order"] if summary[i]["paced"]["runs"]
    }
    if paced:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for impl, steps in paced.items():
            pts = [(int(r), med(st["deliveries_per_s"])) for r, st in steps.items()]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        rates = profile["paced_rates"]
        ax.plot(rates, [r * profile["clients"] for r in rates], "k--", linewidth=1, label="offered")
        ax.yaxis.set_major_formatter(thousands)
        ax.set_xlabel("message rate on the channel (msg/s)")
        ax.set_ylabel("deliveries per second (median of runs)")
        ax.set_title(f"Paced fan-out, {profile['clients']:,} clients")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "paced_deliveries.png", dpi=110)
        plt.close(fig)
        written.append("paced_deliveries.png")

        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
        for ax, key, title in zip(
            axes, ("p50_ms", "p99_ms", "p999_ms"), ("p50", "p99", "p99.9"), strict=True
        ):
            for impl, steps in paced.items():
                lat = [(int(r), v) for r, st in steps.items() if (v := med(st[key])) is not None]
                if lat:
                    ax.plot([p[0] for p in lat], [max(p[1], 0.1) for p in lat], marker="o",
                            label=impl)  # fmt: skip
            ax.axhline(HELD_P99_MS, color="k", linestyle=":", linewidth=1)
            ax.set_yscale("log")
            ax.set_xlabel("message rate (msg/s)")
            ax.set_title(f"latency {title} (median of runs)")
            ax.grid(True, alpha=0.3, which="both")
        axes[0].set_ylabel("ms (client receipt - envelope ts)")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(out / "paced_latency.png", dpi=110)
        plt.close(fig)
        written.append("paced_latency.png")

    bursts = {
        i: f for i in results["order"] if (f := summary[i]["burst"]["deliveries_per_s"]) is not None
    }
    if bursts:
        fig, ax = plt.subplots(figsize=(7, 4))
        medians = [f["median"] for f in bursts.values()]
        errors = [
            [f["median"] - f["min"] for f in bursts.values()],
            [f["max"] - f["median"] for f in bursts.values()],
        ]
        ax.bar(list(bursts), medians, yerr=errors, capsize=4)
        ax.yaxis.set_major_formatter(thousands)
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_ylabel("deliveries per second (median, min-max of runs)")
        ax.set_title(
            f"Burst fan-out, {profile['clients']:,} clients x {profile['burst_m']:,} messages"
        )
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "burst.png", dpi=110)
        plt.close(fig)
        written.append("burst.png")
    return written
