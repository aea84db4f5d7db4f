"""``ringbus redis-demo``: worker processes feed a group of KPI aggregators through Redis."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from typing import Any

from ..demo.multiprocess import (
    DEFAULT_STREAM,
    DEFAULT_URL,
    TemporaryRedis,
    consumer_names,
    group_totals,
    merge_counts,
    run_aggregator,
    run_worker,
    stream_keys,
    worker_names,
)
from ..transports.redis_streams import connect, partition_streams
from ._args import positive_int

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = (
    "Run demo-world workers in separate processes, send their events through a partitioned "
    "Redis stream, aggregate KPIs in a group of consumer processes that share the partitions, "
    "and check the totals add up."
)

URL_SCHEMES = ("redis://", "rediss://", "unix://")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser``."""
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--spawn-redis",
        action="store_true",
        help="start a temporary redis-server on a free port instead of using --url",
    )
    parser.add_argument("--stream", default=DEFAULT_STREAM, help="stream key (the prefix)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--consumers", type=int, default=2, help="aggregator processes in the group (default 2)"
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partition streams, by polity (default 4)"
    )
    parser.add_argument(
        "--lease-ms",
        type=int,
        default=2_000,
        help="how long a silent aggregator keeps its partitions (default 2000)",
    )
    parser.add_argument("--days", type=int, default=3, help="days each world runs (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="first worker's seed (then +1 each)")
    parser.add_argument("--events-per-tick", type=int, default=16)
    parser.add_argument("--ticks-per-day", type=int, default=24)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = parser.add_subparsers(dest="role")
    worker = sub.add_parser("worker", help="run one worker (used by the demo itself)")
    worker.add_argument("name")
    aggregate = sub.add_parser("aggregate", help="run one aggregator of the group")
    aggregate.add_argument("names", nargs="+", help="the workers to wait for")
    aggregate.add_argument("--consumer", default="aggregator-1", help="this consumer's name")
    aggregate.add_argument("--count", type=int, default=20, help="entries read per poll")
    aggregate.add_argument(
        "--wait-for",
        type=positive_int,
        default=1,
        help="first wait (up to 10 s) until this many consumers of the group have started, "
        "so they share the partitions from the start (default 1: do not wait)",
    )


def _problem(args: argparse.Namespace) -> str | None:
    if importlib.util.find_spec("redis") is None:  # before any server is started
        return "needs redis-py: pip install 'ringbus[redis]'"
    if not isinstance(args.url, str) or not args.url.startswith(URL_SCHEMES):
        return f"--url must start with {', '.join(URL_SCHEMES)}, got {args.url!r}"
    for option in ("workers", "consumers", "partitions", "lease_ms"):
        if getattr(args, option) < 1:
            return f"--{option.replace('_', '-')} must be >= 1"
    if args.days < 0:
        return "--days must be >= 0"
    if args.role == "aggregate" and args.count < 1:
        return "--count must be >= 1"
    return None


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
    width = max(len(name) for name in [*(worker["name"] for worker in workers), "aggregators"])

    def row(label: str, totals: dict[str, Any]) -> str:
        return f"{label:<{width}}  " + "  ".join(f"{totals.get(key, 0):>10}" for key in columns)

    lines = [f"{'':<{width}}  " + "  ".join(f"{title:>10}" for title in columns.values())]
    lines += [row(worker["name"], worker["kpi"]["totals"]) for worker in workers]
    lines.append(row("sum", summed))
    lines.append(row("aggregators", merged))
    source = aggregate["source"]
    lines.append(
        f"{len(aggregate['consumers'])} aggregators read {source['published']} events from "
        f"{aggregate['partitions']} partitions ({source['duplicates']} duplicates skipped, "
        f"{source['invalid']} invalid, {source['lost']} lost)"
    )
    lines.append("totals match: " + ("yes" if ok else "NO"))
    return ok, lines


def run(args: argparse.Namespace) -> int:
    """Run the multi-process demo (or one of its roles); return the exit code."""
    problem = _problem(args)
    if problem:
        print(f"redis-demo: {problem}", file=sys.stderr)
        return 2
    names = worker_names(args.workers)
    if args.role == "worker":
        seed = args.seed + names.index(args.name) if args.name in names else args.seed
        result = run_worker(
            args.url,
            args.name,
            seed=seed,
            days=args.days,
            stream=args.stream,
            partitions=args.partitions,
            events_per_tick=args.events_per_tick,
            ticks_per_day=args.ticks_per_day,
        )
        print(json.dumps(result["kpi"]["totals"], sort_keys=True))
        return 1 if "error" in result else 0
    if args.role == "aggregate":
        result = run_aggregator(
            args.url,
            args.names,
            stream=args.stream,
            partitions=args.partitions,
            consumer=args.consumer,
            count=args.count,
            lease_ms=args.lease_ms,
            wait_for=args.wait_for,
        )
        print(json.dumps(result))
        return 0
    spawned = TemporaryRedis() if args.spawn_redis else None
    url = spawned.url if spawned else args.url
    try:
        client = connect(url, timeout=2.0)
        streams = partition_streams(args.stream, args.partitions)
        try:
            keys = [*streams, *stream_keys(args.stream).values()]
            keys += [
                f"{part}:aggregator:{suffix}" for part in streams for suffix in ("hwm", "owner")
            ]
            keys += [f"{args.stream}:aggregator:members"]
            keys += [stream_keys(args.stream)["kpi"] + name for name in consumer_names(99)]
            client.delete(*keys)
        except Exception as error:  # redis.ConnectionError and friends
            print(
                f"redis-demo: cannot reach Redis at {url} ({error}); start a redis-server "
                "there or pass --spawn-redis",
                file=sys.stderr,
            )
            return 1
        common = [
            "--url", url, "--stream", args.stream, "--workers", str(args.workers),
            "--partitions", str(args.partitions), "--lease-ms", str(args.lease_ms),
            "--days", str(args.days), "--seed", str(args.seed),
            "--events-per-tick", str(args.events_per_tick),
            "--ticks-per-day", str(args.ticks_per_day),
        ]  # fmt: skip
        command = [sys.executable, "-m", "ringbus", "redis-demo", *common]
        workers = [
            subprocess.Popen([*command, "worker", name], stdout=subprocess.DEVNULL)
            for name in names
        ]
        wait = ["--wait-for", str(args.consumers)]
        consumers = [
            subprocess.Popen(
                # started together, they wait for each other before taking partitions
                [*command, "aggregate", *names, "--consumer", name, *wait],
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in consumer_names(args.consumers)
        ]
        outputs = [process.communicate()[0] for process in consumers]
        codes = [process.wait() for process in workers + consumers]
        results = client.hgetall(stream_keys(args.stream)["results"])
        worker_results = [json.loads(results[name.encode()]) for name in names]
        parts = [json.loads(output) for output in outputs if output.strip()]
        health: dict[str, Any] = {}
        for part in parts:
            health.update(part["health"])
        aggregate = {
            "kpi": group_totals(url, args.stream),
            "consumers": [part["consumer"] for part in parts],
            "partitions": args.partitions,
            "source": merge_counts(part["source"] for part in parts) or {},
            "sources": [part["source"] for part in parts],
            "health": health,
        }
        ok, lines = _report(worker_results, aggregate)
        ok = ok and not any(codes) and len(parts) == args.consumers
        if args.json:
            print(json.dumps({"ok": ok, "workers": worker_results, "aggregator": aggregate}))
        else:
            print("\n".join(lines))
        return 0 if ok else 1
    finally:
        if spawned is not None:
            spawned.stop()
