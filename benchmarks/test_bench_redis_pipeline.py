"""End to end through Redis: producer processes, one consumer process, events per second.

Run: ``pytest benchmarks/test_bench_redis_pipeline.py -s`` (prints the
figures the README's table shows). Each producer process runs the S2-like
loop (100 events per tick, a drain per tick) with a partitioned
:class:`RedisStreamSink`; the consumer process applies every event through
a :class:`RedisStreamSource`. Every run checks that each ``(producer, seq)``
was applied exactly once.

The gate is a ratio measured in the same run, rounds interleaved: one
consumer process applies events at least as fast as one producer process
sends them (sending: from the first publish until ``close()`` has
everything in Redis; applying: from the first read until the last commit).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import ringbus
from _redis_server import RedisServer, free_port
from ringbus.transports.redis_streams import connect

#: The figures are the compiled core's: measured once, in the compiled run.
pytestmark = pytest.mark.c_extension

#: Events each producer sends per run (``RINGBUS_PIPELINE_EVENTS`` for longer runs).
EVENTS = int(os.environ.get("RINGBUS_PIPELINE_EVENTS", "20000"))
PARTITIONS = 4
#: One consumer must apply at least this many times the rate one producer sends.
CONSUMER_FLOOR = 1.0

PRODUCER = """
import json, sys, time
import ringbus
from ringbus.transports.redis_streams import RedisStreamSink, connect

url, stream, name, count, partitions = sys.argv[1:6]
count, partitions = int(count), int(partitions)
bus = ringbus.EventBus(ringbus.EventBusConfig(name=name))
handled = [0]
bus.subscribe(lambda event: handled.__setitem__(0, handled[0] + 1))
sink = RedisStreamSink(
    connect(url, timeout=10), stream=stream, partitions=partitions, max_buffer=10 * count
).attach(bus)
kinds = ("DELIVERY_COMPLETED", "DELIVERY_FAILED", "DEPOT_BUILT", "TICK")
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
for tick in range(count // 100):
    bus.set_clock(tick, tick // 24)
    for index in range(100):
        bus.publish(kinds[index % 4], polity_id=f"p{index % 8}",
                    payload={"cargo": index, "late": False, "ward": "w1"})
    bus.drain()
loop = time.perf_counter() - started
assert sink.close(timeout=600) and sink.dropped == 0, sink.status()
print(json.dumps({"seconds": time.perf_counter() - started, "loop": loop, "sent": sink.sent}))
"""

CONSUMER = """
import json, sys, time
import ringbus
from ringbus.transports.redis_streams import RedisStreamSource, connect, origin_of

url, stream, total, partitions = sys.argv[1:5]
total, partitions = int(total), int(partitions)
bus = ringbus.EventBus(ringbus.EventBusConfig(name="agg", clock_policy="free"))
seen = set()
bus.subscribe(lambda event: seen.add(origin_of(event)))
source = RedisStreamSource(bus, connect(url, timeout=10), stream=stream, partitions=partitions,
                           group="bench", consumer="c1", count=20, lease_ms=2000)
print("ready", flush=True)
started = None
while source.published < total or source.uncommitted:
    if source.poll(timeout=0.2) and started is None:
        started = time.perf_counter()
    bus.drain()
bus.drain()
assert len(seen) == total == source.published and source.duplicates == 0, source.status()
print(json.dumps({"seconds": time.perf_counter() - started, "applied": len(seen)}))
"""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis-pipeline"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def env() -> dict[str, str]:
    variables = dict(os.environ)
    src = str(Path(ringbus.__file__).resolve().parents[1])
    variables["PYTHONPATH"] = os.pathsep.join(filter(None, [src, variables.get("PYTHONPATH")]))
    return variables


def spawn(script: str, *args: object) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def finish(process: subprocess.Popen[str]) -> dict[str, float]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    return dict(json.loads(out.strip().splitlines()[-1]))


def run(url: str, stream: str, producers: int, *, consumer: bool = True) -> dict[str, float]:
    """Producers and (optionally) a consumer at once; seconds until all is applied."""
    connect(url).flushall()
    total = producers * EVENTS
    reader = spawn(CONSUMER, url, stream, total, PARTITIONS) if consumer else None
    writers = [spawn(PRODUCER, url, stream, f"w{n}", EVENTS, PARTITIONS) for n in range(producers)]
    started = time.perf_counter()
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    sent = [finish(writer) for writer in writers]
    applied = finish(reader) if reader else {}
    return {
        "seconds": time.perf_counter() - started,
        "send_seconds": max(result["seconds"] for result in sent),
        "apply_seconds": applied.get("seconds", 0.0),
    }


@pytest.mark.parametrize("producers", [1, 2, 4])
def test_end_to_end_events_per_second(redis_url: str, producers: int) -> None:
    result = run(redis_url, "pipeline", producers)
    rate = producers * EVENTS / result["seconds"]
    print(f"\n{producers} producer(s), 1 consumer: {rate:,.0f} events/s end to end")


def test_one_consumer_keeps_up_with_one_producer(redis_url: str) -> None:
    send_rates, apply_rates = [], []
    for _ in range(3):  # interleaved, so machine load hits both alike
        sent = run(redis_url, "alone", 1, consumer=False)
        send_rates.append(EVENTS / sent["send_seconds"])
        reader = spawn(CONSUMER, redis_url, "alone", EVENTS, PARTITIONS)
        apply_rates.append(EVENTS / finish(reader)["seconds"])
    ratio = statistics.median(a / s for a, s in zip(apply_rates, send_rates, strict=True))
    print(
        f"\none producer sends {statistics.median(send_rates):,.0f} events/s; one consumer "
        f"applies {statistics.median(apply_rates):,.0f} events/s ({ratio:.2f}x)"
    )
    assert ratio >= CONSUMER_FLOOR, f"the consumer applies only {ratio:.2f}x the producer's rate"
