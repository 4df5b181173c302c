"""The burst's run-to-run spread of every implementation, set by set, over the stored sets.

A set's spread is (max - min) / median of three run medians, and three values make a
range that moves a lot by itself: the same implementation spread 3 % in one set and 63 %
in another. One set cannot say whether one server's figure swings more than another's;
the sets together can. This reads every ``latest.json`` under ``benchmarks/results`` that
has burst figures for the relay and at least two peers, each over two runs or more, and
prints, per set, each implementation's spread, then per implementation its median spread
over the sets and in how many sets it was the widest and the narrowest. Comparisons are
only made within a set (the same commit, machine and hour).

    python benchmarks/spread_history.py [results directory]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

SERVERS = ("relay", "trio_naive", "websockets", "picows", "node")
"""The single-process servers the burst target compares (the cluster and Socket.IO rows
have their own profiles)."""


def burst_spreads(results: dict[str, Any]) -> dict[str, float]:
    """Each server's burst spread (%) in one set, where it has two runs or more."""
    out = {}
    for name in SERVERS:
        figure = (results.get("summary", {}).get(name) or {}).get("burst", {})
        rate = figure.get("deliveries_per_s") if figure else None
        if rate and len(rate.get("values", [])) >= 2 and rate.get("spread_pct") is not None:
            out[name] = rate["spread_pct"]
    return out


def stored_sets(root: Path) -> list[tuple[str, str, dict[str, float]]]:
    """(set, commit, spreads) for every stored set that compares the relay with two peers."""
    sets = []
    for path in sorted(root.glob("**/latest.json")):
        results = json.loads(path.read_text())
        spreads = burst_spreads(results)
        if "relay" in spreads and len(spreads) >= 3:
            commit = results.get("meta", {}).get("machine", {}).get("git_commit", "?")
            label = str(path.parent.relative_to(root)) if path.parent != root else "latest"
            sets.append((label, str(commit)[:7], spreads))
    return sets


def standing(sets: list[tuple[str, str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per server: its spreads, their median, and the sets in which it was the widest and
    the narrowest of that set's servers."""
    out: dict[str, dict[str, Any]] = {}
    for name in SERVERS:
        mine = [s for _, _, s in sets if name in s]
        if not mine:
            continue
        out[name] = {
            "sets": len(mine),
            "median": statistics.median(s[name] for s in mine),
            "widest": sum(s[name] == max(s.values()) for s in mine),
            "narrowest": sum(s[name] == min(s.values()) for s in mine),
        }
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "results"
    sets = stored_sets(root)
    if not sets:
        print(f"no stored set under {root} has burst figures for the relay and two peers")
        return 1
    print("| set | commit | " + " | ".join(SERVERS) + " |")
    print("|---|---|" + "---:|" * len(SERVERS))
    for label, commit, spreads in sets:
        cells = [f"{spreads[n]:.0f} %" if n in spreads else "-" for n in SERVERS]
        print(f"| {label} | `{commit}` | " + " | ".join(cells) + " |")
    print()
    print("| server | sets | median spread | widest in | narrowest in |")
    print("|---|---:|---:|---:|---:|")
    for name, row in standing(sets).items():
        print(
            f"| {name} | {row['sets']} | {row['median']:.1f} % | {row['widest']} "
            f"| {row['narrowest']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
