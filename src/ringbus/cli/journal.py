"""``ringbus journal verify | replay | keygen``: the journal's command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..journal import (
    JournalError,
    JournalReport,
    generate_keypair,
    open_journal_file,
    replay_journal,
    verify_journal,
)
from ._args import hex_hash, non_negative_int

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = "Work with ringbus event journals (JSON Lines): verify, replay, keygen."


def _verdict(path: str, report: JournalReport) -> str:
    head = report.last_hash or "-"
    seqs = f"seq {report.first_seq}..{report.last_seq}" if report.events else "no events"
    if report.ok:
        state = {
            "sealed": "sealed and intact",
            "unsealed": "intact but not sealed",
            "v1": "intact (format v1)",
        }.get(report.status, report.status)
        if not report.chained:
            state += ", not chained"
        return f"{path}: OK: {state}, {report.events} events, {seqs}, head {head}"
    return (
        f"{path}: FAILED: {len(report.problems)} problem(s), first at line "
        f"{report.problems[0].line}; {report.events} events, {seqs}, head {head}"
    )


def _verify_command(args: argparse.Namespace) -> int:
    try:
        report = verify_journal(
            args.file,
            check_gaps=args.gaps,
            allow_unchained=args.allow_unchained,
            allow_empty=args.allow_empty,
            allow_unsealed=args.allow_unsealed,
            expect_head=args.expect_head,
            expect_count=args.expect_count,
            public_key=args.public_key,
            strict=args.strict,
        )
    except JournalError as error:
        print(f"ringbus journal verify: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    print(_verdict(args.file, report))
    for note in report.notes:
        print(f"  note: {note}")
    if report.signed and not report.signatures_checked and report.ok:
        print("  note: the journal is signed; pass --public-key to check its signatures")
    for problem in report.problems[: args.max_problems]:
        print(f"  {problem}")
    if len(report.problems) > args.max_problems:
        print(f"  ... and {len(report.problems) - args.max_problems} more")
    return 0 if report.ok else 1


def _replay_command(args: argparse.Namespace) -> int:
    from .. import EventBus, EventBusConfig
    from ..sim.kpi import KpiSubscriber

    try:
        open_journal_file(args.file).close()
    except JournalError as error:
        print(f"ringbus journal replay: {error}", file=sys.stderr)
        return 2
    bus = EventBus(EventBusConfig(max_events=1024, name="replay"))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    try:
        report = replay_journal(args.file, bus, verify=not args.no_verify)
    except JournalError as error:
        if error.problems:  # refused: say it in the command line's words
            error = JournalError(
                f"{args.file}: refusing to replay a journal with {len(error.problems)} "
                f"problem(s), first: {error.problems[0]} (add --no-verify to replay it anyway)"
            )
        print(f"ringbus journal replay: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"ringbus journal replay: {error}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"replay": dataclasses.asdict(report), "kpi": kpi.summary(last_days=args.days)},
            indent=2,
        )
    )
    return 0


def _keygen_command(args: argparse.Namespace) -> int:
    try:
        private, public = generate_keypair(args.private_key, args.public_key)
    except JournalError as error:
        print(f"ringbus journal keygen: {error}", file=sys.stderr)
        return 2
    print(f"private key: {private} (keep it secret; sign with Journal(signing_key=...))")
    print(f"public key:  {public} (verify with --public-key {public})")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options (its own subcommands) to ``parser``."""
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="check the chain, marks, signatures, seq order and gaps, the clock and the tail",
        description="Check a journal; print a one-line verdict with the event count and "
        "the chain head, then each problem with its line number. Exit 0 when intact, "
        "1 when the journal fails verification, 2 on a bad path or option.",
    )
    verify.add_argument("file", help="the journal file")
    gaps = verify.add_mutually_exclusive_group()
    gaps.add_argument(
        "--gaps",
        dest="gaps",
        action="store_const",
        const=True,
        default=None,
        help="report seq gaps even if the journal records only some kinds",
    )
    gaps.add_argument(
        "--no-gaps", dest="gaps", action="store_const", const=False, help="do not report seq gaps"
    )
    verify.add_argument(
        "--allow-unchained", action="store_true", help="accept an unchained journal"
    )
    verify.add_argument(
        "--allow-empty", action="store_true", help="accept a 0-byte or event-less journal"
    )
    verify.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="accept a journal without a seal (still being written)",
    )
    verify.add_argument("--expect-head", type=hex_hash, help="the chain head kept elsewhere")
    verify.add_argument(
        "--expect-count", type=non_negative_int, help="the event count kept elsewhere"
    )
    verify.add_argument(
        "--public-key", help="Ed25519 public key (PEM): checkpoints and seal must be signed by it"
    )
    verify.add_argument(
        "--strict",
        action="store_true",
        help="also require every event line to be exactly its canonical JSON",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--max-problems", type=non_negative_int, default=20, help="problems to print (default 20)"
    )
    replay = commands.add_parser(
        "replay",
        help="feed a journal through a fresh bus and print the KPIs it rebuilds",
        description="Replay a journal into a bus with a KPI subscriber and print "
        "the replay report and the KPI summary as JSON. Exit 1 if the journal has "
        "problems (a torn last line is left out), 2 if it cannot be read.",
    )
    replay.add_argument("file", help="the journal file")
    replay.add_argument(
        "--no-verify", action="store_true", help="replay even if the journal has problems"
    )
    replay.add_argument(
        "--days", type=non_negative_int, default=7, help="closed days to show (default 7)"
    )
    keygen = commands.add_parser(
        "keygen",
        help="write an Ed25519 key pair (PEM) for signing journals",
        description="Write a new Ed25519 private key (mode 0600) and its public key. "
        "Needs the 'sign' extra (cryptography).",
    )
    keygen.add_argument("private_key", help="where the private key goes (must not exist)")
    keygen.add_argument("--public-key", help="where the public key goes (default: PRIVATE_KEY.pub)")


def run(args: argparse.Namespace) -> int:
    """Run ``ringbus journal verify | replay | keygen``; return the exit code."""
    if args.command == "replay":
        return _replay_command(args)
    if args.command == "keygen":
        return _keygen_command(args)
    return _verify_command(args)
