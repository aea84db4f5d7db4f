"""The Redis Streams bridge, against a real redis-server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import ringbus
from _redis_server import RedisServer, redis_server, redis_url
from ringbus import kinds
from ringbus.transports import Transform
from ringbus.transports.redis_streams import RedisStreamSink, RedisStreamSource, connect, origin_of

__all__ = ["redis_server", "redis_url"]  # fixtures used by the tests below

STREAM = "world:events"


def entries(url: str, stream: str = STREAM) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    return [fields for _id, fields in client.xrange(stream)]


def subprocess_env(backend: Any) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(ringbus.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    if backend.name == "python":
        env["RINGBUS_NO_EXTENSIONS"] = "1"
    else:
        env.pop("RINGBUS_NO_EXTENSIONS", None)
    return env


# -- sink -------------------------------------------------------------------
def test_sink_appends_each_drain_in_one_pipeline(backend: Any, redis_url: str) -> None:
    bus = backend.bus(name="worker-1")
    sink = RedisStreamSink(url=redis_url, stream=STREAM).attach(bus)
    assert isinstance(sink, RedisStreamSink)
    for day in range(3):
        for tick in range(4):
            bus.publish(
                kinds.DELIVERY_COMPLETED, day * 4 + tick, day, polity_id="p1", payload={"n": tick}
            )
        bus.drain()
    assert sink.pipelines == 3
    stored = entries(redis_url)
    assert [int(fields["seq"]) for fields in stored] == list(range(1, 13))
    assert {fields["producer"] for fields in stored} == {"worker-1"}
    assert [json.loads(fields["event"]) for fields in stored] == [
        event.to_dict() for event in bus.get_since(0)
    ]
    status = sink.status()
    assert (status["sent"], status["failed"], status["dropped"], status["state"]) == (
        12,
        0,
        0,
        "ok",
    )
    assert status["last_sent_seq"] == 12


def test_sink_bounds_the_stream(backend: Any, redis_url: str) -> None:
    bus = backend.bus()
    RedisStreamSink(url=redis_url, stream=STREAM, maxlen=10, exact_maxlen=True).attach(bus)
    for _ in range(25):
        bus.publish(kinds.TICK)
    bus.drain()
    stored = entries(redis_url)
    assert [int(fields["seq"]) for fields in stored] == list(range(16, 26))


def test_sink_selects_kinds(backend: Any, redis_url: str) -> None:
    bus = backend.bus()
    RedisStreamSink(url=redis_url, stream=STREAM, transform=Transform(kinds=["DELIVERY_*"])).attach(
        bus
    )
    bus.publish(kinds.TICK)
    bus.publish(kinds.DELIVERY_FAILED)
    bus.drain()
    assert [fields["seq"] for fields in entries(redis_url)] == ["2"]


def test_sink_survives_redis_going_away(
    backend: Any, redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = backend.bus(name="worker-9")
    sink = RedisStreamSink(
        connect(redis_url, timeout=0.5), stream=STREAM, max_buffer=5, retry_max_ticks=2
    ).attach(bus)
    bus.publish(kinds.TICK)
    bus.drain()
    assert sink.sent == 1
    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="ringbus.redis"):
            for tick in range(1, 9):
                bus.set_clock(tick)
                bus.publish(kinds.TICK)
                bus.drain()
        status = sink.status()
        assert status["state"] == "disconnected"
        assert status["buffered"] == 5  # the bound
        assert status["dropped"] == 3  # seqs 2, 3, 4: counted, not silent
        assert status["failed"] >= 2
        assert status["outages"] == 1
        assert "ConnectionError" in status["last_error"]
        assert "cannot append to stream 'world:events'" in caplog.text
    finally:
        redis_server.start()
    for tick in range(9, 14):
        bus.set_clock(tick)
        bus.drain()
        if sink.state() == "ok" and not sink.buffered:
            break
    status = sink.status()
    assert (status["state"], status["buffered"], status["sent"]) == ("ok", 0, 6)
    # the new server starts empty: it holds exactly what was buffered, in order
    assert [int(fields["seq"]) for fields in entries(redis_url)] == [5, 6, 7, 8, 9]
    bus.publish(kinds.TICK)
    bus.drain()
    assert int(entries(redis_url)[-1]["seq"]) == 10


def test_sink_options_are_checked(redis_url: str) -> None:
    with pytest.raises(ValueError, match="maxlen"):
        RedisStreamSink(url=redis_url, maxlen=0)
    with pytest.raises(ValueError, match="batch_size"):
        RedisStreamSink(url=redis_url, batch_size=0)


# -- source -----------------------------------------------------------------
def produce(backend: Any, url: str, name: str, count: int, *, per_drain: int = 10) -> Any:
    bus = backend.bus(name=name)
    RedisStreamSink(url=url, stream=STREAM).attach(bus)
    for index in range(count):
        bus.set_clock(index, index // 50)
        bus.publish(
            kinds.DELIVERY_COMPLETED,
            polity_id=name,
            subject_id=f"c{index}",
            payload={"n": index},
            tags=("world",),
        )
        if index % per_drain == per_drain - 1:
            bus.drain()
    bus.drain()
    return bus


def test_source_publishes_into_a_local_bus_and_acks_after_drain(
    backend: Any, redis_url: str
) -> None:
    worker = produce(backend, redis_url, "w1", 25)
    bus = backend.bus(clock_policy="free", name="aggregator")
    seen: list[Any] = []
    bus.subscribe(seen.append)
    source = RedisStreamSource(bus, url=redis_url, stream=STREAM, group="agg", count=10)
    assert source.poll() == 10
    client = connect(redis_url)
    assert client.xpending(STREAM, "agg")["pending"] == 10  # not acknowledged before the drain
    assert source.poll() == 0  # nothing new is read while the last batch is unacknowledged
    bus.drain()
    assert client.xpending(STREAM, "agg")["pending"] == 0
    while source.poll():
        bus.drain()
    assert len(seen) == 25
    original = worker.get_since(0)
    for local, event in zip(seen, original, strict=True):
        assert origin_of(local) == ("w1", event.seq)
        assert (local.kind, local.tick, local.day, local.polity_id, local.subject_id) == (
            event.kind,
            event.tick,
            event.day,
            event.polity_id,
            event.subject_id,
        )
        assert local.payload == event.payload
        assert local.tags == ("world", "producer:w1", f"origin_seq:{event.seq}")
    assert [event.seq for event in seen] == list(range(1, 26))  # new local seqs
    assert source.high_water_marks() == {"w1": 25}
    assert client.hgetall(f"{STREAM}:agg:hwm") == {b"w1": b"25"}
    assert origin_of(original[0]) is None


def test_source_keeps_order_per_producer_and_skips_duplicates(backend: Any, redis_url: str) -> None:
    first = backend.bus(name="w1")
    second = backend.bus(name="w2")
    sink_one = RedisStreamSink(url=redis_url, stream=STREAM).attach(first)
    RedisStreamSink(url=redis_url, stream=STREAM).attach(second)
    for round_ in range(6):
        for bus in (first, second) if round_ % 2 else (second, first):
            for _ in range(round_ + 1):
                bus.publish(kinds.DEPOT_BUILT)
            bus.drain()
    # a producer that re-sends (e.g. after a lost reply) makes duplicates in the stream
    for event in first.get_since(0)[:5]:
        sink_one(event)
    sink_one.flush()
    local = backend.bus(clock_policy="free")
    origins: list[tuple[str, int] | None] = []
    local.subscribe(lambda event: origins.append(origin_of(event)))
    source = RedisStreamSource(local, url=redis_url, stream=STREAM, count=7)
    while source.poll() or source.uncommitted:
        local.drain()
    local.drain()
    for name, bus in (("w1", first), ("w2", second)):
        seqs = [seq for origin in origins if origin and origin[0] == name for seq in [origin[1]]]
        assert seqs == [event.seq for event in bus.get_since(0)]
    assert source.duplicates == 5
    assert source.published == 42
    assert connect(redis_url).xpending(STREAM, "ringbus")["pending"] == 0


def test_source_rereads_unacknowledged_entries_after_a_crash(backend: Any, redis_url: str) -> None:
    produce(backend, redis_url, "w1", 30)
    crashed = backend.bus(clock_policy="free")
    first = RedisStreamSource(crashed, url=redis_url, stream=STREAM, consumer="agg-1", count=12)
    assert first.poll() == 12  # read, published locally, never drained: the process dies here
    del first, crashed

    bus = backend.bus(clock_policy="free")
    seen: list[Any] = []
    bus.subscribe(lambda event: seen.append(origin_of(event)))
    again = RedisStreamSource(bus, url=redis_url, stream=STREAM, consumer="agg-1", count=12)
    while again.poll() or again.uncommitted:
        bus.drain()
    assert [origin[1] for origin in seen] == list(range(1, 31))
    assert again.redelivered == 12


def test_source_claims_entries_another_consumer_left(backend: Any, redis_url: str) -> None:
    produce(backend, redis_url, "w1", 20)
    gone = RedisStreamSource(
        backend.bus(clock_policy="free"), url=redis_url, stream=STREAM, consumer="a", count=8
    )
    assert gone.poll() == 8
    bus = backend.bus(clock_policy="free")
    seen: list[Any] = []
    bus.subscribe(lambda event: seen.append(origin_of(event)))
    other = RedisStreamSource(
        bus, url=redis_url, stream=STREAM, consumer="b", count=8, claim_idle_ms=0
    )
    while other.poll() or other.uncommitted:
        bus.drain()
    assert [origin[1] for origin in seen] == list(range(1, 21))
    assert other.redelivered == 8


def test_source_counts_trimmed_entries_and_gaps(backend: Any, redis_url: str) -> None:
    worker = backend.bus(name="w1")
    RedisStreamSink(url=redis_url, stream=STREAM, maxlen=10, exact_maxlen=True).attach(worker)
    for _ in range(6):
        worker.publish(kinds.TICK)
    worker.drain()
    crashed = RedisStreamSource(
        backend.bus(clock_policy="free"), url=redis_url, stream=STREAM, consumer="c", count=4
    )
    assert crashed.poll() == 4  # seqs 1-4 read, never acknowledged
    for _ in range(10):  # seqs 7-16 trim seqs 1-6 away
        worker.publish(kinds.TICK)
    worker.drain()
    bus = backend.bus(clock_policy="free")
    seen: list[Any] = []
    bus.subscribe(lambda event: seen.append(origin_of(event)))
    source = RedisStreamSource(bus, url=redis_url, stream=STREAM, consumer="c")
    while source.poll() or source.uncommitted:
        bus.drain()
    assert [origin[1] for origin in seen] == list(range(7, 17))
    status = source.status()
    assert status["trimmed"] == 4  # the four pending ones: counted, not silent
    assert status["gaps"] == 1  # w1 jumped from nothing to seq 7
    assert connect(redis_url).xpending(STREAM, "ringbus")["pending"] == 0


def test_source_dead_letters_invalid_entries(backend: Any, redis_url: str) -> None:
    client = connect(redis_url)
    client.xadd(STREAM, {"producer": "w1", "seq": "1", "event": "{not json"})
    client.xadd(STREAM, {"something": "else"})
    bad_event = {"seq": 2, "tick": 0, "day": 0, "kind": ""}
    client.xadd(STREAM, {"producer": "w1", "seq": "2", "event": json.dumps(bad_event)})
    bus = backend.bus(clock_policy="free")
    source = RedisStreamSource(bus, url=redis_url, stream=STREAM)
    assert source.poll() == 3
    assert source.published == 0
    bus.drain()
    assert source.invalid == 3
    assert client.xpending(STREAM, "ringbus")["pending"] == 0
    rejected = client.xrange(f"{STREAM}:rejected")
    assert len(rejected) == 3
    problems = [fields[b"problem"].decode() for _id, fields in rejected]
    assert "JSONDecodeError" in problems[0]
    assert "KeyError" in problems[1]
    assert "missing fields" in problems[2]
    assert bus.latest_seq() == 0


def test_source_reports_redis_errors(backend: Any, redis_url: str) -> None:
    bus = backend.bus(clock_policy="free")
    source = RedisStreamSource(
        bus, client=connect("redis://127.0.0.1:1/0", timeout=0.2), stream=STREAM
    )
    assert source.poll() == 0
    assert source.failed == 1
    assert "ConnectionError" in (source.status()["last_error"] or "")
    with pytest.raises(ValueError, match="count"):
        RedisStreamSource(bus, url=redis_url, count=0)


def test_source_recovers_when_the_local_bus_refuses_events(backend: Any, redis_url: str) -> None:
    produce(backend, redis_url, "w1", 20)
    bus = backend.bus(clock_policy="free", max_pending=5)
    seen: list[Any] = []
    bus.subscribe(lambda event: seen.append(origin_of(event)))
    source = RedisStreamSource(bus, url=redis_url, stream=STREAM, count=8)
    with pytest.raises(ringbus.PendingOverflowError):
        source.poll()
    for _ in range(20):
        bus.drain()
        try:
            source.poll()
        except ringbus.PendingOverflowError:
            continue
    bus.drain()
    assert [origin[1] for origin in seen] == list(range(1, 21))
    assert connect(redis_url).xpending(STREAM, "ringbus")["pending"] == 0


# -- a consumer killed mid-stream -------------------------------------------
CONSUMER = """
import json, sys, time
import ringbus
from ringbus.transports.redis_streams import RedisStreamSource, connect, origin_of

url, stream, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = connect(url)
state = json.loads(client.get("consumer:state") or "[]")
bus = ringbus.EventBus(ringbus.EventBusConfig(name="aggregator", clock_policy="free"))
bus.subscribe(lambda event: state.append(list(origin_of(event))))
source = RedisStreamSource(bus, client, stream=stream, consumer="agg", count=15)
source.add_commit_hook(lambda pipe: pipe.set("consumer:state", json.dumps(state)))
print("started", flush=True)
while True:
    source.poll()
    bus.drain()
    marks = source.high_water_marks()
    if not source.uncommitted and marks.get("w1") == total and marks.get("w2") == total:
        break
    time.sleep(0.005)
print("done", flush=True)
"""


def test_consumer_killed_mid_stream_loses_and_doubles_nothing(backend: Any, redis_url: str) -> None:
    total = 600
    produce(backend, redis_url, "w1", total, per_drain=37)
    produce(backend, redis_url, "w2", total, per_drain=23)
    client = connect(redis_url)
    env = subprocess_env(backend)
    args = [sys.executable, "-c", CONSUMER, redis_url, STREAM, str(total)]

    def committed() -> list[list[Any]]:
        return list(json.loads(client.get("consumer:state") or "[]"))

    before: list[list[Any]] = []
    for threshold in (150, 500, 850):  # three crashes at different points of the stream
        consumer = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while len(committed()) < threshold and time.monotonic() < deadline:
            time.sleep(0.003)
        consumer.send_signal(signal.SIGKILL)
        consumer.communicate(timeout=10)
        assert consumer.returncode == -signal.SIGKILL
        now = committed()
        assert now[: len(before)] == before  # committed state only grows
        before = now
        assert threshold <= len(before) < 2 * total, "the consumer must be killed mid-stream"

    restarted = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.split() == ["started", "done"]
    after = committed()
    assert after[: len(before)] == before
    assert sorted(map(tuple, after)) == sorted(
        [("w1", seq) for seq in range(1, total + 1)] + [("w2", seq) for seq in range(1, total + 1)]
    )  # nothing lost, nothing doubled
    for name in ("w1", "w2"):
        assert [seq for producer, seq in after if producer == name] == list(range(1, total + 1))
    assert client.xpending(STREAM, "ringbus")["pending"] == 0


# -- several processes, one aggregator --------------------------------------
def test_multiprocess_demo_totals_add_up(backend: Any, redis_url: str) -> None:
    from ringbus.demo.multiprocess import merge_counts

    done = subprocess.run(
        [sys.executable, "-m", "ringbus", "redis-demo", "--url", redis_url, "--workers", "3",
         "--days", "1", "--ticks-per-day", "12", "--json"],
        env=subprocess_env(backend),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True
    workers = result["workers"]
    assert [worker["name"] for worker in workers] == ["world-1", "world-2", "world-3"]
    aggregate = result["aggregator"]
    totals = aggregate["kpi"]["totals"]
    for name in ("deliveries_completed", "deliveries_failed", "depots_built", "incidents"):
        assert totals[name] == sum(worker["kpi"]["totals"][name] for worker in workers) > 0
    assert merge_counts([totals]) == merge_counts(w["kpi"]["totals"] for w in workers)
    assert aggregate["source"]["published"] == sum(w["last_seq"] for w in workers)
    assert aggregate["source"]["duplicates"] == 0
    # the workers' health events travelled through the same stream
    assert sorted(aggregate["health"]) == ["world-1", "world-2", "world-3"]
    assert aggregate["health"]["world-1"]["transport:redis"][0] == "ok"


def test_merge_counts() -> None:
    from ringbus.demo.multiprocess import merge_counts

    assert merge_counts(
        [{"a": 1, "b": {"x": 2}, "r": 0.5}, {"a": 2, "b": {"y": 1}, "r": None}]
    ) == {
        "a": 3,
        "b": {"x": 2, "y": 1},
    }
    assert merge_counts([]) is None


def test_health_reports_the_bridge(backend: Any, redis_url: str) -> None:
    from ringbus.sim.health import BUS_HEALTH, HealthReporter

    produce(backend, redis_url, "w1", 12)
    bus = backend.bus(clock_policy="free", name="aggregator")
    source = RedisStreamSource(bus, url=redis_url, stream=STREAM, count=5)
    HealthReporter(every_ticks=1, transports=[source], timer=None).attach(bus)
    health: list[Any] = []
    bus.subscribe(health.append, kinds={BUS_HEALTH})
    source.poll()
    bus.drain()  # commits 5; the health event published at its end waits for the next drain
    bus.drain()
    assert health[0].payload_dict()["transport:redis-source:consumer-1"] == ("ok", 5, 0, 0, 0)


def test_demo_aggregator_killed_and_restarted_still_adds_up(backend: Any, redis_url: str) -> None:
    stream = "demo:crash"
    env = subprocess_env(backend)
    demo = [sys.executable, "-m", "ringbus", "redis-demo", "--url", redis_url, "--stream", stream]
    demo += ["--workers", "2", "--days", "3", "--ticks-per-day", "12"]
    for name in ("world-1", "world-2"):
        done = subprocess.run([*demo, "worker", name], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
    client = connect(redis_url)
    workers = {
        key.decode(): json.loads(value)
        for key, value in client.hgetall(f"{stream}:workers").items()
    }
    total = sum(worker["last_seq"] for worker in workers.values())
    aggregate = [*demo, "aggregate", "world-1", "world-2", "--count", "10"]

    def committed() -> int:
        return sum(int(seq) for seq in client.hvals(f"{stream}:aggregator:hwm"))

    first = subprocess.Popen(aggregate, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while committed() < total // 4 and time.monotonic() < deadline:
        time.sleep(0.002)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert total // 4 <= committed() < total, "the aggregator must be killed mid-stream"

    again = subprocess.run(aggregate, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    totals = json.loads(again.stdout)["totals"]
    for name in ("deliveries_completed", "deliveries_failed", "depots_built", "incidents"):
        assert totals[name] == sum(w["kpi"]["totals"][name] for w in workers.values())
    assert committed() == total


def test_demo_cli_spawns_its_own_server_or_says_what_is_missing(backend: Any) -> None:
    from _redis_server import free_port

    env = subprocess_env(backend)
    demo = [sys.executable, "-m", "ringbus", "redis-demo", "--days", "1", "--ticks-per-day", "6"]
    gone = subprocess.run(
        [*demo, "--url", f"redis://127.0.0.1:{free_port()}/0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode == 1
    assert "cannot reach Redis" in gone.stderr and "--spawn-redis" in gone.stderr
    spawned = subprocess.run(
        [*demo, "--spawn-redis"], env=env, capture_output=True, text=True, timeout=120
    )
    assert spawned.returncode == 0, spawned.stderr
    assert spawned.stdout.splitlines()[-1] == "totals match: yes"
