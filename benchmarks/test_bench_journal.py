"""The journal's cost: S2 with and without a journal, the plain stdlib loop, verify.

Each measured call handles 2000 events. The ratios the README states are
measured interleaved by ``benchmarks/targets.py`` (the journal targets); these suites
give the absolute figures beside them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ringbus._bench import compiled_core, make_runner
from ringbus.journal import Journal, verify_journal

TICKS = 20  # 100 events each
EVENTS = 2000


def _runner() -> Any:
    return make_runner("ringbus" if compiled_core() is not None else "ringbus pure", "S2")


def test_s2_without_journal(benchmark: Any) -> None:
    def run() -> int:
        runner = _runner()
        runner.run(TICKS)
        return int(runner.delivered())

    assert benchmark(run) == EVENTS


def test_s2_with_journal(benchmark: Any, tmp_path: Path) -> None:
    paths = iter(range(10**9))

    def run() -> int:
        runner = _runner()
        with Journal(tmp_path / f"{next(paths)}.jsonl", fsync="never") as journal:
            journal.attach(runner.target)
            runner.run(TICKS)
        return journal.events

    assert benchmark(run) == EVENTS


def test_plain_stdlib_loop(benchmark: Any, tmp_path: Path) -> None:
    runner = _runner()
    runner.run(TICKS)
    records = [event.to_dict() for event in runner.target.get_since(0)]

    def run() -> int:
        prev = ""
        with (tmp_path / "plain.jsonl").open("w", encoding="ascii") as file:
            for record in records:
                line = json.dumps(record, sort_keys=True)
                prev = hashlib.sha256((prev + line).encode()).hexdigest()
                file.write(line + "\n")
        return len(records)

    assert benchmark(run) == EVENTS


def test_verify(benchmark: Any, tmp_path: Path) -> None:
    runner = _runner()
    path = tmp_path / "run.jsonl"
    with Journal(path, fsync="never") as journal:
        journal.attach(runner.target)
        runner.run(TICKS)

    def run() -> int:
        report = verify_journal(path)
        assert report.ok
        return report.events

    assert benchmark(run) == EVENTS
