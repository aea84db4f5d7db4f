"""Several sim processes, several consumers: ``python -m ringbus redis-demo``.

Each worker process runs a seeded :class:`~ringbus.demo.DemoWorld` on its
own bus and sends its events to a partitioned Redis stream through a
:class:`~ringbus.transports.redis_streams.RedisStreamSink` (partitioned by
``polity_id``, sent from a background thread); it also counts its own KPIs
and reports them. Several aggregator processes form one consumer group:
they divide the partitions between them (each reads its share through a
:class:`~ringbus.transports.redis_streams.RedisStreamSource`) and run a
:class:`~ringbus.sim.kpi.KpiSubscriber` over what they read. The sum of the
aggregators' totals equals the sum of the workers' own — the demo checks
that and exits non-zero if they differ.

Each aggregator stores its KPI state in the same transaction as each
acknowledgement (under its own key), so any of them can be killed: the
others take its partitions over after the lease runs out, and it can be
started again (``redis-demo aggregate``) without losing or doubling
anything.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._bus import EventBus
from .._config import EventBusConfig
from ..sim.health import BUS_HEALTH, HealthReporter
from ..sim.kpi import KpiSubscriber
from ..transports.redis_streams import RedisStreamSink, RedisStreamSource, as_text, connect
from .world import DemoWorld

__all__ = [
    "DEFAULT_STREAM",
    "DEFAULT_URL",
    "TemporaryRedis",
    "consumer_names",
    "merge_counts",
    "run_aggregator",
    "group_totals",
    "run_worker",
    "stream_keys",
    "worker_names",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "ringbus:demo"


def stream_keys(stream: str) -> dict[str, str]:
    return {
        "results": f"{stream}:workers",
        "kpi": f"{stream}:aggregator:kpi:",  # + the consumer's name
        "consumers": f"{stream}:aggregator:consumers",
    }


def merge_counts(parts: Iterable[Any]) -> Any:
    """Add up nested dicts of counts key by key; other values are left out.

    Used to sum the workers' KPI totals (derived values such as rates are
    not additive and are dropped).
    """
    items = list(parts)
    if items and all(isinstance(item, dict) for item in items):
        keys = sorted({key for item in items for key in item})
        merged = {key: merge_counts([item[key] for item in items if key in item]) for key in keys}
        return {key: value for key, value in merged.items() if value is not None}
    if items and all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        return sum(items)
    return None


def run_worker(
    url: str,
    name: str,
    *,
    seed: int,
    days: int,
    stream: str = DEFAULT_STREAM,
    partitions: int = 4,
    events_per_tick: int = 16,
    ticks_per_day: int = 24,
    health_every: int = 24,
) -> dict[str, Any]:
    """Run one worker: a demo world on a bus named ``name``, sent to ``stream``'s partitions.

    Returns (and stores in the hash ``<stream>:workers``) the worker's KPI
    summary, the last seq it wrote to each partition and its sink's status.
    """
    bus = EventBus(EventBusConfig(name=name))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    sink = RedisStreamSink(connect(url, timeout=2.0), stream=stream, partitions=partitions)
    sink.attach(bus)
    HealthReporter(every_ticks=health_every, transports=[sink]).attach(bus)
    world = DemoWorld(bus, seed=seed, events_per_tick=events_per_tick, ticks_per_day=ticks_per_day)
    world.run(days)
    bus.drain()
    complete = sink.close(timeout=30.0)  # bounded: rides out a short outage
    status = sink.status()
    result = {
        "name": name,
        "last_seq": sink.last_sent_seq,
        "last_seqs": sink.last_seqs(),
        "kpi": kpi.summary(last_days=0),
        "sink": status,
    }
    if not complete or status["dropped"]:
        result["error"] = f"{status['buffered']} events unsent, {status['dropped']} dropped"
    connect(url).hset(stream_keys(stream)["results"], name, json.dumps(result))
    return result


def _all_applied(client: Any, stream: str, workers: Sequence[str]) -> bool:
    """Whether the group has committed every event every worker in ``workers`` wrote."""
    results = client.hgetall(stream_keys(stream)["results"])
    done = {as_text(key): json.loads(value) for key, value in results.items()}
    if any(name not in done for name in workers):
        return False
    for name in workers:
        for part, last in done[name]["last_seqs"].items():
            committed = client.hget(f"{part}:aggregator:hwm", name)
            if int(committed or 0) < last:
                return False
    return True


def run_aggregator(
    url: str,
    workers: Sequence[str],
    *,
    stream: str = DEFAULT_STREAM,
    partitions: int = 4,
    consumer: str = "aggregator",
    count: int = 20,
    lease_ms: int = 2_000,
    timeout: float = 120.0,
    wait_for: int = 1,
) -> dict[str, Any]:
    """Consume ``stream``'s partitions, with the group's other consumers, until all is applied.

    With ``wait_for`` N, it first waits (up to 10 s) until N consumers of the
    group have started, so consumers started together share the partitions
    from the start instead of the first one taking them all.

    Returns this consumer's KPI summary, its source's status and the last
    health report of each worker it read. Its KPI state is stored with each
    acknowledgement under ``<stream>:aggregator:kpi:<consumer>``, so a
    restarted aggregator continues where it last committed.
    """
    keys = stream_keys(stream)
    client = connect(url, timeout=2.0)
    client.sadd(keys["consumers"], consumer)
    waiting = time.monotonic() + 10.0
    while client.scard(keys["consumers"]) < wait_for and time.monotonic() < waiting:
        time.sleep(0.02)
    bus = EventBus(EventBusConfig(name=consumer, clock_policy="free"))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    state_key = keys["kpi"] + consumer
    saved = client.get(state_key)
    if saved:
        kpi.load_state(json.loads(saved))
    health: dict[str, Any] = {}

    def keep_health(event: Any) -> None:
        origin = [tag for tag in event.tags if tag.startswith("producer:")]
        health[origin[0].split(":", 1)[1] if origin else "?"] = event.payload_dict()

    bus.subscribe(keep_health, kinds={BUS_HEALTH})
    source = RedisStreamSource(
        bus,
        client,
        stream=stream,
        partitions=partitions,
        group="aggregator",
        consumer=consumer,
        count=count,
        lease_ms=lease_ms,
    )
    source.add_commit_hook(lambda pipe: pipe.set(state_key, json.dumps(kpi.save_state())))
    deadline = time.monotonic() + timeout
    checked = [0.0]

    def finished() -> bool:
        now = time.monotonic()
        if source.uncommitted or now - checked[0] < 0.1:
            return False
        checked[0] = now
        if _all_applied(client, stream, workers):
            return True
        if now > deadline:
            raise TimeoutError(f"the workers' events were not all applied within {timeout} s")
        return False

    source.run(stop=finished, timeout=0.1)
    return {
        "consumer": consumer,
        "kpi": kpi.summary(last_days=0),
        "source": source.status(),
        "health": health,
    }


def group_totals(url: str, stream: str = DEFAULT_STREAM) -> dict[str, Any]:
    """The KPI totals and polities every aggregator of the group committed, added up."""
    client = connect(url, timeout=2.0)
    keys = stream_keys(stream)
    summaries = []
    for name in sorted(as_text(name) for name in client.smembers(keys["consumers"])):
        saved = client.get(keys["kpi"] + name)
        if saved:
            kpi = KpiSubscriber()
            kpi.load_state(json.loads(saved))
            summaries.append(kpi.summary(last_days=0))
    return {
        "totals": merge_counts(summary["totals"] for summary in summaries) or {},
        "polities": merge_counts(summary["polities"] for summary in summaries) or {},
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TemporaryRedis:
    """A redis-server of our own on a free port, for ``--spawn-redis``."""

    def __init__(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-demo: --spawn-redis needs redis-server on PATH")
        client_module = importlib.util.find_spec("redis")
        if client_module is None:  # checked before anything is started
            raise SystemExit("redis-demo: needs redis-py: pip install 'ringbus[redis]'")
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="ringbus-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        try:
            subprocess.run(
                [
                    server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--dir", self.dir,
                    "--pidfile", os.path.join(self.dir, "redis.pid"),
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
            client = connect(self.url, timeout=0.5)
            for _ in range(200):
                try:
                    client.ping()
                    return
                except Exception:
                    time.sleep(0.05)
            raise SystemExit(f"redis-demo: redis-server on port {self.port} did not start")
        except BaseException:
            self.stop()  # nothing is left behind: no server, no folder
            raise

    def stop(self) -> None:
        """Stop the server (by its pid if no client can reach it) and remove its folder."""
        with contextlib.suppress(Exception):  # the server drops the connection as it stops
            connect(self.url, timeout=0.5).shutdown(nosave=True)
        with contextlib.suppress(OSError, ValueError):
            pid = int(Path(self.dir, "redis.pid").read_text(encoding="ascii").strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)  # raises once the process is gone
                time.sleep(0.02)
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_names(count: int) -> list[str]:
    return [f"world-{index + 1}" for index in range(count)]


def consumer_names(count: int) -> list[str]:
    return [f"aggregator-{index + 1}" for index in range(count)]
