"""The Redis bridge under faults: a real redis-server killed, restarted and frozen by the tests.

These tests start servers and processes of their own and take seconds each,
so they run once, on the compiled core (they are not about the core).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import ringbus
from _redis_server import RedisServer, collect_garbage, free_port, own_redis
from ringbus import kinds
from ringbus.sim.health import DATA_LOSS
from ringbus.transports.redis_streams import (
    RedisStreamSink,
    RedisStreamSource,
    connect,
    origin_of,
    partition_streams,
)

__all__ = ["collect_garbage", "own_redis"]  # a fixture used by the tests below

pytestmark = pytest.mark.c_extension

STREAM = "faults:events"


def producer(url: str, name: str = "w1", **options: Any) -> tuple[Any, RedisStreamSink]:
    bus = ringbus.EventBus(ringbus.EventBusConfig(name=name))
    sink = RedisStreamSink(
        connect(url, timeout=0.5),
        stream=STREAM,
        retry_base=0.01,
        retry_max=0.1,
        report_every=0,
        **options,
    ).attach(bus)
    return bus, sink


def publish(bus: Any, count: int, *, per_drain: int = 20, polities: int = 1) -> None:
    for index in range(count):
        bus.publish(
            kinds.DELIVERY_COMPLETED, polity_id=f"p{index % polities}", payload={"n": index}
        )
        if index % per_drain == per_drain - 1:
            bus.drain()
    bus.drain()


def consumer(url: str, **options: Any) -> tuple[Any, RedisStreamSource, list[Any], list[Any]]:
    bus = ringbus.EventBus(ringbus.EventBusConfig(name="agg", clock_policy="free"))
    applied: list[Any] = []
    losses: list[Any] = []
    bus.subscribe(lambda event: applied.append(origin_of(event)), kinds=kinds.DELIVERY_COMPLETED)
    bus.subscribe(losses.append, kinds=DATA_LOSS)
    source = RedisStreamSource(bus, connect(url, timeout=1.0), stream=STREAM, **options)
    return bus, source, applied, losses


def consume_all(bus: Any, source: RedisStreamSource, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not source.poll() and not source.uncommitted:
            break
        bus.drain()
    bus.drain()


# -- a frozen server ---------------------------------------------------------
def test_a_frozen_redis_does_not_stall_the_drains(own_redis: RedisServer) -> None:
    bus, sink = producer(own_redis.url)

    def drains(count: int) -> list[float]:
        took = []
        for _ in range(count):
            for index in range(100):
                bus.publish(kinds.DELIVERY_COMPLETED, payload={"n": index})
            started = time.perf_counter()
            bus.drain()
            took.append(time.perf_counter() - started)
            time.sleep(0.01)
        return took

    before = drains(50)
    assert sink.flush(timeout=10)
    own_redis.freeze()
    try:
        frozen = drains(120)  # > 1 s of the loop while Redis answers nothing
        state_while_frozen = sink.state()
    finally:
        own_redis.thaw()
    assert sink.flush(timeout=30)
    # a send inside drain() would cost the socket timeout (0.5 s) or more
    bound = min(0.45, max(0.15, 20 * max(before)))
    assert max(frozen) < bound, f"longest drain {max(frozen):.3f} s, baseline {max(before):.4f} s"
    assert state_while_frozen == "backoff"
    assert sink.status()["dropped"] == 0
    seqs = [
        record["seq"]
        for _id, fields in connect(own_redis.url).xrange(STREAM)
        for record in json.loads(fields[b"events"])
    ]
    # a write that timed out may have been applied: a retry may repeat it, never lose it
    assert sorted(set(seqs)) == list(range(1, 170 * 100 + 1))
    assert sink.close(timeout=10)


# -- a server that lost its data, or kept it -----------------------------------
def test_redis_killed_without_persistence_loss_is_detected_and_reported(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    bus, sink = producer(own_redis.url)
    producer_losses: list[Any] = []
    bus.subscribe(producer_losses.append, kinds=DATA_LOSS)
    agg, source, applied, losses = consumer(own_redis.url, group="g", count=50)
    publish(bus, 200)
    assert sink.flush(timeout=10)
    consume_all(agg, source)
    assert [seq for _p, seq in applied] == list(range(1, 201))
    publish(bus, 100)  # seqs 201-300: written, never read
    assert sink.flush(timeout=10)
    with caplog.at_level(logging.WARNING):
        own_redis.kill()
        own_redis.start()  # empty: no AOF, no snapshot
        publish(bus, 100)  # seqs 301-400
        assert sink.flush(timeout=10)
        bus.drain()  # publishes the producer's loss report at its end ...
        bus.drain()  # ... which the next drain delivers
        assert source.poll() == 0  # NOGROUP: the group is re-created
        assert source.state() == "recovering"
        consume_all(agg, source)
    # the producer says so: its stream is gone
    status = sink.status()
    assert status["redis_data_losses"] == 1 and status["dropped"] == 0
    assert "is gone (Redis restarted without its data?)" in caplog.text
    assert len(producer_losses) == 1
    assert producer_losses[0].payload_dict()["ranges"] == ((1, 300),)  # at risk: all it wrote
    # the consumer went on, applied everything once, and names exactly what it missed
    assert [seq for _p, seq in applied] == [*range(1, 201), *range(301, 401)]
    assert source.status()["recoveries"] == 1
    assert (source.status()["lost"], source.status()["state"]) == (100, "ok")
    own = [loss for loss in losses if origin_of(loss) is None]
    assert [loss.payload_dict()["ranges"] for loss in own] == [((201, 300),)]
    assert own[0].payload_dict()["producer"] == "w1"
    # the producer's own report travelled through the stream too
    forwarded = [loss for loss in losses if origin_of(loss) is not None]
    assert [loss.payload_dict()["ranges"] for loss in forwarded] == [((1, 300),)]
    assert "consumer group 'g' of stream 'faults:events' was gone" in caplog.text
    assert "lost events of w1, seqs 201-300" in caplog.text
    # the marks were written again: a restarted consumer skips what was applied
    last = str(bus.latest_seq()).encode()  # 401: the producer's loss report came last
    assert connect(own_redis.url).hget(f"{STREAM}:g:hwm", "w1") == last == b"401"
    assert sink.close(timeout=10)


def test_redis_killed_with_an_append_only_file_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path, appendonly=True)
    server.start()
    try:
        bus, sink = producer(server.url)
        producer_losses: list[Any] = []
        bus.subscribe(producer_losses.append, kinds=DATA_LOSS)
        agg, source, applied, losses = consumer(server.url, group="g", count=50)
        publish(bus, 200)
        assert sink.flush(timeout=10)
        consume_all(agg, source)
        publish(bus, 100)
        assert sink.flush(timeout=10)
        server.kill()
        server.start()  # replays the append-only file
        publish(bus, 100)
        assert sink.flush(timeout=10)
        bus.drain()
        consume_all(agg, source)
        assert [seq for _p, seq in applied] == list(range(1, 401))
        assert losses == [] and producer_losses == []
        assert source.status()["recoveries"] == 0 and sink.status()["redis_data_losses"] == 0
        assert sink.status()["dropped"] == 0
        assert sink.close(timeout=10)
    finally:
        if server.ping():
            server.stop()


# -- blocking reads ------------------------------------------------------------
def test_an_idle_consumer_sleeps_in_redis_and_wakes_for_new_entries(
    own_redis: RedisServer,
) -> None:
    agg, source, applied, _losses = consumer(own_redis.url)
    started_cpu, started = time.thread_time(), time.monotonic()
    assert source.run(idle_exit=1.5, timeout=0.5) == 0
    idle_wall, idle_cpu = time.monotonic() - started, time.thread_time() - started_cpu
    assert idle_wall >= 1.5
    # a busy poll costs a whole core; a blocked read almost nothing
    assert idle_cpu < 0.2 * idle_wall, f"{idle_cpu:.3f} s of CPU in {idle_wall:.2f} s idle"
    assert source.status()["reads"] <= 10

    bus, sink = producer(own_redis.url)
    # The producing loop runs in its own thread, which takes the bus over.
    timer = threading.Timer(
        0.3,
        lambda: (bus.transfer_to_current_thread(), publish(bus, 5), sink.flush(timeout=10)),
    )
    timer.start()
    try:
        started = time.monotonic()
        assert source.poll(timeout=20) == 1  # one entry: the batch of 5
        waited = time.monotonic() - started
    finally:
        timer.join()
        bus.transfer_to_current_thread()  # back to this thread, which closes it
    assert 0.2 < waited < 10  # woke up for the entry, not at the timeout
    agg.drain()
    assert [seq for _p, seq in applied] == [1, 2, 3, 4, 5]

    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    source.run(stop, timeout=0.2)
    assert time.monotonic() - started < 5
    assert sink.close(timeout=10)


# -- several consumers, one killed -----------------------------------------------
GROUP_CONSUMER = """
import json, os, sys, time
import ringbus
from ringbus.transports.redis_streams import PartitionLost, RedisStreamSource, connect, origin_of

url, stream, name, total, log_path = sys.argv[1:6]
total = int(total)
client = connect(url)
state_key = f"state:{name}"
log = open(log_path, "a")


def done():
    names = [key.decode() for key in client.keys("state:*")]
    return sum(len(json.loads(client.get(key) or "[]")) for key in names) >= total


def consume():
    state = json.loads(client.get(state_key) or "[]")  # the applied state: exactly once
    effects = []  # side effects made exactly once: written in the commit transaction
    bus = ringbus.EventBus(ringbus.EventBusConfig(name=name, clock_policy="free"))

    def apply(event):
        origin = list(origin_of(event))
        state.append(origin)
        log.write(json.dumps(origin) + "\\n")  # a side effect outside the state: at least once
        log.flush()
        effects.append(json.dumps(origin))
        time.sleep(0.0005)

    def commit(pipe):
        pipe.set(state_key, json.dumps(state))
        if effects:
            pipe.rpush("outbox", *effects)
            effects.clear()

    bus.subscribe(apply, kinds="DELIVERY_COMPLETED")
    source = RedisStreamSource(bus, client, stream=stream, partitions=6, group="g",
                               consumer=name, count=3, lease_ms=1500)
    source.add_commit_hook(commit)
    source.run(stop=lambda: not source.uncommitted and done(), timeout=0.1)
    return source


print("started", flush=True)
while True:
    try:
        source = consume()
        break
    except PartitionLost as error:  # too slow to renew: start again from the committed state
        print(error, file=sys.stderr, flush=True)
print("done", json.dumps(source.status()), flush=True)
"""


def test_three_consumers_one_killed_mid_drain_totals_exact(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    url = own_redis.url
    per_producer = 400
    for name in ("w1", "w2"):
        bus, sink = producer(url, name, partitions=6, batch_size=7)
        publish(bus, per_producer, per_drain=7, polities=12)
        assert sink.close(timeout=10)
    total = 2 * per_producer
    client = connect(url)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(ringbus.__file__).resolve().parents[1]), env.get("PYTHONPATH")])
    )
    log = tmp_path / "handler.log"
    names = ["c1", "c2", "c3"]
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", GROUP_CONSUMER, url, STREAM, name, str(total), str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }

    def stop_all() -> str:
        errors = ""
        for name, process in processes.items():
            if process.poll() is None:
                process.kill()
            errors += f"--- {name}:\n{process.communicate(timeout=10)[1]}"
        return errors

    leases = [f"{stream}:g:owner" for stream in partition_streams(STREAM, 6)]

    def owners() -> dict[str, str]:
        return {key: (client.get(key) or b"").decode() for key in leases}

    def committed(name: str) -> int:
        return len(json.loads(client.get(f"state:{name}") or "[]"))

    # wait until the partitions are shared out and c1 is in the middle of its share
    deadline = time.monotonic() + 60
    held = owners()
    while time.monotonic() < deadline:
        held = owners()
        if "c1" in held.values() and len(set(held.values()) - {""}) >= 2 and committed("c1") >= 20:
            break
        time.sleep(0.01)
    processes["c1"].send_signal(signal.SIGKILL)
    victim_partitions = [key for key, owner in held.items() if owner == "c1"]
    assert victim_partitions and committed("c1") < total, f"{held} {stop_all()}"
    killed_at = time.monotonic()
    processes["c1"].communicate(timeout=10)
    taken_over = None
    while time.monotonic() < killed_at + 30:
        held = owners()
        if all(held[key] not in ("", "c1") for key in victim_partitions):
            taken_over = time.monotonic() - killed_at
            break
        time.sleep(0.01)
    if taken_over is None:
        pytest.fail(
            f"the dead consumer's partitions were never taken over: {owners()}\n{stop_all()}"
        )
    # the lease (1.5 s) is the idle timeout: taken over soon after it runs out
    assert taken_over < 1.5 * 2 + 1.0, f"takeover after {taken_over:.2f} s"

    outputs = {}
    for name in ("c2", "c3"):
        out, err = processes[name].communicate(timeout=120)
        assert processes[name].returncode == 0, err
        lines = out.splitlines()
        assert lines[0] == "started" and lines[1].startswith("done ")
        outputs[name] = json.loads(lines[1].split(" ", 1)[1])
    expected = sorted(
        [("w1", seq) for seq in range(1, per_producer + 1)]
        + [("w2", seq) for seq in range(1, per_producer + 1)]
    )
    applied = [
        tuple(origin)
        for name in names
        for origin in json.loads(client.get(f"state:{name}") or "[]")
    ]
    assert sorted(applied) == expected  # the applied state: nothing lost, nothing doubled
    outbox = [tuple(json.loads(item)) for item in client.lrange("outbox", 0, -1)]
    assert sorted(outbox) == expected  # side effects written with the commit: exactly once
    logged = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    assert set(logged) == set(expected)  # side effects outside it: at least once
    for stream in partition_streams(STREAM, 6):
        assert client.xpending(stream, "g")["pending"] == 0
    statuses = [outputs[name] for name in ("c2", "c3")]
    assert sum(status["acquired"] for status in statuses) >= len(victim_partitions)
    assert redis.Redis.from_url(url).ping()
