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

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
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

__all__ = ["main", "merge_counts", "run_aggregator", "run_worker"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "ringbus:demo"


def _keys(stream: str) -> dict[str, str]:
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
    connect(url).hset(_keys(stream)["results"], name, json.dumps(result))
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
    keys = _keys(stream)
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


class _TemporaryRedis:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringbus redis-demo",
        description=(
            "Run demo-world workers in separate processes, send their events through a "
            "Redis stream, aggregate KPIs in one consumer, and check the totals add up."
        ),
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--spawn-redis",
        action="store_true",
        help="start a temporary redis-server on a free port instead of using --url",
    )
    parser.add_argument("--stream", default=DEFAULT_STREAM, help="stream key")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--days", type=int, default=3, help="days each world runs (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="first worker's seed (then +1 each)")
    parser.add_argument("--events-per-tick", type=int, default=16)
    parser.add_argument("--ticks-per-day", type=int, default=24)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = parser.add_subparsers(dest="role")
    worker = sub.add_parser("worker", help="run one worker (used by the demo itself)")
    worker.add_argument("name")
    aggregate = sub.add_parser("aggregate", help="run the aggregator only")
    aggregate.add_argument("names", nargs="+", help="the workers to wait for")
    aggregate.add_argument("--count", type=int, default=1_000, help="entries read per poll")
    return parser


def _worker_names(count: int) -> list[str]:
    return [f"world-{index + 1}" for index in range(count)]


def _report(workers: list[dict[str, Any]], aggregate: dict[str, Any]) -> tuple[bool, list[str]]:
    summed = merge_counts(worker["kpi"]["totals"] for worker in workers)
    merged = merge_counts([aggregate["kpi"]["totals"]])
    polities_sum = merge_counts(worker["kpi"]["polities"] for worker in workers)
    polities_merged = merge_counts([aggregate["kpi"]["polities"]])
    ok = summed == merged and polities_sum == polities_merged
    columns = {
        "deliveries_completed": "completed",
        "deliveries_failed": "failed",
        "depots_built": "depots",
        "incidents": "incidents",
    }
    width = max(len(name) for name in [*(worker["name"] for worker in workers), "aggregator"])

    def row(label: str, totals: dict[str, Any]) -> str:
        return f"{label:<{width}}  " + "  ".join(f"{totals[key]:>10}" for key in columns)

    lines = [f"{'':<{width}}  " + "  ".join(f"{title:>10}" for title in columns.values())]
    lines += [row(worker["name"], worker["kpi"]["totals"]) for worker in workers]
    lines.append(row("sum", summed))
    lines.append(row("aggregator", merged))
    source = aggregate["source"]
    lines.append(
        f"aggregator read {source['published']} events "
        f"({source['duplicates']} duplicates skipped, {source['invalid']} invalid)"
    )
    lines.append("totals match: " + ("yes" if ok else "NO"))
    return ok, lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the multi-process demo (or one of its roles); return the exit code."""
    args = _parser().parse_args(argv)
    if args.workers < 1 or args.days < 0:
        print("redis-demo: --workers must be >= 1 and --days >= 0", file=sys.stderr)
        return 2
    names = _worker_names(args.workers)
    if args.role == "worker":
        seed = args.seed + names.index(args.name) if args.name in names else args.seed
        result = run_worker(
            args.url,
            args.name,
            seed=seed,
            days=args.days,
            stream=args.stream,
            events_per_tick=args.events_per_tick,
            ticks_per_day=args.ticks_per_day,
        )
        print(json.dumps(result["kpi"]["totals"], sort_keys=True))
        return 1 if "error" in result else 0
    if args.role == "aggregate":
        result = run_aggregator(args.url, args.names, stream=args.stream, count=args.count)
        print(json.dumps(result["kpi"]))
        return 0
    spawned = _TemporaryRedis() if args.spawn_redis else None
    url = spawned.url if spawned else args.url
    try:
        client = connect(url, timeout=2.0)
        try:
            client.delete(args.stream, *_keys(args.stream).values())
        except Exception as error:  # redis.ConnectionError and friends
            print(
                f"redis-demo: cannot reach Redis at {url} ({error}); start a redis-server "
                "there or pass --spawn-redis",
                file=sys.stderr,
            )
            return 1
        common = [
            "--url", url, "--stream", args.stream, "--workers", str(args.workers),
            "--days", str(args.days), "--seed", str(args.seed),
            "--events-per-tick", str(args.events_per_tick),
            "--ticks-per-day", str(args.ticks_per_day),
        ]  # fmt: skip
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "ringbus", "redis-demo", *common, "worker", name],
                stdout=subprocess.DEVNULL,
            )
            for name in names
        ]
        aggregate = run_aggregator(url, names, stream=args.stream)
        codes = [process.wait() for process in processes]
        results = client.hgetall(_keys(args.stream)["results"])
        workers = [json.loads(results[name.encode()]) for name in names]
        ok, lines = _report(workers, aggregate)
        ok = ok and not any(codes)
        if args.json:
            print(json.dumps({"ok": ok, "workers": workers, "aggregator": aggregate}))
        else:
            print("\n".join(lines))
        return 0 if ok else 1
    finally:
        if spawned is not None:
            spawned.stop()
