"""``ringbus demo``: run the demo world with its KPIs, evidence and incidents."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .._backend import BACKEND
from .._bus import EventBus
from .._config import EventBusConfig
from ..demo.world import DemoWorld, StreamHasher
from ..sim.evidence import EvidenceSubscriber
from ..sim.incidents import IncidentLog
from ..sim.kpi import KpiSubscriber
from ._args import new_file, non_negative_float, non_negative_int, positive_int

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = (
    "Run a seeded little world through the bus with the KPI and evidence subscribers "
    "attached, then print KPIs per polity and the evidence raised. The same seed "
    "gives the same output and the same event stream."
)


#: The world's options: (flag, type, help). A resumed run takes them from its
#: snapshot, so they cannot be given with --resume.
_WORLD_OPTIONS: tuple[tuple[str, Callable[[str], int], str], ...] = (
    ("--seed", int, "world seed (default 1)"),
    ("--events-per-tick", positive_int, "world actions per tick (default 16)"),
    ("--ticks-per-day", positive_int, "ticks per day (default 24)"),
    ("--polities", positive_int, "number of polities (default 3)"),
)
_WORLD_DEFAULTS = {"seed": 1, "events_per_tick": 16, "ticks_per_day": 24, "polities": 3}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser``."""
    parser.add_argument(
        "--days", type=non_negative_int, default=60, help="days to run (default 60)"
    )
    for flag, kind, help_text in _WORLD_OPTIONS:
        parser.add_argument(flag, type=kind, default=None, help=help_text)
    parser.add_argument(
        "--snapshot", metavar="FILE", type=new_file, help="write a snapshot to FILE at the end"
    )
    parser.add_argument(
        "--resume",
        metavar="FILE",
        type=Path,
        help="continue from a snapshot FILE for --days more days (world options come from it)",
    )
    parser.add_argument(
        "--stream-hash",
        action="store_true",
        help="print a SHA-256 chained over the json-dumped to_dict() of every dispatched event",
    )
    parser.add_argument("--json", action="store_true", help="print the KPI summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress or timing on stderr")
    parser.add_argument(
        "--serve",
        metavar="PORT",
        nargs="?",
        type=int,
        const=8765,
        help="serve the viewer on 127.0.0.1:PORT (default 8765; 0 = any free port) while "
        "the world runs, and after it until Ctrl-C",
    )
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="with --serve: stop serving and exit when the run ends",
    )
    parser.add_argument(
        "--journal",
        metavar="FILE",
        type=new_file,
        default=None,
        help="write the run's events to a chained journal (check it with 'ringbus journal verify')",
    )
    parser.add_argument(
        "--sign-key",
        metavar="KEY",
        type=Path,
        default=None,
        help="sign the journal's checkpoints and seal with this Ed25519 private key (PEM; "
        "make one with 'ringbus journal keygen'; needs the 'sign' extra)",
    )
    parser.add_argument(
        "--tick-delay",
        metavar="SECONDS",
        type=non_negative_float,
        default=None,
        help="sleep this long after each tick (default 0, or 0.05 with --serve)",
    )


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _load_snapshot(path: Path) -> dict[str, Any]:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"cannot read snapshot {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from error
    hooks = data.get("hooks") if isinstance(data, dict) else None
    if not isinstance(hooks, dict) or "demo" not in hooks or "config" not in data:
        raise ValueError(f"{path} is not a snapshot written by 'ringbus demo'")
    snapshot: dict[str, Any] = data
    return snapshot


def _kpi_table(summary: dict[str, Any]) -> list[str]:
    columns = (
        ("delivered", "deliveries_completed"),
        ("failed", "deliveries_failed"),
        ("success", "delivery_success_rate"),
        ("depots", "depots_built"),
        ("corridors", "corridors_established"),
        ("built", "construction_completed"),
        ("incidents", "incidents"),
        ("violations", "protocol_violations"),
        ("enforced", "enforcement_actions"),
        ("scouted", "scout_missions_completed"),
    )
    rows = [("polity", *(title for title, _ in columns))]

    def cells(name: str, tally: dict[str, Any]) -> tuple[str, ...]:
        out = [name]
        for _, key in columns:
            value = tally[key]
            if key == "delivery_success_rate":
                out.append("-" if value is None else f"{value * 100:.1f}%")
            else:
                out.append(str(value))
        return tuple(out)

    for polity, tally in summary["polities"].items():
        rows.append(cells(polity, tally))
    rows.append(cells("TOTAL", summary["totals"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        first = row[0].ljust(widths[0])
        rest = "  ".join(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        lines.append(f"{first}  {rest}")
        if index == 0 or index == len(rows) - 2:
            lines.append("-" * len(lines[-1]))
    return lines


def _report(
    out: TextIO,
    world: DemoWorld,
    bus: Any,
    kpi: KpiSubscriber,
    evidence: EvidenceSubscriber,
    hasher: StreamHasher | None,
    as_json: bool,
) -> None:
    summary = kpi.summary()
    items = evidence.items()
    if as_json:
        document = {
            "seed": world.seed,
            "days": world.day,
            "latest_seq": bus.latest_seq(),
            "pending": bus.pending_count(),
            "kpis": summary,
            "evidence": items,
            "evidence_raised": evidence.raised,
            "evidence_by_rule": evidence.raised_by_rule(),
        }
        if hasher is not None:
            document["stream_sha256"] = hasher.hexdigest
        print(json.dumps(document, indent=2, sort_keys=True), file=out)
        return
    print(
        f"ringbus demo: seed {world.seed}, {world.day} day{'' if world.day == 1 else 's'} "
        f"x {world.ticks_per_day} ticks, "
        f"{world.events_per_tick} actions per tick, {len(world.polities)} polities",
        file=out,
    )
    pending = bus.pending_count()
    print(
        f"events published: {bus.latest_seq()}"
        + (
            f" ({pending} published by the last drain's handlers, pending for the next drain)"
            if pending
            else ""
        ),
        file=out,
    )
    print("", file=out)
    print("KPIs per polity", file=out)
    for line in _kpi_table(summary):
        print(line, file=out)
    totals = summary["totals"]
    severities = ", ".join(f"{key} {n}" for key, n in totals["incidents_by_severity"].items())
    incident_kinds = ", ".join(f"{key} {n}" for key, n in totals["incidents_by_kind"].items())
    print("", file=out)
    print(f"incidents by severity: {severities or '-'}", file=out)
    print(f"incidents by kind:     {incident_kinds or '-'}", file=out)
    last = summary["days"][-1:] if summary["days"] else []
    for day in last:
        rate = day["delivery_success_rate"]
        shown = "-" if rate is None else f"{rate * 100:.1f}%"
        print(
            f"last closed day {day['day']}: {day['deliveries_completed']} delivered, "
            f"{day['deliveries_failed']} failed ({shown} success), {day['incidents']} incidents",
            file=out,
        )
    print("", file=out)
    shown_items = items[-15:]
    print(
        f"evidence raised: {evidence.raised}"
        + (f" (last {len(shown_items)} shown)" if evidence.raised > len(shown_items) else ""),
        file=out,
    )
    by_rule = ", ".join(f"{key} {n}" for key, n in evidence.raised_by_rule().items() if n)
    if by_rule:
        print(f"  by rule: {by_rule}", file=out)
    for item in shown_items:
        print(
            f"  #{item['id']:<4} day {item['day']:>4}  {item['what']:<19} {item['scope']:<6} "
            f"{item['where']:<10} {item['count']:>4} in {item['window_days']}d "
            f"(days {item['from_day']}-{item['to_day']}, seq {item['first_seq']}-"
            f"{item['last_seq']})",
            file=out,
        )
    if hasher is not None:
        print("", file=out)
        print(f"stream sha256: {hasher.hexdigest} ({hasher.events} events)", file=out)


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the exit code."""
    given = [flag for flag, _, _ in _WORLD_OPTIONS if getattr(args, _dest(flag)) is not None]
    if args.resume is not None and given:
        print(
            f"ringbus demo: {', '.join(given)} cannot be given with --resume: "
            "a resumed world keeps the options of its snapshot",
            file=sys.stderr,
        )
        return 2
    for name, default in _WORLD_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    try:
        snapshot = _load_snapshot(args.resume) if args.resume is not None else None
    except ValueError as error:
        print(f"ringbus demo: {error}", file=sys.stderr)
        return 2
    if args.serve is not None and not 0 <= args.serve <= 65535:
        print(
            f"ringbus demo: --serve port must be from 0 to 65535, got {args.serve}", file=sys.stderr
        )
        return 2
    if args.exit_when_done and args.serve is None:
        print("ringbus demo: --exit-when-done needs --serve", file=sys.stderr)
        return 2
    if snapshot is not None:
        bus = EventBus(EventBusConfig.from_dict(snapshot["config"]))
        state = snapshot["hooks"]["demo"]
        try:
            world = DemoWorld(
                bus,
                seed=state["seed"],
                events_per_tick=state["events_per_tick"],
                ticks_per_day=state["ticks_per_day"],
                polities=len(state["polities"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            print(f"ringbus demo: bad world state in {args.resume}: {error}", file=sys.stderr)
            return 2
    else:
        bus = EventBus(EventBusConfig(name="demo"))
        try:
            world = DemoWorld(
                bus,
                seed=args.seed,
                events_per_tick=args.events_per_tick,
                ticks_per_day=args.ticks_per_day,
                polities=args.polities,
            )
        except (TypeError, ValueError) as error:
            print(f"ringbus demo: {error}", file=sys.stderr)
            return 2
    kpi = KpiSubscriber()
    kpi.attach(bus)
    evidence = EvidenceSubscriber(world.evidence_rules())
    evidence.attach(bus)
    incidents = IncidentLog()
    incidents.attach(bus)
    hasher: StreamHasher | None = None
    if args.stream_hash or (snapshot is not None and "stream_hash" in snapshot["hooks"]):
        hasher = StreamHasher()
        hasher.attach(bus)
    if snapshot is not None:
        try:
            bus.restore(snapshot)
        except (TypeError, ValueError) as error:
            print(f"ringbus demo: cannot resume from {args.resume}: {error}", file=sys.stderr)
            return 2

    journal: Any = None
    if args.sign_key is not None and args.journal is None:
        print("ringbus demo: --sign-key needs --journal FILE", file=sys.stderr)
        return 2
    if args.journal is not None:
        from ringbus.journal import Journal, JournalError

        try:
            journal = Journal(args.journal, signing_key=args.sign_key)
            if journal.last_seq is not None and journal.last_seq > bus.latest_seq():
                raise JournalError(
                    f"it already holds events up to seq {journal.last_seq}; "
                    "use a new file (or --resume the run that wrote it)"
                )
            journal.attach(bus)
        except (JournalError, ValueError) as error:
            if journal is not None:
                journal.close()
            print(f"ringbus demo: cannot journal to {args.journal}: {error}", file=sys.stderr)
            return 2

    delay = args.tick_delay
    if delay is None:
        delay = 0.05 if args.serve is not None else 0.0
    server: Any = None
    if args.serve is not None:
        from ringbus.viewer import serve  # imported only when asked for

        try:
            server = serve(
                bus, host="127.0.0.1", port=args.serve, kpis=kpi.summary, journal=args.journal
            )
        except (OSError, ValueError) as error:
            if journal is not None:
                journal.close()
            reason = getattr(error, "strerror", None) or str(error)
            print(
                f"ringbus demo: cannot serve the viewer on 127.0.0.1:{args.serve}: {reason}",
                file=sys.stderr,
            )
            return 2
        print(f"ringbus demo: viewer at {server.url} (Ctrl-C to stop)", file=sys.stderr)

    first_seq = bus.latest_seq()
    started = time.perf_counter()
    last_report = started
    total_days = args.days

    def progress(done: int) -> None:
        nonlocal last_report
        now = time.perf_counter()
        if args.quiet or (now - last_report < 1.0 and done != total_days):
            return
        last_report = now
        rate = (bus.latest_seq() - first_seq) / max(now - started, 1e-9)
        print(
            f"  day {done}/{total_days}  seq {bus.latest_seq()}  {rate:,.0f} events/s",
            file=sys.stderr,
        )

    interrupted = False
    try:
        if delay > 0:
            for done in range(1, total_days + 1):
                for _ in range(world.ticks_per_day):
                    world.step()
                    time.sleep(delay)
                progress(done)
        else:
            world.run(total_days, progress=progress)
    except KeyboardInterrupt:
        interrupted = True
        print("ringbus demo: interrupted", file=sys.stderr)
    finally:
        if server is not None and (interrupted or args.exit_when_done):
            server.close()
        if journal is not None:
            journal.close()
    elapsed = time.perf_counter() - started

    _report(sys.stdout, world, bus, kpi, evidence, hasher, args.json)
    if not args.quiet:
        count = bus.latest_seq() - first_seq
        print(
            f"ringbus demo: {count} events in {elapsed:.2f} s "
            f"({count / max(elapsed, 1e-9):,.0f} events/s, backend {BACKEND})",
            file=sys.stderr,
        )
    if journal is not None and not args.quiet:
        print(
            f"ringbus demo: journal {args.journal}: {journal.events} events, "
            f"head {journal.last_hash}",
            file=sys.stderr,
        )
    if args.snapshot is not None and interrupted:
        print(
            "ringbus demo: interrupted, so no snapshot was written (it could end mid-tick)",
            file=sys.stderr,
        )
    elif args.snapshot is not None:
        args.snapshot.write_text(json.dumps(bus.snapshot(), sort_keys=True), encoding="utf-8")
        if not args.quiet:
            print(f"ringbus demo: snapshot written to {args.snapshot}", file=sys.stderr)
    if server is not None and not server.closed:
        _serve_after_the_run(server)
    return 130 if interrupted else 0


def _serve_after_the_run(server: Any) -> None:
    """Keep the viewer up on the finished run until Ctrl-C."""
    server.finish()
    print(
        f"ringbus demo: run finished; the viewer stays at {server.url} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not server.closed:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print("ringbus demo: viewer stopped", file=sys.stderr)
