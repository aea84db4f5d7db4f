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
from _redis_server import RedisServer, collect_garbage, redis_server, redis_url
from ringbus import kinds
from ringbus.transports import Transform
from ringbus.transports.redis_streams import RedisStreamSink, RedisStreamSource, connect, origin_of

__all__ = ["collect_garbage", "redis_server", "redis_url"]  # fixtures used by the tests below

STREAM = "world:events"


def entries(url: str, stream: str = STREAM) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    return [fields for _id, fields in client.xrange(stream)]


def stored(url: str, stream: str = STREAM) -> list[tuple[str, int, dict[str, Any]]]:
    """``(producer, seq, event dict)`` of every event in the stream, batch or per-event entries."""
    out = []
    for fields in entries(url, stream):
        if "events" in fields:
            records = json.loads(fields["events"])
            assert [r["seq"] for r in records][:: len(records) - 1 or 1] == [
                int(fields["first_seq"]),
                int(fields["last_seq"]),
            ][: 1 if len(records) == 1 else 2]
            assert int(fields["count"]) == len(records)
        else:
            records = [json.loads(fields["event"])]
        out += [(fields["producer"], record["seq"], record) for record in records]
    return out


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
def test_sink_appends_batches_from_a_sender_thread(backend: Any, redis_url: str) -> None:
    bus = backend.bus(name="worker-1")
    sink = RedisStreamSink(url=redis_url, stream=STREAM, batch_size=5).attach(bus)
    assert isinstance(sink, RedisStreamSink)
    for day in range(3):
        for tick in range(4):
            bus.publish(
                kinds.DELIVERY_COMPLETED, day * 4 + tick, day, polity_id="p1", payload={"n": tick}
            )
        bus.drain()
    assert sink.flush(timeout=10)
    events = stored(redis_url)
    assert [seq for _producer, seq, _record in events] == list(range(1, 13))
    assert {producer for producer, _seq, _record in events} == {"worker-1"}
    assert [record for _p, _s, record in events] == [event.to_dict() for event in bus.get_since(0)]
    raw = entries(redis_url)
    assert max(int(fields["count"]) for fields in raw) <= 5  # batch_size bounds an entry
    # each entry names the last seq written before it: readers can tell a missing entry
    assert [int(fields["prev_seq"]) for fields in raw] == [0] + [
        int(fields["last_seq"]) for fields in raw[:-1]
    ]
    status = sink.status()
    assert (status["sent"], status["failed"], status["dropped"], status["state"]) == (
        12,
        0,
        0,
        "ok",
    )
    assert status["last_sent_seq"] == 12 and status["entries"] == len(raw)
    assert sink.close(timeout=5)
    bus.publish(kinds.TICK)
    bus.drain()
    assert sink.status()["received"] == 12  # closed: detached from the bus


def test_sink_writes_one_entry_per_event_when_asked(backend: Any, redis_url: str) -> None:
    bus = backend.bus(name="w")
    sink = RedisStreamSink(url=redis_url, stream=STREAM, per_event=True).attach(bus)
    for _ in range(3):
        bus.publish(kinds.TICK)
    bus.drain()
    assert sink.close(timeout=10)
    raw = entries(redis_url)
    assert [(f["producer"], f["seq"], f["prev_seq"]) for f in raw] == [
        ("w", "1", "0"),
        ("w", "2", "1"),
        ("w", "3", "2"),
    ]
    assert json.loads(raw[0]["event"]) == bus.get_since(0)[0].to_dict()


def test_sink_bounds_the_stream(backend: Any, redis_url: str) -> None:
    bus = backend.bus()
    sink = RedisStreamSink(
        url=redis_url, stream=STREAM, maxlen=10, exact_maxlen=True, per_event=True
    ).attach(bus)
    for _ in range(25):
        bus.publish(kinds.TICK)
    bus.drain()
    assert sink.close(timeout=10)
    assert [seq for _p, seq, _r in stored(redis_url)] == list(range(16, 26))


def test_sink_selects_kinds(backend: Any, redis_url: str) -> None:
    bus = backend.bus()
    sink = RedisStreamSink(
        url=redis_url, stream=STREAM, transform=Transform(kinds=["DELIVERY_*"])
    ).attach(bus)
    bus.publish(kinds.TICK)
    bus.publish(kinds.DELIVERY_FAILED)
    bus.drain()
    assert sink.close(timeout=10)
    assert [seq for _p, seq, _r in stored(redis_url)] == [2]


def test_sink_routes_partitions_by_key(backend: Any, redis_url: str) -> None:
    from ringbus.transports.redis_streams import partition_of, partition_streams

    bus = backend.bus(name="w")
    sink = RedisStreamSink(url=redis_url, stream=STREAM, partitions=3).attach(bus)
    for index in range(60):
        bus.publish(kinds.DEPOT_BUILT, polity_id=f"p{index % 6}")
    bus.drain()
    assert sink.close(timeout=10)
    streams = partition_streams(STREAM, 3)
    assert streams == [f"{STREAM}:{{p0}}", f"{STREAM}:{{p1}}", f"{STREAM}:{{p2}}"]
    seen: dict[str, list[int]] = {}
    for index, stream in enumerate(streams):
        for _producer, seq, record in stored(redis_url, stream):
            assert partition_of(record["polity_id"], 3) == index
            seen.setdefault(record["polity_id"], []).append(seq)
    # every event once, and each key's events in order in one stream
    assert sorted(seq for seqs in seen.values() for seq in seqs) == list(range(1, 61))
    for polity, seqs in seen.items():
        assert seqs == [seq for seq in range(1, 61) if f"p{(seq - 1) % 6}" == polity]
    assert len({partition_of(f"p{n}", 3) for n in range(6)}) > 1  # the keys are spread
    assert partition_of("p1", 3) == partition_of("p1", 3) and partition_of(None, 3) == 0


def test_sink_survives_redis_going_away(
    backend: Any, redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from ringbus.sim.health import DATA_LOSS

    bus = backend.bus(name="worker-9")
    losses: list[Any] = []
    bus.subscribe(losses.append, kinds={DATA_LOSS})
    sink = RedisStreamSink(
        connect(redis_url, timeout=0.5),
        stream=STREAM,
        max_buffer=5,
        retry_base=0.01,
        retry_max=0.05,
        report_every=0,
        transform=Transform(kinds=[kinds.TICK]),  # its own loss reports stay local
    ).attach(bus)
    bus.publish(kinds.TICK)
    bus.drain()
    assert sink.flush(timeout=10) and sink.sent == 1
    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="ringbus.redis"):
            bus.publish(kinds.TICK)
            bus.drain()
            assert not sink.flush(timeout=0.3)  # bounded: the server is gone
            assert sink.state() == "backoff"
            for _ in range(8):  # seqs 3-10
                bus.publish(kinds.TICK)
                bus.drain()
            bus.drain()  # the loss report published at the last drain's end is delivered
        status = sink.status()
        assert status["state"] == "dropping"
        assert status["buffered"] == 5  # the bound
        assert status["dropped"] == 4  # counted, not silent
        assert status["failed"] >= 1 and status["outages"] == 1
        assert "ConnectionError" in status["last_error"]
        assert "cannot send" in caplog.text and "lost 1 events (seqs 3):" in caplog.text
        assert "the oldest queued events were dropped" in caplog.text
        # every dropped seq is in a DATA_LOSS event, oldest first
        reported = [
            seq
            for event in losses
            for first, last in event.payload_dict()["ranges"]
            for seq in range(first, last + 1)
        ]
        # seq 2 is the batch being retried (kept); the oldest queued ones went first
        ticks = [event.seq for event in bus.get_since(0, kinds=kinds.TICK)]
        assert len(ticks) == 10 and ticks[1] == 2
        assert reported == ticks[2:6]
        assert sum(event.payload_dict()["events"] for event in losses) == 4
        assert {event.payload_dict()["producer"] for event in losses} == {"worker-9"}
    finally:
        redis_server.start()
    assert sink.flush(timeout=10)
    status = sink.status()
    assert (status["buffered"], status["sent"], status["dropped"]) == (0, 6, 4)
    # the new server starts empty: it holds exactly what was kept, in order
    assert [seq for _p, seq, _r in stored(redis_url)] == [2, *ticks[6:]]
    assert sink.close(timeout=10)


def test_sink_options_are_checked(redis_url: str) -> None:
    with pytest.raises(ValueError, match="maxlen"):
        RedisStreamSink(url=redis_url, maxlen=0)
    with pytest.raises(ValueError, match="batch_size"):
        RedisStreamSink(url=redis_url, batch_size=0)
    with pytest.raises(ValueError, match="overflow"):
        RedisStreamSink(url=redis_url, overflow="ignore")
    with pytest.raises(ValueError, match="partitions"):
        RedisStreamSink(url=redis_url, partitions=0)
    with pytest.raises(ValueError, match="key must be an event field"):
        RedisStreamSink(url=redis_url, key="region")


# -- source -----------------------------------------------------------------
def produce(
    backend: Any,
    url: str,
    name: str,
    count: int,
    *,
    per_drain: int = 10,
    per_event: bool = True,
    stream: str = STREAM,
    partitions: int = 1,
) -> Any:
    """A producer's bus that sent ``count`` events (one entry each, unless ``per_event=False``)."""
    bus = backend.bus(name=name)
    sink = RedisStreamSink(
        url=url, stream=stream, per_event=per_event, partitions=partitions, batch_size=per_drain
    ).attach(bus)
    for index in range(count):
        bus.set_clock(index, index // 50)
        bus.publish(
            kinds.DELIVERY_COMPLETED,
            polity_id=f"p{index % 8}" if partitions > 1 else name,  # p0-p7 spread out
            subject_id=f"c{index}",
            payload={"n": index},
            tags=("world",),
        )
        if index % per_drain == per_drain - 1:
            bus.drain()
    bus.drain()
    assert sink.close(timeout=30)
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
    sinks = [
        RedisStreamSink(url=redis_url, stream=STREAM, batch_size=4).attach(bus)
        for bus in (first, second)
    ]
    for round_ in range(6):
        for bus in (first, second) if round_ % 2 else (second, first):
            for _ in range(round_ + 1):
                bus.publish(kinds.DEPOT_BUILT)
            bus.drain()
            assert sinks[0].flush(10) and sinks[1].flush(10)  # entries interleave
    assert all(sink.close(10) for sink in sinks)
    # a producer that re-sends (e.g. after a lost reply) makes duplicates in the stream
    client = connect(redis_url)
    for event in first.get_since(0)[:5]:
        client.xadd(
            STREAM, {"producer": "w1", "seq": event.seq, "event": json.dumps(event.to_dict())}
        )
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


def test_source_reports_trimmed_entries_as_lost(backend: Any, redis_url: str) -> None:
    from ringbus.sim.health import DATA_LOSS

    worker = backend.bus(name="w1")
    sink = RedisStreamSink(
        url=redis_url, stream=STREAM, maxlen=10, exact_maxlen=True, per_event=True
    ).attach(worker)
    for _ in range(6):
        worker.publish(kinds.TICK)
    worker.drain()
    assert sink.flush(10)
    crashed = RedisStreamSource(
        backend.bus(clock_policy="free"), url=redis_url, stream=STREAM, consumer="c", count=4
    )
    assert crashed.poll() == 4  # seqs 1-4 read, never acknowledged
    for _ in range(10):  # seqs 7-16 trim seqs 1-6 away
        worker.publish(kinds.TICK)
    worker.drain()
    assert sink.close(10)
    bus = backend.bus(clock_policy="free")
    seen: list[Any] = []
    bus.subscribe(lambda event: seen.append(origin_of(event)), kinds=kinds.TICK)
    losses: list[Any] = []
    bus.subscribe(losses.append, kinds=DATA_LOSS)
    source = RedisStreamSource(bus, url=redis_url, stream=STREAM, consumer="c")
    while source.poll() or source.uncommitted:
        bus.drain()
    bus.drain()
    assert [origin[1] for origin in seen] == list(range(7, 17))
    status = source.status()
    assert status["trimmed"] == 4  # the four pending ones: counted, not silent
    # seq 7's entry says seq 6 was written before it: 1-6 never reached this group
    assert (status["lost"], status["loss_reports"], status["gaps"]) == (6, 1, 0)
    assert [event.payload_dict()["ranges"] for event in losses] == [((1, 6),)]
    assert losses[0].payload_dict()["producer"] == "w1"
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
         "--consumers", "3", "--partitions", "6", "--days", "1", "--ticks-per-day", "12",
         "--json"],
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
    assert aggregate["source"]["published"] == sum(w["sink"]["sent"] for w in workers)
    assert aggregate["source"]["duplicates"] == 0 and aggregate["source"]["lost"] == 0
    # the consumers shared the partitions (a partition may move while they join)
    assert aggregate["consumers"] == ["aggregator-1", "aggregator-2", "aggregator-3"]
    assert sum(source["owned"] for source in aggregate["sources"]) <= 6
    assert sum(1 for source in aggregate["sources"] if source["published"]) >= 2
    # the workers' health events travelled through the same streams
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "notaurl"], "--url must start with redis://"),
        (["--consumers", "0"], "--consumers must be >= 1"),
        (["--partitions", "0"], "--partitions must be >= 1"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_demo_cli_user_errors_are_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ringbus", "redis-demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redis-demo: ") and message in lines[0]


# -- a group sharing partitions ------------------------------------------------
def test_consumers_share_partitions_and_a_stale_one_cannot_commit(
    backend: Any, redis_url: str
) -> None:
    from ringbus.transports.redis_streams import PartitionLost

    produce(backend, redis_url, "w1", 60, per_drain=6, per_event=False, partitions=2)

    def member(name: str) -> tuple[Any, RedisStreamSource, list[Any]]:
        bus = backend.bus(clock_policy="free", name=name)
        seen: list[Any] = []
        bus.subscribe(lambda event: seen.append(origin_of(event)))
        source = RedisStreamSource(
            bus, url=redis_url, stream=STREAM, partitions=2, consumer=name, count=2, lease_ms=400
        )
        return bus, source, seen

    bus_a, a, _seen_a = member("a")
    while not a.uncommitted:  # joins, takes every partition (it is alone), reads
        a.poll(timeout=0.05)
    assert len(a.owned_streams()) == 2  # read, applied, not yet committed: then it stalls
    time.sleep(0.5)  # its leases run out
    bus_b, b, seen_b = member("b")
    while b.poll(timeout=0.05) or b.uncommitted or len(b.owned_streams()) < 2:
        bus_b.drain()
    bus_b.drain()
    # b took both partitions over, re-read what a had not committed, and applied everything
    assert sorted(seq for _p, seq in seen_b) == list(range(1, 61))
    assert b.status()["acquired"] == 2
    # a wakes up: its commit must not count what b applied a second time
    with pytest.raises(PartitionLost, match="restart this consumer"):
        bus_a.drain()
    assert a.status()["leases_lost"] >= 1 and len(a.owned_streams()) < 2
    marks = [connect(redis_url).hget(f"{s}:ringbus:hwm", "w1") for s in b.owned_streams()]
    assert len(marks) == 2 and all(int(mark or 0) > 0 for mark in marks)
