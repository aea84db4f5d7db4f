"""The Redis bridge against a real 3-node Redis Cluster: partitions spread over the nodes.

The cluster starts once per run (about a second). The tests are about the
bridge, not the core, so they run once, on the compiled core.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import ringbus
from _redis_cluster import RedisCluster, cluster_url, redis_cluster
from _redis_server import collect_garbage
from ringbus import kinds
from ringbus.transports.redis_streams import (
    PartitionLost,
    RedisStreamSink,
    RedisStreamSource,
    close_client,
    connect,
    origin_of,
    partition_streams,
)

__all__ = ["cluster_url", "collect_garbage", "redis_cluster"]  # fixtures used below

pytestmark = pytest.mark.c_extension

STREAM = "cluster:events"


def produce(url: str, name: str, count: int, *, partitions: int = 6) -> None:
    """A producer's bus that sent ``count`` events over 12 polities to the cluster."""
    bus = ringbus.EventBus(ringbus.EventBusConfig(name=name))
    sink = RedisStreamSink(
        url=url, cluster=True, stream=STREAM, partitions=partitions, batch_size=7
    ).attach(bus)
    for index in range(count):
        bus.publish(kinds.DELIVERY_COMPLETED, polity_id=f"p{index % 12}", payload={"n": index})
        if index % 7 == 6:
            bus.drain()
    bus.drain()
    assert sink.close(timeout=10), sink.status()
    assert sink.status()["failed"] == 0


def member(url: str, name: str, **options: Any) -> tuple[Any, RedisStreamSource, list[Any]]:
    """A consumer whose applied state is a list per partition, written by its commit hook."""
    bus = ringbus.EventBus(ringbus.EventBusConfig(name=name, clock_policy="free"))
    applied: list[str] = []  # applied since the last commit (all of one partition)
    seen: list[Any] = []
    options.setdefault("lease_ms", 600)

    def apply(event: Any) -> None:
        seen.append(origin_of(event))
        applied.append(json.dumps(origin_of(event)))

    bus.subscribe(apply, kinds=kinds.DELIVERY_COMPLETED)
    source = RedisStreamSource(
        bus, url=url, cluster=True, stream=STREAM, partitions=6, group="g", consumer=name,
        count=3, **options,
    )  # fmt: skip

    def commit(pipe: Any) -> None:
        if applied:
            pipe.rpush(source.slot_key(f"state:{name}"), *applied)
            applied.clear()

    source.add_commit_hook(commit)
    return bus, source, seen


def applied_state(client: Any) -> list[tuple[str, int]]:
    """Every ``(producer, seq)`` the consumers' commits stored, over all nodes."""
    keys = client.keys("state:*", target_nodes="all")
    out = [
        tuple(json.loads(item))
        for key in keys
        for item in client.lrange(key, 0, -1)  # one key, one node
    ]
    return sorted((str(producer), int(seq)) for producer, seq in out)


def test_each_partition_is_one_hash_slot_and_the_partitions_spread_over_the_nodes(
    redis_cluster: RedisCluster, cluster_url: str
) -> None:
    assert "cluster_state:ok" in redis_cluster.cli(redis_cluster.ports[1], "cluster", "info").stdout
    produce(cluster_url, "w1", 60)
    bus = ringbus.EventBus(ringbus.EventBusConfig(name="a", clock_policy="free"))
    source = RedisStreamSource(
        bus, url=cluster_url, cluster=True, stream=STREAM, partitions=6, group="g", consumer="a"
    )
    hook_keys: dict[str, str] = {}
    source.add_commit_hook(
        lambda _pipe: hook_keys.setdefault(str(source.committing), source.slot_key("state:a"))
    )
    end = time.monotonic() + 10
    while source.poll(timeout=0.02) or source.uncommitted or len(hook_keys) < 6:
        bus.drain()
        assert time.monotonic() < end, source.status()
    client = connect(cluster_url, cluster=True)
    nodes = set()
    for index, stream in enumerate(partition_streams(STREAM, 6)):
        keys = [stream, f"{stream}:g:hwm", f"{stream}:g:owner", hook_keys[stream]]
        keys.append(f"{STREAM}:rejected:{{p{index}}}")
        assert {client.keyslot(key) for key in keys} == {client.keyslot(f"{{p{index}}}")}
        assert client.exists(stream, f"{stream}:g:hwm") == 2
        nodes.add(client.get_node_from_key(stream).port)
    assert len(nodes) >= 2  # the six partitions live on more than one node
    with pytest.raises(RuntimeError, match="call it in a hook"):
        source.slot_key("state:a")
    source.close()
    close_client(client)


def test_a_sink_feeds_a_group_that_shares_partitions_and_takes_over_on_a_cluster(
    cluster_url: str,
) -> None:
    produce(cluster_url, "w1", 150)
    produce(cluster_url, "w2", 150)
    client = connect(cluster_url, cluster=True)
    members = {name: member(cluster_url, name) for name in ("a", "b", "c")}

    def run(names: list[str], until: int, seconds: float = 20) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for name in names:
                bus, source, _seen = members[name]
                source.poll(timeout=0.02)
                bus.drain()
            if len(applied_state(client)) >= until and not any(
                members[name][1].uncommitted for name in names
            ):
                return
        pytest.fail(f"not applied in {seconds} s: {len(applied_state(client))} of {until}")

    run(["a", "b", "c"], 300)
    owned = {name: members[name][1].owned_streams() for name in members}
    assert sum(len(streams) for streams in owned.values()) == 6
    assert sum(1 for streams in owned.values() if streams) >= 2  # shared out
    # c stops (no more polls, no close: its leases run out); a and b take its partitions over
    stopped = next(name for name in ("c", "b") if owned[name])
    survivors = [name for name in ("a", "b", "c") if name != stopped]
    produce(cluster_url, "w3", 150)
    run(survivors, 450)
    total = sum(len(members[name][1].owned_streams()) for name in survivors)
    assert total == 6, {name: members[name][1].owned_streams() for name in survivors}
    expected = sorted((name, seq) for name in ("w1", "w2", "w3") for seq in range(1, 151))
    assert applied_state(client) == expected  # exactly once, over every partition
    for stream in partition_streams(STREAM, 6):
        assert client.xpending(stream, "g")["pending"] == 0
    close_client(client)
    for name in survivors:
        assert members[name][1].status()["failed"] == 0
    for _bus, source, _seen in members.values():
        source.close()


def test_a_stale_consumer_cannot_commit_on_a_cluster(cluster_url: str) -> None:
    produce(cluster_url, "w1", 60, partitions=6)
    client = connect(cluster_url, cluster=True)
    bus_a, a, _seen_a = member(cluster_url, "a", lease_ms=400)
    while not a.uncommitted:  # joins, takes every partition (it is alone), reads
        a.poll(timeout=0.05)
    time.sleep(0.5)  # its leases run out
    bus_b, b, seen_b = member(cluster_url, "b", lease_ms=400)
    end = time.monotonic() + 20
    while b.poll(timeout=0.05) or b.uncommitted or len(b.owned_streams()) < 6:
        bus_b.drain()
        assert time.monotonic() < end, b.status()
    bus_b.drain()
    assert sorted(seq for _p, seq in seen_b) == list(range(1, 61))
    with pytest.raises(PartitionLost, match="restart this consumer"):
        bus_a.drain()
    assert applied_state(client) == [("w1", seq) for seq in range(1, 61)]
    a.close()
    b.close()
    close_client(client)


def test_the_readme_cluster_example_runs(
    cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    start = text.index("## Redis Cluster")
    section = text[start : text.index("\n## ", start + 1)]
    [block] = re.findall(r"```python\n(.*?)```", section, re.S)
    block = block.replace("redis://127.0.0.1:7000/0", cluster_url)
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines()[-1] == "4"


def test_invalid_entries_of_a_single_stream_go_to_its_slot(cluster_url: str) -> None:
    client = connect(cluster_url, cluster=True)
    client.xadd(STREAM, {"producer": "w1", "seq": "1", "event": "{not json"})
    bus = ringbus.EventBus(ringbus.EventBusConfig(name="a", clock_policy="free"))
    source = RedisStreamSource(bus, url=cluster_url, cluster=True, stream=STREAM)
    assert source.poll() == 1
    bus.drain()
    assert source.invalid == 1 and source.status()["failed"] == 0
    assert client.xpending(STREAM, "ringbus")["pending"] == 0
    rejected = client.xrange(f"{STREAM}:rejected:{{{STREAM}}}")
    assert "JSONDecodeError" in rejected[0][1][b"problem"].decode()
    assert client.keyslot(source.state_key) == client.keyslot(STREAM)
    source.close()
    close_client(client)


GROUP_CONSUMER = """
import json, sys, time
import ringbus
from ringbus.transports.redis_streams import PartitionLost, RedisStreamSource, connect, origin_of

url, stream, name, total = sys.argv[1:5]
total = int(total)
client = connect(url, cluster=True)


def done():
    keys = client.keys("state:*", target_nodes="all")
    return sum(client.llen(key) for key in keys) >= total


def consume():
    applied = []  # since the last commit: one partition's events
    bus = ringbus.EventBus(ringbus.EventBusConfig(name=name, clock_policy="free"))

    def apply(event):
        applied.append(json.dumps(origin_of(event)))
        time.sleep(0.004)  # some work per event: the killed consumer dies mid-share

    bus.subscribe(apply, kinds="DELIVERY_COMPLETED")
    source = RedisStreamSource(bus, client, stream=stream, partitions=6, group="g",
                               consumer=name, count=3, lease_ms=1000)

    def commit(pipe):
        if applied:
            pipe.rpush(source.slot_key(f"state:{name}"), *applied)
            pipe.rpush(source.slot_key("outbox"), *applied)
            applied.clear()

    source.add_commit_hook(commit)
    source.run(stop=lambda: not source.uncommitted and done(), timeout=0.1)
    return source


print("started", flush=True)
while True:
    try:
        source = consume()
        break
    except PartitionLost as error:
        print(error, file=sys.stderr, flush=True)
print("done", json.dumps(source.status()), flush=True)
"""


def test_three_consumer_processes_one_killed_totals_exact_on_a_cluster(cluster_url: str) -> None:
    per_producer = 200
    produce(cluster_url, "w1", per_producer)
    produce(cluster_url, "w2", per_producer)
    total = 2 * per_producer
    client = connect(cluster_url, cluster=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(ringbus.__file__).resolve().parents[1]), env.get("PYTHONPATH")])
    )
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", GROUP_CONSUMER, cluster_url, STREAM, name, str(total)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("c1", "c2", "c3")
    }
    leases = [f"{stream}:g:owner" for stream in partition_streams(STREAM, 6)]

    def owners() -> dict[str, str]:
        return {key: (client.get(key) or b"").decode() for key in leases}

    def committed(name: str) -> int:
        return sum(client.llen(f"state:{name}:{{p{index}}}") for index in range(6))

    try:
        deadline = time.monotonic() + 30
        held = owners()
        while time.monotonic() < deadline:
            held = owners()
            if "c1" in held.values() and len(set(held.values()) - {""}) >= 2 and committed("c1"):
                break
            time.sleep(0.01)
        processes["c1"].send_signal(signal.SIGKILL)
        victim = [index for index, key in enumerate(leases) if held[key] == "c1"]
        assert victim and committed("c1") < total, held
        processes["c1"].communicate(timeout=10)
        for name in ("c2", "c3"):
            out, err = processes[name].communicate(timeout=60)
            assert processes[name].returncode == 0, err
            assert out.splitlines()[-1].startswith("done ")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
    expected = sorted(
        [("w1", seq) for seq in range(1, per_producer + 1)]
        + [("w2", seq) for seq in range(1, per_producer + 1)]
    )
    assert applied_state(client) == expected  # nothing lost, nothing doubled
    outbox = [
        tuple(json.loads(item))
        for index in range(6)
        for item in client.lrange(f"outbox:{{p{index}}}", 0, -1)
    ]
    assert sorted(outbox) == expected  # effects written in the commit: exactly once
    for stream in partition_streams(STREAM, 6):
        assert client.xpending(stream, "g")["pending"] == 0
    # the survivors committed events of the killed consumer's partitions: they took them over
    assert any(
        client.llen(f"state:{name}:{{p{index}}}") for name in ("c2", "c3") for index in victim
    )
    close_client(client)
