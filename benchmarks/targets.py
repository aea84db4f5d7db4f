"""Measure every performance target of ringbus in one run and print the figures.

Usage: ``python benchmarks/targets.py [--rounds N] [--core cython|python]``

Ratios are of medians measured in the same run, with the implementations
sampled in interleaved rounds; absolute ns are printed for context only.

1. ringbus / psygnal ``emit_fast``            <= 0.8 on S2, S3, S4
2. pure twin / compiled (speed-up)            >= 5   on S1-S4
3. ringbus / floor (minimal compiled bus)     <= 1.6 on S2-S4
4. ``enabled=False`` publish / empty call     <= 1.5
5. ring 1,000,000 vs 1,000 slots              <= 20 % apart;
   S3 with 100 idle subscribers vs without    <= 10 % apart
6. bytes per retained event (50,000-slot ring, tracemalloc) <= 300;
   no growth over a long run beyond the ring
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

from ringbus import EventBusConfig, bus_class_for
from ringbus._bench import (
    SCENARIOS,
    build_floor,
    compiled_core,
    empty_publish,
    environment_lines,
    format_table,
    make_batch,
    make_runner,
    measure,
    run_table,
)
from ringbus.kinds import CORE_KINDS

HERE = Path(__file__).resolve().parent


def core_for(name: str) -> tuple[str, ModuleType]:
    if name == "cython":
        core = compiled_core()
        if core is None:
            sys.exit("the compiled core ringbus._ringbus is not available: build it first")
        return "ringbus", core
    from ringbus import _ringbus_py

    return "ringbus pure", _ringbus_py


def interleave(functions: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median of per-call ns of each zero-argument timing function, interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for fn in functions.values():
        fn()
    names = list(functions)
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            samples[name].append(functions[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def disabled_publish(core: ModuleType, rounds: int) -> dict[str, float]:
    """ns per call: disabled publish, an empty function of the same shape, a bare loop."""
    bus = bus_class_for(core)(EventBusConfig(enabled=False))
    batch = make_batch(100) * 10
    publish = bus.publish

    empty = empty_publish

    def bare(kind: str, payload: object = None) -> int:
        return 0

    clock = time.perf_counter_ns

    def time_publish() -> float:
        start = clock()
        for kind, payload in batch:
            publish(kind, payload=payload)
        return (clock() - start) / len(batch)

    def time_empty() -> float:
        start = clock()
        for kind, payload in batch:
            empty(kind, payload=payload)
        return (clock() - start) / len(batch)

    def time_bare() -> float:
        start = clock()
        for kind, payload in batch:
            bare(kind, payload=payload)
        return (clock() - start) / len(batch)

    def time_loop() -> float:
        start = clock()
        for _kind, _payload in batch:
            pass
        return (clock() - start) / len(batch)

    result = interleave(
        {"publish": time_publish, "empty": time_empty, "bare": time_bare, "loop": time_loop},
        rounds * 20,
    )
    assert bus.latest_seq() == 0 and len(bus) == 0
    return result


def ring_sizes(core: ModuleType, rounds: int) -> dict[str, float]:
    """S1 ns per event on a full 1,000-slot ring and a full 1,000,000-slot ring."""
    runners = {}
    for slots in (1_000, 1_000_000):
        cls = bus_class_for(core)
        bus = cls(EventBusConfig(max_events=slots))
        batch = make_batch(100)
        publish, drain, set_clock = bus.publish, bus.drain, bus.set_clock
        tick = 0
        while len(bus) < slots:  # fill the ring: the measured publishes overwrite
            tick += 1
            set_clock(tick, tick // 100)
            for kind, payload in batch:
                publish(kind, payload=payload)
            drain()
        state = {"tick": tick, "bus": bus}

        def sample(bus: Any = bus, state: dict[str, Any] = state, batch: Any = batch) -> float:
            publish, drain, set_clock = bus.publish, bus.drain, bus.set_clock
            tick = state["tick"]
            start = time.perf_counter_ns()
            for _ in range(20):
                tick += 1
                set_clock(tick, tick // 100)
                for kind, payload in batch:
                    publish(kind, payload=payload)
                drain()
            state["tick"] = tick
            return (time.perf_counter_ns() - start) / 2000

        runners[f"{slots:,} slots"] = sample
    return interleave(runners, rounds)


def idle_subscribers(core_name: str, rounds: int) -> dict[str, float]:
    """S3 ns per event without and with 100 subscribers to kinds that never occur."""
    name = "ringbus" if core_name == "cython" else "ringbus pure"
    plain = make_runner(name, "S3")
    idle = make_runner(name, "S3")
    bus: Any = idle.target
    for n in range(100):
        bus.subscribe(lambda event: None, kinds={f"NEVER_PUBLISHED_{n}"})
    idle.implementation = "idle"
    plain.implementation = "S3"
    samples = measure([plain, idle], rounds)
    assert plain.delivered() == idle.delivered()
    return {key: statistics.median(values) for key, values in samples.items()}


def memory(core: ModuleType, slots: int = 50_000, extra: int = 200_000) -> dict[str, float]:
    """Bytes per retained event in a full ring, and growth over ``extra`` more events."""
    cls = bus_class_for(core)
    gc.collect()
    tracemalloc.start()
    # The base is taken before the bus exists: a preallocated ring counts.
    base = tracemalloc.get_traced_memory()[0]
    bus = cls(EventBusConfig(max_events=slots))
    wards = tuple(f"ward-{n}" for n in range(8))
    kinds = CORE_KINDS

    def publish_many(count: int, start: int) -> None:
        for n in range(start, start + count):
            if n % 100 == 0:
                bus.drain()
                bus.set_clock(n // 100, n // 10_000)
            # a fresh payload dict per event, as the sim makes them
            bus.publish(
                kinds[n % 13], payload={"ward": wards[n % 8], "amount": n % 50, "ok": n % 3 != 0}
            )
        bus.drain()

    publish_many(slots, 0)
    gc.collect()
    full = tracemalloc.get_traced_memory()[0]
    publish_many(extra, slots)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(bus) == slots
    return {
        "bytes_per_event": (full - base) / slots,
        "growth_bytes": after - full,
        "extra_events": extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--core", choices=("cython", "python"), default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    core_name = args.core or ("cython" if compiled_core() is not None else "python")
    label, core = core_for(core_name)
    floor, note = build_floor()
    for line in environment_lines():
        print(line)
    print(f"core under test: {core_name}" + (f"; {note}" if note else ""))
    names = [label]
    if core_name == "cython":
        names.append("ringbus pure")
    if floor is not None:
        names.append("floor")
    names += ["psygnal emit_fast", "psygnal emit", "pyee", "blinker"]
    table = run_table(names, list(SCENARIOS), args.rounds, floor)
    print()
    print(format_table(table, list(SCENARIOS), markdown=args.markdown))
    print()
    rows: list[tuple[str, str, str, bool]] = []

    def ratio(a: str, b: str, s: str) -> float:
        return table[a][s] / table[b][s]

    for s in ("S2", "S3", "S4"):
        r = ratio(label, "psygnal emit_fast", s)
        rows.append((f"1. {label} / psygnal emit_fast, {s}", "<= 0.8", f"{r:.2f}", r <= 0.8))
    if core_name == "cython":
        for s in SCENARIOS:
            r = ratio("ringbus pure", "ringbus", s)
            rows.append((f"2. pure / compiled speed-up, {s}", ">= 5", f"{r:.1f}x", r >= 5))
    if floor is not None:
        for s in ("S2", "S3", "S4"):
            r = ratio(label, "floor", s)
            rows.append((f"3. {label} / floor, {s}", "<= 1.6", f"{r:.2f}", r <= 1.6))
    d = disabled_publish(core, args.rounds)
    for label_, empty in (("same signature", "empty"), ("def f(kind, payload=None)", "bare")):
        raw = d["publish"] / d[empty]
        net = (d["publish"] - d["loop"]) / max(d[empty] - d["loop"], 1e-9)
        rows.append(
            (
                f"4. enabled=False publish / empty call ({label_})",
                "<= 1.5",
                f"{raw:.2f} with loop, {net:.2f} net "
                f"({d['publish']:.0f} vs {d[empty]:.0f} ns, loop {d['loop']:.0f} ns)",
                net <= 1.5,
            )
        )
    rs = ring_sizes(core, args.rounds)
    small, big = rs["1,000 slots"], rs["1,000,000 slots"]
    diff = abs(big - small) / small
    rows.append(
        (
            "5a. S1 on full 1M-slot vs 1k-slot ring",
            "<= 20 %",
            f"{diff * 100:.0f} % ({small:.0f} vs {big:.0f} ns)",
            diff <= 0.2,
        )
    )
    idle = idle_subscribers(core_name, args.rounds)
    change = abs(idle["idle"] - idle["S3"]) / idle["S3"]
    rows.append(
        (
            "5b. S3 with 100 idle subscribers",
            "<= 10 %",
            f"{change * 100:.0f} % ({idle['S3']:.0f} vs {idle['idle']:.0f} ns)",
            change <= 0.1,
        )
    )
    m = memory(core)
    rows.append(
        (
            "6a. bytes per retained event (50,000-slot ring)",
            "<= 300",
            f"{m['bytes_per_event']:.0f}",
            m["bytes_per_event"] <= 300,
        )
    )
    growth = m["growth_bytes"]
    rows.append(
        (
            f"6b. growth over {m['extra_events']:,.0f} more events",
            "none beyond the ring",
            f"{growth:+,.0f} bytes",
            growth <= 64 * 1024,
        )
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'target':<{width}}  {'goal':<20}  {'met':<4}  measured")
    for name, goal, measured, met in rows:
        print(f"{name:<{width}}  {goal:<20}  {'yes' if met else 'NO':<4}  {measured}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
