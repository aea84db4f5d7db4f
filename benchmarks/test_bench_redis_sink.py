"""Throughput of the Redis Streams sink, in events per second, against a real redis-server.

Run: ``pytest benchmarks/test_bench_redis_sink.py`` (add ``--benchmark-disable``
for a one-shot check). A loopback round trip costs 0.15-0.5 ms, so what the
sink buys is batching: one pipeline per drain instead of one round trip per
event. Each measured call sends ``EVENTS`` events; each benchmark checks
they all reached the stream. The gate is a ratio measured in the same run:
batched vs one round trip per event.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import ringbus
from _redis_server import RedisServer, free_port
from ringbus import kinds
from ringbus.transports.redis_streams import RedisStreamSink, connect

EVENTS = 2_000
#: Batched sending must beat one round trip per event by at least this factor
#: (observed: 4-7x on a loaded 2-core machine).
BATCHING_FLOOR = 2.0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis-bench"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def make_round(url: str, stream: str, batch_size: int) -> tuple[Any, RedisStreamSink]:
    bus = ringbus.EventBus(ringbus.EventBusConfig(name="bench"))
    sink = RedisStreamSink(
        connect(url), stream=stream, batch_size=batch_size, maxlen=10 * EVENTS
    ).attach(bus)
    assert isinstance(sink, RedisStreamSink)
    return bus, sink


def send(bus: Any, sink: RedisStreamSink) -> int:
    before = sink.sent
    start = bus.latest_seq()  # each round goes on in time: a bus's clock never goes back
    for index in range(start, start + EVENTS):
        bus.publish(
            kinds.DELIVERY_COMPLETED,
            index,
            index // 100,
            polity_id="north",
            subject_id="corridor-1",
            payload={"cargo": 12, "late": False},
        )
    bus.drain()
    return sink.sent - before


@pytest.mark.parametrize("batch_size", [1_000, 100])
def test_sink_throughput_batched(benchmark: Any, redis_url: str, batch_size: int) -> None:
    bus, sink = make_round(redis_url, f"bench:{batch_size}", batch_size)
    sent = benchmark(send, bus, sink)
    assert sent == EVENTS
    assert sink.status()["failed"] == 0 and sink.buffered == 0
    assert connect(redis_url).xlen(f"bench:{batch_size}") >= EVENTS
    if benchmark.stats is not None:
        rate = EVENTS / benchmark.stats.stats.mean
        benchmark.extra_info["events_per_s"] = round(rate)


def test_sink_throughput_one_round_trip_per_event(benchmark: Any, redis_url: str) -> None:
    bus, sink = make_round(redis_url, "bench:1", 1)
    sent = benchmark.pedantic(send, args=(bus, sink), rounds=3, iterations=1)
    assert sent == EVENTS
    assert sink.pipelines >= EVENTS
    if benchmark.stats is not None:
        benchmark.extra_info["events_per_s"] = round(EVENTS / benchmark.stats.stats.mean)


def test_batching_beats_a_round_trip_per_event(redis_url: str) -> None:
    batched = make_round(redis_url, "bench:ratio-batched", 1_000)
    single = make_round(redis_url, "bench:ratio-single", 1)
    times: dict[str, float] = {"batched": 0.0, "single": 0.0}
    for _ in range(3):  # interleaved, so machine load hits both alike
        for label, (bus, sink) in (("batched", batched), ("single", single)):
            started = time.perf_counter()
            assert send(bus, sink) == EVENTS
            times[label] += time.perf_counter() - started
    ratio = times["single"] / times["batched"]
    print(
        f"\nsink: {3 * EVENTS / times['batched']:,.0f} events/s batched, "
        f"{3 * EVENTS / times['single']:,.0f} events/s one round trip each ({ratio:.1f}x)"
    )
    assert ratio >= BATCHING_FLOOR, f"batching only {ratio:.1f}x faster (floor {BATCHING_FLOOR})"
