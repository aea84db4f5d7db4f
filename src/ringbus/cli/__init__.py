"""The command line, one argparse tree: ``ringbus COMMAND [options]`` (or ``python -m ringbus``).

Each command is a module here with a ``DESCRIPTION``, ``configure(parser)``
(its options) and ``run(args)`` (returns the exit code); the library code
they call lives in the package's other folders.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ._args import CommandParser, stdout_closed

__all__ = ["COMMANDS", "build_parser", "main"]

#: command -> (module in this package, one-line summary).
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("bench", "time ringbus against its pure twin and peers (S1-S4)"),
    "demo": ("demo", "run a seeded little world through the bus and print its KPIs"),
    "viewer": ("viewer", "serve the event viewer over a running demo world"),
    "journal": (
        "journal",
        "verify an event journal (chain, seal, signatures), replay it, or make a signing key",
    ),
    "feed": ("feed", "print the JSON lines a SocketFeed serves"),
    "redis-demo": (
        "redis_demo",
        "several worker processes feed one KPI aggregator through a Redis stream",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The whole tree: ``ringbus`` and every command's options."""
    parser = CommandParser(
        prog="ringbus",
        description="ringbus: a deterministic, in-process event bus for simulation loops.",
        epilog="Run 'ringbus COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"ringbus {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        command = commands.add_parser(name, help=summary, description=module.DESCRIPTION)
        module.configure(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ringbus command and return its exit code (2 for a usage error)."""
    parser = build_parser()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        namespace = parser.parse_args(args)
    except SystemExit as exit_:  # --help, --version, or a usage error (status 2)
        return int(exit_.code or 0)
    if namespace.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(namespace.run(namespace))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:  # the reader went away: ``ringbus demo | head``
        return stdout_closed()
    except KeyboardInterrupt:
        print(f"ringbus {namespace.command}: interrupted", file=sys.stderr)
        return 130
    return code
