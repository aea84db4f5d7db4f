"""Throughput of the Redis Streams sink, in events per second, against a real redis-server.

Run: ``pytest benchmarks/test_bench_redis_sink.py`` (add ``--benchmark-disable``
for a one-shot check). A loopback round trip costs 0.15-0.5 ms, so what the
sink buys is batching: one stream entry per batch (or one pipeline of
per-event entries) instead of one round trip per event. Each measured call
publishes ``EVENTS`` events and waits (``flush``) until they are all in the
stream; each benchmark checks they arrived. The gate is a ratio measured in
the same run: batch entries vs one round trip per event.
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
#: Events per call when each is one round trip (slow: a few hundred per second).
SINGLE_EVENTS = 200
#: Batch entries must beat one round trip per event by at least this factor
#: (observed: 4-7x on a loaded 2-core machine with per-drain pipelines).
BATCHING_FLOOR = 2.0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis-bench"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def make_round(
    url: str, stream: str, batch_size: int, *, per_event: bool = False
) -> tuple[Any, RedisStreamSink]:
    bus = ringbus.EventBus(ringbus.EventBusConfig(name="bench"))
    sink = RedisStreamSink(
        connect(url, timeout=10),
        stream=stream,
        batch_size=batch_size,
        per_event=per_event,
        maxlen=10 * EVENTS,
    ).attach(bus)
    return bus, sink


def send(bus: Any, sink: RedisStreamSink, events: int = EVENTS) -> int:
    before = sink.sent
    start = bus.latest_seq()  # each round goes on in time: a bus's clock never goes back
    for index in range(start, start + events):
        bus.publish(
            kinds.DELIVERY_COMPLETED,
            index,
            index // 100,
            polity_id="north",
            subject_id="corridor-1",
            payload={"cargo": 12, "late": False},
        )
    bus.drain()
    assert sink.flush(timeout=120)
    return sink.sent - before


@pytest.mark.parametrize(("batch_size", "per_event"), [(1_000, False), (100, False), (1_000, True)])
def test_sink_throughput_batched(
    benchmark: Any, redis_url: str, batch_size: int, per_event: bool
) -> None:
    stream = f"bench:{batch_size}:{per_event}"
    bus, sink = make_round(redis_url, stream, batch_size, per_event=per_event)
    sent = benchmark(send, bus, sink)
    assert sent == EVENTS
    assert sink.status()["failed"] == 0 and sink.buffered == 0
    if per_event:
        assert connect(redis_url).xlen(stream) >= EVENTS
    else:
        stored = sum(int(f[b"count"]) for _id, f in connect(redis_url).xrange(stream))
        assert stored >= EVENTS
    if benchmark.stats is not None:
        rate = EVENTS / benchmark.stats.stats.mean
        benchmark.extra_info["events_per_s"] = round(rate)


def test_sink_throughput_one_round_trip_per_event(benchmark: Any, redis_url: str) -> None:
    bus, sink = make_round(redis_url, "bench:1", 1, per_event=True)
    sent = benchmark.pedantic(send, args=(bus, sink, SINGLE_EVENTS), rounds=3, iterations=1)
    assert sent == SINGLE_EVENTS
    assert sink.pipelines >= SINGLE_EVENTS
    if benchmark.stats is not None:
        benchmark.extra_info["events_per_s"] = round(SINGLE_EVENTS / benchmark.stats.stats.mean)


def test_batching_beats_a_round_trip_per_event(redis_url: str) -> None:
    batched = make_round(redis_url, "bench:ratio-batched", 1_000)
    single = make_round(redis_url, "bench:ratio-single", 1, per_event=True)
    counts = {"batched": EVENTS, "single": SINGLE_EVENTS}
    per_event: dict[str, float] = {"batched": 0.0, "single": 0.0}
    for _ in range(3):  # interleaved, so machine load hits both alike
        for label, (bus, sink) in (("batched", batched), ("single", single)):
            started = time.perf_counter()
            assert send(bus, sink, counts[label]) == counts[label]
            per_event[label] += (time.perf_counter() - started) / counts[label]
    ratio = per_event["single"] / per_event["batched"]
    print(
        f"\nsink: {3 / per_event['batched']:,.0f} events/s batched, "
        f"{3 / per_event['single']:,.0f} events/s one round trip each ({ratio:.1f}x)"
    )
    assert ratio >= BATCHING_FLOOR, f"batching only {ratio:.1f}x faster (floor {BATCHING_FLOOR})"
