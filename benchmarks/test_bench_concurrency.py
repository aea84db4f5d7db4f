"""Benchmarks behind the concurrency targets: producers, threads, streams, drain_async.

Each timed call does 1000 events or more. The groups put what is compared
side by side; ``python benchmarks/targets.py --only
producer,threads,stream,drain_async`` turns the same measurements into the
target ratios.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import targets
from bench_support import core_module, core_params
from perf_targets import target
from ringbus._bench import compiled_core, make_batch
from ringbus._bus import bus_class_for

BATCH = make_batch(100)
TICKS = 10  # 1000 events per timed call


def publish_ticks(bus: Any, publish: Any, state: dict[str, int]) -> int:
    for _ in range(TICKS):
        state["tick"] += 1
        bus.set_clock(state["tick"], state["tick"] // 100)
        for kind, payload in BATCH:
            publish(kind, payload=payload)
        bus.drain()
    return int(bus.latest_seq())


@pytest.mark.parametrize("core", core_params())
@pytest.mark.parametrize("through", ["publish", "producer"])
def test_producer_publish(benchmark: Any, core: str, through: str) -> None:
    bus = bus_class_for(core_module(core))()
    publish = bus.producer("worker").publish if through == "producer" else bus.publish
    state = {"tick": 0}
    benchmark.group = f"S1 through producer.publish vs publish ({core}, 1000 events)"
    seq = benchmark.pedantic(
        publish_ticks, args=(bus, publish, state), rounds=20, iterations=1, warmup_rounds=2
    )
    assert seq == state["tick"] * len(BATCH) and bus.pending_count() == 0


@pytest.mark.parametrize("core", core_params())
@pytest.mark.parametrize("workers", [1, 4])
def test_producer_threads(benchmark: Any, core: str, workers: int) -> None:
    bus = bus_class_for(core_module(core))()
    producers = [bus.producer(f"w{n}") for n in range(workers)]
    share = 4000 // workers

    def work(producer: Any) -> None:
        publish = producer.publish
        for n in range(share):
            kind, payload = BATCH[n % 100]
            publish(kind, payload=payload)

    def run() -> int:
        threads = [threading.Thread(target=work, args=(p,)) for p in producers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return int(bus.drain())

    benchmark.group = f"4000 events from 1 vs 4 producer threads ({core})"
    assert benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1) == 4000


@pytest.mark.parametrize("core", core_params())
def test_stream_reader(benchmark: Any, core: str) -> None:
    bus = bus_class_for(core_module(core))()
    stream = bus.stream(maxsize=2000)
    loop = asyncio.new_event_loop()
    state = {"tick": 0}

    async def read() -> int:
        seen = 0
        for _ in range(TICKS):
            state["tick"] += 1
            bus.set_clock(state["tick"])
            for kind, payload in BATCH:
                bus.publish(kind, payload=payload)
            bus.drain()
            left = len(BATCH)
            async for _event in stream:
                seen += 1
                left -= 1
                if not left:
                    break
        return seen

    benchmark.group = f"S2 read through async for over bus.stream() ({core}, 1000 events)"
    try:
        seen = benchmark.pedantic(
            lambda: loop.run_until_complete(read()), rounds=20, iterations=1, warmup_rounds=1
        )
    finally:
        stream.close()
        loop.close()
    assert seen == TICKS * len(BATCH) and stream.dropped == 0


@pytest.mark.parametrize("core", core_params())
def test_drain_async(benchmark: Any, core: str) -> None:
    bus = bus_class_for(core_module(core))()
    delivered = [0]

    def count(event: Any) -> None:
        delivered[0] += 1

    bus.subscribe(count)
    loop = asyncio.new_event_loop()
    state = {"tick": 0}

    async def run() -> int:
        for _ in range(TICKS):
            state["tick"] += 1
            bus.set_clock(state["tick"])
            for kind, payload in BATCH:
                bus.publish(kind, payload=payload)
            await bus.drain_async()
        return int(bus.latest_seq())

    benchmark.group = f"S2 drained by drain_async, only sync handlers ({core}, 1000 events)"
    try:
        seq = benchmark.pedantic(
            lambda: loop.run_until_complete(run()), rounds=20, iterations=1, warmup_rounds=1
        )
    finally:
        loop.close()
    assert seq == delivered[0] == state["tick"] * len(BATCH)


@pytest.mark.parametrize("key", ["producer", "threads", "stream", "drain_async"])
def test_the_gate_measures_each_concurrency_target(key: str) -> None:
    """Each measurement runs, samples both sides and verifies the work (no verdict)."""
    core = compiled_core()
    ctx = targets.Context(
        "python" if core is None else "cython",
        core_module("python") if core is None else core,
        warmup_events=0,
    )
    definition = target(key)
    trial = targets.MEASUREMENTS[definition.measurement](ctx, "", *definition.args)
    samples = {name: sampler() for name, sampler in trial.samplers.items()}
    assert all(value > 0 for value in samples.values()), samples
    assert trial.figure(samples) > 0
    trial.verify()
