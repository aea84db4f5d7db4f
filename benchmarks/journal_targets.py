"""Journal cost: the sides the journal targets compare, as samplers.

Three figures, each a ratio of medians of samples taken interleaved in one
run (``benchmarks/targets.py`` judges them; ``perf_targets.py`` states them):

``journal`` (S2 journaled / S2)
    The S2 workload (one subscriber to every kind, 100 events per drain)
    with a journal attached (``fsync="never"``), over the same workload
    without one. Target <= 4.
``journal-cost`` ((S2 journaled - S2) / plain loop)
    The journal's cost per event over a plain stdlib loop that does
    ``json.dumps(record, sort_keys=True)``, SHA-256 and a buffered ``write``
    per event. Target <= 0.5.
``verify`` (plain loop / verify)
    How much faster ``verify_journal`` reads a journal than the plain loop
    writes the same events. Target >= 2.

Every sample handles 2000 events and is timed in the thread's CPU time
(system time included: the journal's ``write`` calls count), as the gate
times every target. Run ``python benchmarks/journal_targets.py`` to print
the figures and the absolute events per second.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ringbus._bench import Runner, compiled_core, make_runner
from ringbus.journal import Journal, verify_journal

TARGETS = {"journal": 4.0, "journal-cost": 0.5, "verify": 2.0}
#: Events per sample (20 drains of S2).
SAMPLE_EVENTS = 2000
#: A journal file is replaced by a new one past this size, so the disk the
#: benchmark writes stays small however long it runs.
ROTATE_BYTES = 32 * 1024 * 1024
CLOCK = time.thread_time_ns


def plain_loop(records: list[dict[str, Any]], path: Path) -> None:
    """What the journal is compared with: ``json.dumps``, SHA-256 and a buffered write per event."""
    with path.open("w", encoding="ascii") as file:
        prev = ""
        for record in records:
            line = json.dumps(record, sort_keys=True)
            prev = hashlib.sha256((prev + line).encode()).hexdigest()
            file.write(line + "\n")


class JournalBench:
    """The four sides of the journal targets, each a sampler of ns per event.

    Parameters
    ----------
    implementation
        ``"ringbus"`` (the compiled core) or ``"ringbus pure"``.
    warmup_events
        Events each S2 bus runs untimed first, so that its ring is full and
        overwritten as in a long run.
    """

    def __init__(self, implementation: str = "ringbus", warmup_events: int = 60_000) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ringbus-journal-bench-"))
        # The files go when the bench does, even if close() is never called.
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.implementation = implementation
        self.plain = make_runner(implementation, "S2")
        self.journaled = make_runner(implementation, "S2")
        self.files = 0
        self.journal = self._new_journal()
        self.ticks = SAMPLE_EVENTS // self.plain.scenario.events_per_tick
        for runner in (self.plain, self.journaled):
            runner.run(warmup_events // self.plain.scenario.events_per_tick)
        self.ran = {"plain": 0, "journaled": 0}
        # One sample's events, journaled once: what the plain loop writes and verify reads.
        source = make_runner(implementation, "S2")
        self.sample_path = self.folder / "sample.jsonl"
        with Journal(self.sample_path, fsync="never") as journal:
            journal.attach(source.target)
            source.run(self.ticks)
        self.records = [event.to_dict() for event in source.target.get_since(0)]
        assert len(self.records) == SAMPLE_EVENTS
        self.loop_path = self.folder / "plain.jsonl"

    def _new_journal(self) -> Journal:
        self.files += 1
        journal = Journal(self.folder / f"s2-{self.files}.jsonl", fsync="never")
        journal.attach(self.journaled.target, resume=False)
        return journal

    def _timed(self, runner: Runner, side: str) -> float:
        start = CLOCK()
        runner.run(self.ticks)
        elapsed = CLOCK() - start
        self.ran[side] += self.ticks
        return elapsed / SAMPLE_EVENTS

    def s2(self) -> float:
        """S2 without a journal."""
        return self._timed(self.plain, "plain")

    def s2_journaled(self) -> float:
        """S2 with a journal attached."""
        figure = self._timed(self.journaled, "journaled")
        if self.journal.path.stat().st_size > ROTATE_BYTES:
            self.journal.close()
            self.journal.path.unlink()
            self.journal = self._new_journal()
        return figure

    def loop(self) -> float:
        """The plain stdlib loop over one sample's records."""
        start = CLOCK()
        plain_loop(self.records, self.loop_path)
        return (CLOCK() - start) / SAMPLE_EVENTS

    def verify(self) -> float:
        """``verify_journal`` on one sample's journal."""
        start = CLOCK()
        report = verify_journal(self.sample_path)
        elapsed = CLOCK() - start
        assert report.ok and report.events == SAMPLE_EVENTS, report.problems[:3]
        return elapsed / SAMPLE_EVENTS

    def check(self) -> None:
        """Raise unless every timed run did its work and the journal is intact."""
        for side, runner in (("plain", self.plain), ("journaled", self.journaled)):
            expected = self.ran[side] * self.plain.scenario.events_per_tick
            assert runner.delivered() >= expected, f"{side}: handlers were not called"
        self.journal.sync()
        report = verify_journal(self.journal.path, allow_unsealed=True, check_gaps=False)
        assert report.ok, report.problems[:3]

    def close(self) -> None:
        """Close the journal and remove the files."""
        self.journal.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def samplers(self) -> dict[str, Callable[[], float]]:
        """The four sides by name."""
        return {
            "S2 journaled": self.s2_journaled,
            "S2": self.s2,
            "plain loop": self.loop,
            "verify journal": self.verify,
        }


def figures(medians: dict[str, float]) -> dict[str, float]:
    """The three target figures from the sides' medians (ns per event)."""
    journaled, plain = medians["S2 journaled"], medians["S2"]
    loop = medians["plain loop"]
    return {
        "journal": journaled / plain,
        "journal-cost": (journaled - plain) / loop,
        "verify": loop / medians["verify journal"],
    }


def measure(rounds: int = 15, samples: int = 3) -> dict[str, float]:
    """Return the three figures and each side's median ns per event."""
    implementation = "ringbus" if compiled_core() is not None else "ringbus pure"
    bench = JournalBench(implementation)
    try:
        samplers = bench.samplers()
        names = list(samplers)
        per_round: dict[str, list[float]] = {name: [] for name in names}
        results: dict[str, list[float]] = {key: [] for key in TARGETS}
        for r in range(rounds):
            taken: dict[str, list[float]] = {name: [] for name in names}
            for k in range(samples):
                shift = (r + k) % len(names)
                for name in names[shift:] + names[:shift]:
                    taken[name].append(samplers[name]())
            medians = {name: statistics.median(values) for name, values in taken.items()}
            for name, value in medians.items():
                per_round[name].append(value)
            for key, value in figures(medians).items():
                results[key].append(value)
        bench.check()
    finally:
        bench.close()
    out = {key: statistics.median(values) for key, values in results.items()}
    out.update({name: statistics.median(values) for name, values in per_round.items()})
    return out


def main() -> int:
    """Print the figures, whether each meets its target, and events per second; exit 0."""
    measured = measure()
    for key, target in TARGETS.items():
        value = measured[key]
        at_least = key == "verify"
        good = value >= target if at_least else value <= target
        sign = ">=" if at_least else "<="
        print(f"{key:13s} {value:6.2f}  (target {sign} {target}: {'met' if good else 'NOT met'})")
    for name in ("S2", "S2 journaled", "plain loop", "verify journal"):
        ns = measured[name]
        print(f"{name:14s} {ns:8.0f} ns/event  {1e9 / ns:12,.0f} events/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
