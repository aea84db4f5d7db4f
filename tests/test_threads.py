"""Many threads publishing through producers: one stream, whatever the scheduling.

The pattern that makes a run deterministic: workers publish for a tick
through their own producers, the loop joins them, then drains. The stream
is then a function of what each worker published, not of how the threads
were scheduled: the same hash across runs and across both cores.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

WORKERS = 4
EVENTS_PER_WORKER = 50_000
RUNS = 10
TICKS = 5  # each worker publishes EVENTS_PER_WORKER / TICKS events per tick


def one_run(backend: Any) -> str:
    """One run of the sim: WORKERS threads, joined every tick; the stream's hash."""
    total = WORKERS * EVENTS_PER_WORKER
    bus = backend.bus(max_events=total, max_pending=total)
    producers = [bus.producer(f"worker-{n}") for n in range(WORKERS)]
    per_tick = EVENTS_PER_WORKER // TICKS
    start = threading.Barrier(WORKERS)

    # Each event names its worker and its place in that worker's order.
    subjects = [[f"{index}:{n}" for n in range(per_tick)] for index in range(WORKERS)]

    def work(index: int) -> None:
        publish = producers[index].publish
        kind = f"W{index}"
        start.wait()  # every worker publishing at once
        for subject in subjects[index]:
            publish(kind, subject_id=subject)

    for tick in range(1, TICKS + 1):
        bus.set_clock(tick)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert bus.drain() == WORKERS * per_tick
    stream = "\n".join(f"{e.seq} {e.tick} {e.kind} {e.subject_id}" for e in bus.get_since(0))
    assert bus.latest_seq() == total
    return hashlib.sha256(stream.encode()).hexdigest()


@pytest.mark.c_extension  # compares the two cores
def test_producer_threads_give_one_stream_across_runs_and_cores(
    both_backends: tuple[Any, ...],
) -> None:
    hashes = {backend.name: {one_run(backend) for _ in range(RUNS)} for backend in both_backends}
    for name, seen in hashes.items():
        assert len(seen) == 1, f"{name}: {len(seen)} different streams in {RUNS} runs"
    assert len({next(iter(seen)) for seen in hashes.values()}) == 1, hashes
