"""Many threads publishing through producers: one stream, whatever the scheduling.

The pattern that makes a run deterministic: workers publish for a tick
through their own producers, the loop joins them, then drains. The stream
is then a function of what each worker published, not of how the threads
were scheduled: the same hash across runs and across both cores.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
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


# -- readers in other threads ---------------------------------------------------
READ_ROUNDS = 400


@pytest.mark.parametrize("max_events", [1, 2, 7, 64])
def test_reader_threads_see_whole_consistent_copies(backend: Any, max_events: int) -> None:
    """While the owner publishes over a small ring, readers in other threads
    get runs of consecutive seqs, every one after the seq asked for, none
    older than what was retained before the read began, and at most ``limit``."""
    bus = backend.bus(max_events=max_events)
    stop = threading.Event()
    problems: list[str] = []

    def check(found: list[Any], since: int, oldest_before: int, limit: int | None) -> None:
        seqs = [event.seq for event in found]
        if any(b != a + 1 for a, b in itertools.pairwise(seqs)):
            problems.append(f"not consecutive after {since}: {seqs}")
        if seqs and (seqs[0] <= since or seqs[0] < oldest_before):
            problems.append(f"since={since} oldest={oldest_before}: {seqs}")
        if limit is not None and len(seqs) > limit:
            problems.append(f"limit {limit}: {seqs}")
        if len(seqs) > max_events:
            problems.append(f"more than the ring holds: {seqs}")
        for event in found:
            if event.subject_id != f"s{event.seq}" or event.payload != (("n", event.seq),):
                problems.append(f"torn event: {event!r}")

    def read() -> None:
        rounds = 0
        while not stop.is_set() or rounds < READ_ROUNDS:
            rounds += 1
            oldest = bus.oldest_seq()
            latest = bus.latest_seq()
            since = max(0, latest - max_events + rounds % 3)
            limit = (None, 1, 3)[rounds % 3]
            check(bus.get_since(since, limit=limit), since, oldest, limit)
            check(bus.get_since(0, kinds={"E"}), 0, oldest, None)
            if len(problems) > 5:
                return

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
        seq = 0
        while any(reader.is_alive() for reader in readers) and seq < 200_000:
            seq += 1
            bus.publish("E", subject_id=f"s{seq}", payload={"n": seq})
            if seq % 50 == 0:
                bus.drain()
            if seq == 20_000:
                stop.set()
        stop.set()
        for reader in readers:
            reader.join()
    finally:
        sys.setswitchinterval(switch)
    assert problems == [], "\n".join(problems)


def test_twin_reader_waits_out_a_store_caught_half_done() -> None:
    """The twin stores an event in two steps (its slot, then ``_pos``); a
    reader in another thread that finds it between them reads again, so it
    never returns the new event in place of the oldest retained one."""
    from ringbus import _ringbus_py as twin

    core = twin.RingCore(max_events=2)
    core.publish("E", subject_id="s1")
    core.publish("E", subject_id="s2")
    newer = twin.WorldEvent(seq=3, tick=0, day=0, kind="E", subject_id="s3")
    # The owner thread halfway through storing seq 3 over seq 1's slot.
    core._storing = True
    core._slots[0] = newer
    results: list[Any] = []
    reader = threading.Thread(
        target=lambda: results.append(([e.seq for e in core.get_since(0)], core.oldest_seq()))
    )
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and results == []  # still waiting for a whole store
    core._seq = 3
    core._pos += 1
    core._storing = False
    reader.join(5)
    assert results == [([2, 3], 2)]
