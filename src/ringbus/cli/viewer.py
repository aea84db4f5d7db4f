"""``ringbus viewer``: the event viewer over a running demo world."""

from __future__ import annotations

import argparse
import sys
import threading

from ..viewer import DEFAULT_MAX_STREAMS, serve

__all__ = ["DESCRIPTION", "configure", "run"]

#: What ``ringbus --help`` and the command's ``--help`` say it does.
DESCRIPTION = (
    "Run the seeded demo world slowly and serve the event viewer over its bus, until "
    "Ctrl-C (after --days the viewer stays up on the finished run)."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    parser.add_argument(
        "--allow-host",
        metavar="NAME",
        action="append",
        default=[],
        help="a host name clients use to reach the viewer (repeat for more); needed to "
        "bind an address other than loopback, which also turns on an access token",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=DEFAULT_MAX_STREAMS,
        help=f"live streams served at once (default {DEFAULT_MAX_STREAMS})",
    )
    parser.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    parser.add_argument(
        "--days", type=int, default=None, help="stop the world after this many days"
    )
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="with --days: stop serving and exit when the world stops",
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
    if not 0 <= args.port <= 65535:
        print(f"ringbus viewer: --port must be from 0 to 65535, got {args.port}", file=sys.stderr)
        return 2
    from ringbus import EventBus, EventBusConfig
    from ringbus.demo import DemoWorld
    from ringbus.sim.kpi import KpiSubscriber

    bus = EventBus(EventBusConfig(name="demo"))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    try:
        world = DemoWorld(bus, seed=args.seed, events_per_tick=4, ticks_per_day=24)
        server = serve(
            bus,
            host=args.host,
            port=args.port,
            kpis=kpi.summary,
            allow_hosts=args.allow_host,
            max_streams=args.max_streams,
        )
    except ValueError as error:
        message = str(error).replace("needs allow_hosts", "needs --allow-host NAME")
        print(f"ringbus viewer: {message}", file=sys.stderr)
        return 2
    except (OSError, TypeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        print(f"ringbus viewer: cannot serve on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 2
    if server.token is not None:
        print(
            f"ringbus viewer: access token {server.token} (send it as the X-Ringbus-Token "
            f"header); open {server.login_url} once to sign a browser in",
            file=sys.stderr,
        )
    print(f"ringbus viewer: {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    pause = threading.Event()
    ticks = None if args.days is None else args.days * world.ticks_per_day
    try:
        while ticks is None or world.next_tick < ticks:
            world.step()
            pause.wait(args.tick_delay)
        if not args.exit_when_done:
            server.finish()
            print(
                "ringbus viewer: run finished; still serving (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            while True:
                pause.wait(0.2)
    except KeyboardInterrupt:
        print("ringbus viewer: stopped", file=sys.stderr)
    finally:
        server.close()
    print(f"ringbus viewer: {bus.latest_seq()} events published", file=sys.stderr)
    return 0
