"""Journal cost, measured as ratios in one run (interleaved samples).

Three ratios, each the median over interleaved rounds:

``s2_ratio``
    The S2 workload (one subscriber to every kind, 100 events per drain)
    with a journal attached, over the same workload without one. Target <= 4.
``cost_ratio``
    The journal's cost per event (journaled S2 minus plain S2) over a plain
    stdlib loop that does ``json.dumps(record, sort_keys=True)``, SHA-256
    and a buffered ``write`` per event. Target <= 0.5.
``verify_ratio``
    How much faster ``verify_journal`` reads a journal than the plain loop
    writes the same events. Target >= 2.

Run ``python benchmarks/journal_targets.py`` to print them.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ringbus._bench import compiled_core, make_runner
from ringbus.journal import Journal, verify_journal

TARGETS = {"s2_ratio": 4.0, "cost_ratio": 0.5, "verify_ratio": 2.0}
TICKS = 20  # 2000 events per sample


def _runner(journal_path: Path | None) -> tuple[Any, Journal | None]:
    implementation = "ringbus" if compiled_core() is not None else "ringbus pure"
    runner = make_runner(implementation, "S2")
    journal = None
    if journal_path is not None:
        journal = Journal(journal_path, fsync="never")
        journal.attach(runner.target)
    return runner, journal


def _plain_loop(records: list[dict[str, Any]], path: Path) -> float:
    started = time.perf_counter()
    with path.open("w", encoding="ascii") as file:
        prev = ""
        for record in records:
            line = json.dumps(record, sort_keys=True)
            prev = hashlib.sha256((prev + line).encode()).hexdigest()
            file.write(line + "\n")
    return time.perf_counter() - started


def measure(rounds: int = 15, ticks: int = TICKS) -> dict[str, float]:
    """Return the three ratios (and the per-event times in ns), interleaved over ``rounds``."""
    plain_s2: list[float] = []
    journaled_s2: list[float] = []
    plain_loop: list[float] = []
    verify: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        events = 0
        for round_ in range(rounds):
            runner, _ = _runner(None)
            started = time.perf_counter()
            runner.run(ticks)
            plain_s2.append(time.perf_counter() - started)
            events = runner.target.latest_seq()

            path = folder / f"s2-{round_}.jsonl"
            runner, journal = _runner(path)
            started = time.perf_counter()
            runner.run(ticks)
            journaled_s2.append(time.perf_counter() - started)
            assert journal is not None
            journal.close()
            records = [event.to_dict() for event in runner.target.get_since(0)]
            assert len(records) == events

            plain_loop.append(_plain_loop(records, folder / f"plain-{round_}.jsonl"))

            started = time.perf_counter()
            report = verify_journal(path)
            verify.append(time.perf_counter() - started)
            assert report.ok and report.events == events, report.problems[:3]
    a = statistics.median(plain_s2)
    b = statistics.median(journaled_s2)
    p = statistics.median(plain_loop)
    v = statistics.median(verify)
    ns = 1e9 / events
    return {
        "s2_ratio": b / a,
        "cost_ratio": (b - a) / p,
        "verify_ratio": p / v,
        "s2_ns": a * ns,
        "s2_journaled_ns": b * ns,
        "journal_cost_ns": (b - a) * ns,
        "plain_loop_ns": p * ns,
        "verify_ns": v * ns,
    }


def main() -> int:
    """Print the ratios and whether each meets its target; exit 0 either way."""
    figures = measure()
    for name, target in TARGETS.items():
        value = figures[name]
        good = value <= target if name != "verify_ratio" else value >= target
        sign = "<=" if name != "verify_ratio" else ">="
        print(f"{name:13s} {value:6.2f}  (target {sign} {target}: {'met' if good else 'NOT met'})")
    for name in ("s2_ns", "s2_journaled_ns", "journal_cost_ns", "plain_loop_ns", "verify_ns"):
        print(f"{name:16s} {figures[name]:9.0f} ns/event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
