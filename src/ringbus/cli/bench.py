"""``ringbus bench``: time ringbus against its pure twin and the installed peers (S1-S4)."""

from __future__ import annotations

import argparse
import sys

from .._bench import (
    PEER_PACKAGES,
    SCENARIOS,
    available_implementations,
    environment_lines,
    format_table,
    run_table,
)
from ._args import positive_int

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = (
    "Time ringbus, its pure-Python twin and the installed "
    "peers (psygnal, pyee, blinker) on the same sim-like workload: 100 events per "
    "tick (S4: 1000), a drain after every tick, handlers that only count. "
    "Prints medians in ns per published event; lower is better."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser``."""
    parser.add_argument(
        "--scenarios", default="S1,S2,S3,S4", help="comma-separated, from S1,S2,S3,S4"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=15, help="interleaved samples per implementation"
    )
    parser.add_argument("--no-peers", action="store_true", help="ringbus only")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")


def run(args: argparse.Namespace) -> int:
    """Print the S1-S4 table (ns per event, medians); return the exit code."""
    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        print(
            f"ringbus bench: unknown scenarios {', '.join(unknown)}: use S1, S2, S3, S4",
            file=sys.stderr,
        )
        return 2
    names, notes = available_implementations()
    if args.no_peers:
        names = [name for name in names if name not in PEER_PACKAGES]
    for line in environment_lines():
        print(line)
    for scenario in scenarios:
        sc = SCENARIOS[scenario]
        print(f"  {scenario}: {sc.title} ({sc.events_per_tick} events per tick, drain each tick)")
    print()
    table = run_table(names, scenarios, args.rounds)
    print(format_table(table, scenarios, markdown=args.markdown))
    print()
    print("ns per published event, median of interleaved samples; lower is better.")
    print("Peers deliver synchronously and keep no seq, ring or record; ringbus does.")
    for note in notes:
        print(f"note: {note}")
    return 0
