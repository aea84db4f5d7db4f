"""``ringbus viewer``: the event viewer over a running demo world."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading

from ..viewer import serve

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = (
    "Run the seeded demo world slowly and serve the event viewer over its bus, until "
    "Ctrl-C (or --days)."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    parser.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    parser.add_argument(
        "--days", type=int, default=None, help="stop after this many days (default: run on)"
    )
    parser.add_argument(
        "--tick-delay",
        type=float,
        default=0.1,
        help="seconds to wait after each tick (default 0.1)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``ringbus viewer``; return the exit code."""
    if args.days is not None and args.days < 0:
        print("ringbus viewer: --days must be >= 0", file=sys.stderr)
        return 2
    if args.tick_delay < 0:
        print("ringbus viewer: --tick-delay must be >= 0", file=sys.stderr)
        return 2
    from ringbus import EventBus, EventBusConfig
    from ringbus.demo import DemoWorld
    from ringbus.sim.kpi import KpiSubscriber

    bus = EventBus(EventBusConfig(name="demo"))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    try:
        world = DemoWorld(bus, seed=args.seed, events_per_tick=4, ticks_per_day=24)
        server = serve(bus, host=args.host, port=args.port, kpis=kpi.summary)
    except (OSError, TypeError, ValueError) as error:
        print(f"ringbus viewer: {error}", file=sys.stderr)
        return 2
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(
            "ringbus viewer: warning: the panel has no authentication and is reachable "
            f"from other machines on {args.host}",
            file=sys.stderr,
        )
    print(f"ringbus viewer: {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    pause = threading.Event()
    ticks = None if args.days is None else args.days * world.ticks_per_day
    try:
        while ticks is None or world.next_tick < ticks:
            world.step()
            pause.wait(args.tick_delay)
    except KeyboardInterrupt:
        print("ringbus viewer: stopped", file=sys.stderr)
    finally:
        server.close()
    print(f"ringbus viewer: {bus.latest_seq()} events published", file=sys.stderr)
    return 0
