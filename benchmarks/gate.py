"""Blocking ratio gate: compiled core vs pure twin, ringbus vs psygnal ``emit_fast``.

Usage (cwd at the repo root, ringbus installed in the running environment)::

    python benchmarks/gate.py            # exit 0: every ratio above its floor
    python benchmarks/gate.py --rounds 31 --show

Each check times two implementations on the same scenario in interleaved
A/B samples: a round takes ``--samples`` samples of each, alternating which
goes first, and keeps the ratio of the two medians; the check's figure is the
median of those per-round ratios. Figures are speed-ups (slower / faster),
so a lost accelerator drops them at once, while the floors in
``gate_floors.json`` sit well below what is observed, so machine noise does
not flap the gate. A failing check is re-run once before the gate fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ringbus._bench import (
    SCENARIOS,
    check_deliveries,
    compiled_core,
    environment_lines,
    make_batch,
    make_runner,
)

HERE = Path(__file__).resolve().parent
FLOORS = HERE / "gate_floors.json"

#: check name -> (slower implementation, faster implementation, scenarios)
CHECKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "compiled vs pure": ("ringbus pure", "ringbus", ("S1", "S2", "S3", "S4")),
    "ringbus vs psygnal emit_fast": ("psygnal emit_fast", "ringbus", ("S2", "S3", "S4")),
}


def measure_ratio(slow: str, fast: str, scenario: str, rounds: int, samples: int) -> dict[str, Any]:
    """Median over rounds of (median slow ns / median fast ns), sampled A/B interleaved."""
    sc = SCENARIOS[scenario]
    batch = make_batch(sc.events_per_tick)
    a = make_runner(slow, sc, batch=batch)
    b = make_runner(fast, sc, batch=batch)
    ticks = max(1, 2000 // sc.events_per_tick)
    for runner in (a, b):
        runner.run(ticks)
    clock = time.perf_counter_ns
    ratios: list[float] = []
    slow_ns: list[float] = []
    fast_ns: list[float] = []
    events = ticks * sc.events_per_tick
    for r in range(rounds):
        times: dict[int, list[float]] = {0: [], 1: []}
        for k in range(samples):
            order = (a, b) if (r + k) % 2 == 0 else (b, a)
            for runner in order:
                start = clock()
                runner.run(ticks)
                times[0 if runner is a else 1].append((clock() - start) / events)
        ms, mf = statistics.median(times[0]), statistics.median(times[1])
        slow_ns.append(ms)
        fast_ns.append(mf)
        ratios.append(ms / mf)
    for runner in (a, b):
        check_deliveries(runner, ticks * (1 + rounds * samples))
    return {
        "ratio": statistics.median(ratios),
        "slow_ns": statistics.median(slow_ns),
        "fast_ns": statistics.median(fast_ns),
        "spread": (min(ratios), max(ratios)),
    }


def run_checks(
    floors: dict[str, dict[str, float]],
    rounds: int,
    samples: int,
    only: set[tuple[str, str]] | None,
) -> list[dict[str, Any]]:
    results = []
    for check, (slow, fast, scenarios) in CHECKS.items():
        for scenario in scenarios:
            if only is not None and (check, scenario) not in only:
                continue
            floor = floors[check][scenario]
            figure = measure_ratio(slow, fast, scenario, rounds, samples)
            results.append(
                {
                    "check": check,
                    "scenario": scenario,
                    "slow": slow,
                    "fast": fast,
                    "floor": floor,
                    "passed": figure["ratio"] >= floor,
                    **figure,
                }
            )
    return results


def print_table(results: list[dict[str, Any]], title: str) -> None:
    print(title)
    print(
        f"  {'check':<30} {'scen':<4} {'slower ns':>10} {'faster ns':>10} "
        f"{'speed-up':>9} {'floor':>6} {'rounds min-max':>15}  result"
    )
    for r in results:
        lo, hi = r["spread"]
        print(
            f"  {r['check']:<30} {r['scenario']:<4} {r['slow_ns']:>10,.0f} {r['fast_ns']:>10,.0f} "
            f"{r['ratio']:>8.2f}x {r['floor']:>5.2f}x {lo:>7.2f}-{hi:<7.2f}  "
            f"{'ok' if r['passed'] else 'FAIL'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="A/B rounds per check")
    parser.add_argument("--samples", type=int, default=5, help="samples of each per round")
    parser.add_argument("--floors", type=Path, default=FLOORS, help="JSON file of floors")
    args = parser.parse_args(argv)
    if compiled_core() is None:
        print(
            "gate: FAIL: the compiled core ringbus._ringbus does not import (not built, or "
            "RINGBUS_NO_EXTENSIONS is on); the gate measures the compiled core",
            file=sys.stderr,
        )
        return 2
    try:
        import psygnal  # noqa: F401
    except ImportError:
        print(
            "gate: FAIL: psygnal is not installed (pip install 'ringbus[bench]')", file=sys.stderr
        )
        return 2
    floors = json.loads(args.floors.read_text(encoding="utf-8"))["floors"]
    for line in environment_lines():
        print(line)
    results = run_checks(floors, args.rounds, args.samples, None)
    print_table(results, "ratio gate (speed-up = slower ns / faster ns, median of A/B rounds):")
    failed = {(r["check"], r["scenario"]) for r in results if not r["passed"]}
    if not failed:
        print("gate: ok")
        return 0
    print(f"gate: {len(failed)} check(s) below the floor; re-running them once")
    again = run_checks(floors, args.rounds, args.samples, failed)
    print_table(again, "re-run:")
    still = [r for r in again if not r["passed"]]
    if still:
        print(
            "gate: FAIL: "
            + "; ".join(
                f"{r['check']} {r['scenario']}: {r['ratio']:.2f}x < floor {r['floor']:.2f}x"
                for r in still
            )
        )
        return 1
    print("gate: ok (after re-run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
