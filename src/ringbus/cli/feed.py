"""``ringbus feed HOST:PORT``: print the JSON lines a SocketFeed serves."""

from __future__ import annotations

import argparse
import fnmatch
import sys

from ..transports import dumps_record, read_feed
from ._args import non_negative_float, positive_int

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = "Read a ringbus SocketFeed and print its JSON lines."


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser``."""
    parser.add_argument("address", help="HOST:PORT the feed listens on")
    parser.add_argument("--kinds", nargs="+", help="only these kinds (fnmatch globs allowed)")
    parser.add_argument("--limit", type=positive_int, help="stop after this many records")
    parser.add_argument(
        "--timeout",
        type=non_negative_float,
        help="seconds to wait for a line (default: ever)",
    )


def run(args: argparse.Namespace) -> int:
    """Print a :class:`~ringbus.transports.SocketFeed`'s records as JSON lines."""
    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        print(f"ringbus feed: address must be HOST:PORT, got {args.address!r}", file=sys.stderr)
        return 2
    printed = 0
    try:
        for record in read_feed(host, int(port), timeout=args.timeout):
            kind = str(record.get("kind", ""))
            if args.kinds and not any(
                fnmatch.fnmatchcase(kind, kind_glob) for kind_glob in args.kinds
            ):
                continue
            print(dumps_record(record), flush=True)
            printed += 1
            if args.limit is not None and printed >= args.limit:
                break
    except OSError as error:
        print(f"ringbus feed: {args.address}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
