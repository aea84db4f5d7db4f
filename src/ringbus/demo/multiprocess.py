"""Several sim processes, one consumer: ``python -m ringbus redis-demo``.

Each worker process runs a seeded :class:`~ringbus.demo.DemoWorld` on its
own bus and sends every drain to a Redis stream through a
:class:`~ringbus.transports.redis_streams.RedisStreamSink`; it also counts its own KPIs
and reports them. One aggregator process reads the stream through a
:class:`~ringbus.transports.redis_streams.RedisStreamSource` into its bus and runs a
:class:`~ringbus.sim.kpi.KpiSubscriber` over the merged events. The aggregator's
totals equal the sum of the workers' own — the demo checks that and exits
non-zero if they differ.

The aggregator stores its KPI state in the same transaction as each
acknowledgement, so it can be killed and started again
(``redis-demo aggregate``) without losing or doubling anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
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
    "merge_counts",
    "run_aggregator",
    "run_worker",
    "stream_keys",
    "worker_names",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "ringbus:demo"


def stream_keys(stream: str) -> dict[str, str]:
    return {
        "results": f"{stream}:workers",
        "kpi": f"{stream}:aggregator:kpi",
        "hwm": f"{stream}:aggregator:hwm",
        "health": f"{stream}:aggregator:health",
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
    events_per_tick: int = 16,
    ticks_per_day: int = 24,
    health_every: int = 24,
) -> dict[str, Any]:
    """Run one worker: a demo world on a bus named ``name``, sent to ``stream``.

    Returns (and stores in the hash ``<stream>:workers``) the worker's KPI
    summary, the last seq it sent and its sink's status.
    """
    bus = EventBus(EventBusConfig(name=name))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    sink = RedisStreamSink(connect(url, timeout=2.0), stream=stream).attach(bus)
    assert isinstance(sink, RedisStreamSink)
    HealthReporter(every_ticks=health_every, transports=[sink]).attach(bus)
    world = DemoWorld(bus, seed=seed, events_per_tick=events_per_tick, ticks_per_day=ticks_per_day)
    world.run(days)
    bus.drain()
    for _ in range(50):  # the final flush: ride out a short outage
        if not sink.buffered:
            break
        sink.flush(force=True)
        if sink.buffered:
            time.sleep(0.1)
    status = sink.status()
    result = {
        "name": name,
        "last_seq": sink.last_sent_seq,
        "kpi": kpi.summary(last_days=0),
        "sink": status,
    }
    if sink.buffered or status["dropped"]:
        result["error"] = f"{sink.buffered} events unsent, {status['dropped']} dropped"
    connect(url).hset(stream_keys(stream)["results"], name, json.dumps(result))
    return result


def run_aggregator(
    url: str,
    workers: Sequence[str],
    *,
    stream: str = DEFAULT_STREAM,
    consumer: str = "aggregator",
    count: int = 1_000,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Consume ``stream`` until every worker in ``workers`` is done; return the KPI summary.

    The KPI state is stored with each acknowledgement, so a restarted
    aggregator continues where the last one committed.
    """
    keys = stream_keys(stream)
    client = connect(url, timeout=2.0)
    bus = EventBus(EventBusConfig(name=consumer, clock_policy="free"))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    saved = client.get(keys["kpi"])
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
        group="aggregator",
        consumer=consumer,
        count=count,
        state_key=keys["hwm"],
    )
    source.add_commit_hook(lambda pipe: pipe.set(keys["kpi"], json.dumps(kpi.save_state())))
    deadline = time.monotonic() + timeout
    while True:
        published = source.poll()
        bus.drain()
        if not published and not source.uncommitted:
            results = client.hgetall(keys["results"])
            done = {as_text(key): json.loads(value) for key, value in results.items()}
            marks = source.high_water_marks()
            if all(
                name in done and marks.get(name, 0) >= done[name]["last_seq"] for name in workers
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"workers {sorted(set(workers) - set(done))} did not finish within "
                    f"{timeout} s (high-water marks: {marks})"
                )
            time.sleep(0.01)
    return {"kpi": kpi.summary(last_days=0), "source": source.status(), "health": health}


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
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="ringbus-redis-")
        subprocess.run(
            [
                server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "yes", "--dir", self.dir,
                "--pidfile", os.path.join(self.dir, "redis.pid"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = connect(self.url, timeout=0.5)
        for _ in range(200):
            try:
                client.ping()
                return
            except Exception:
                time.sleep(0.05)
        raise SystemExit(f"redis-demo: redis-server on port {self.port} did not start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # the server drops the connection as it stops
            connect(self.url).shutdown(nosave=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_names(count: int) -> list[str]:
    return [f"world-{index + 1}" for index in range(count)]
