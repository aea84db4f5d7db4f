"""Reference-leak check for one core, run in its own process.

usage: python leaks.py python|cython

Exits 0 when refcounts of payload values return to their baseline once the
ring has evicted their events, and when repeated publish/drain/read cycles
(including failing handlers, spills and snapshots) do not grow the number of
live objects or the traced memory.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import tracemalloc

import ringbus
from ringbus._bus import bus_class_for


def main(core_name: str) -> int:
    module = importlib.import_module(
        "ringbus._ringbus" if core_name == "cython" else "ringbus._ringbus_py"
    )
    bus_class = bus_class_for(module)
    failures: list[str] = []

    # 1. evicted payload values are released
    bus = bus_class(ringbus.EventBusConfig(max_events=8))
    kept: list[object] = []
    bus.subscribe(lambda event: kept.append(event.payload))
    values = ["".join(["value-", str(i)]) for i in range(4)]
    base = [sys.getrefcount(v) for v in values]
    for value in values:
        bus.publish("A", payload={"v": value, "pair": (value, 1)}, tags=(value,))
    del value
    bus.drain()
    kept.clear()
    for _ in range(8):  # push them out of the ring
        bus.publish("B")
    bus.drain()
    after = [sys.getrefcount(v) for v in values]
    if after != base:
        failures.append(f"evicted payload refcounts {base} -> {after}")

    # 2. steady state: no growth over many cycles of every path
    def cycle(bus: object) -> None:
        b = bus  # type: ignore[assignment]
        for i in range(300):
            b.publish("K", payload={"i": i, "s": f"x{i}", "t": (i, "y")}, tags=("t",))
        b.publish("FAIL")
        with contextlib.suppress(ExceptionGroup):
            b.drain()
        b.get_since(b.latest_seq() - 50, kinds=["K"], limit=20)
        b.pending_events()
        b.snapshot(debug_events=10)
        b.stats()

    bus = bus_class(ringbus.EventBusConfig(max_events=64))
    bus.subscribe(lambda event: event.payload, kinds=["K"])

    def fail(event: object) -> None:
        raise ValueError("boom")

    bus.subscribe(fail, kinds=["FAIL"])

    def live_objects() -> int:
        # The collector stops tracking a tuple of untracked items one nesting
        # level per collection: collect until the ring's nested payload
        # tuples have settled, so only objects that really stay are counted.
        for _ in range(3):
            gc.collect()
        return len(gc.get_objects())

    for _ in range(20):  # warm up: fill the ring, caches, free lists
        cycle(bus)
    objects_before = live_objects()
    for _ in range(200):
        cycle(bus)
    objects_after = live_objects()
    tracemalloc.start()
    snap_before = tracemalloc.take_snapshot()
    for _ in range(200):
        cycle(bus)
    gc.collect()
    snap_after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in snap_after.compare_to(snap_before, "filename"))
    if objects_after - objects_before > 50:
        failures.append(f"live objects grew {objects_before} -> {objects_after}")
    if grown > 64 * 1024:
        failures.append(f"traced memory grew by {grown} bytes over 200 cycles")

    # 3. buses themselves are freed
    import weakref

    probe = bus_class(ringbus.EventBusConfig(max_events=16))
    probe.publish("A", payload={"x": 1})
    ref = weakref.ref(probe)
    del probe
    gc.collect()
    if ref() is not None:
        failures.append("a dropped bus was not freed")

    for failure in failures:
        print(f"LEAK ({core_name}): {failure}")
    if not failures:
        print(f"no leaks ({core_name})")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
