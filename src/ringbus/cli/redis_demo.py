"""``ringbus redis-demo``: several worker processes feed one KPI aggregator through Redis."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from ..demo.multiprocess import (
    DEFAULT_STREAM,
    DEFAULT_URL,
    TemporaryRedis,
    merge_counts,
    run_aggregator,
    run_worker,
    stream_keys,
    worker_names,
)
from ..transports.redis_streams import connect

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = (
    "Run demo-world workers in separate processes, send their events through a Redis "
    "stream, aggregate KPIs in one consumer, and check the totals add up."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser``."""
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


def run(args: argparse.Namespace) -> int:
    """Run the multi-process demo (or one of its roles); return the exit code."""
    if args.workers < 1 or args.days < 0:
        print("redis-demo: --workers must be >= 1 and --days >= 0", file=sys.stderr)
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
            events_per_tick=args.events_per_tick,
            ticks_per_day=args.ticks_per_day,
        )
        print(json.dumps(result["kpi"]["totals"], sort_keys=True))
        return 1 if "error" in result else 0
    if args.role == "aggregate":
        result = run_aggregator(args.url, args.names, stream=args.stream, count=args.count)
        print(json.dumps(result["kpi"]))
        return 0
    spawned = TemporaryRedis() if args.spawn_redis else None
    url = spawned.url if spawned else args.url
    try:
        client = connect(url, timeout=2.0)
        try:
            client.delete(args.stream, *stream_keys(args.stream).values())
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
        results = client.hgetall(stream_keys(args.stream)["results"])
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
