"""Command line: ``python -m ringbus COMMAND`` (also the ``ringbus`` script)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: command -> (module:function taking argv and returning an exit code, summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("ringbus._bench:main", "time ringbus against its pure twin and peers (S1-S4)"),
    "demo": ("ringbus.demo:main", "run a seeded little world through the bus and print its KPIs"),
    "viewer": ("ringbus.viewer._cli:main", "serve the event viewer over a running demo world"),
    "journal": (
        "ringbus.journal._cli:main",
        "verify an event journal (chain, seal, signatures), replay it, or make a signing key",
    ),
    "feed": ("ringbus.transports.feed:feed_main", "print the JSON lines a SocketFeed serves"),
    "redis-demo": (
        "ringbus.demo.multiprocess:main",
        "several worker processes feed one KPI aggregator through a Redis stream",
    ),
}


def _usage() -> str:
    lines = ["usage: ringbus COMMAND [options]", "", "commands:"]
    width = max((len(name) for name in COMMANDS), default=0)
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines.append("")
    lines.append("Run 'ringbus COMMAND --help' for a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ringbus command and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"ringbus: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _summary = COMMANDS[name]
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest))


if __name__ == "__main__":
    raise SystemExit(main())
