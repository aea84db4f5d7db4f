"""A small seeded world that runs through the bus: ``python -m ringbus demo``.

:class:`DemoWorld` has polities, wards, depots, corridors, haulers making
deliveries that complete or fail, incidents, protocols authored and
violated, enforcement, construction projects and scouting missions. Every
fact is published as an event; construction completions and scout reports
are scheduled for a later tick with :meth:`ringbus.EventBus.schedule`. The
same seed gives the same event stream, byte for byte, and the world's state
travels in the bus snapshot, so a run can stop and resume exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .. import kinds as k
from .._backend import BACKEND
from .._bus import EventBus
from .._config import EventBusConfig
from ..sim.evidence import EvidenceRule, EvidenceSubscriber
from ..sim.incidents import IncidentLog
from ..sim.kpi import KpiSubscriber

__all__ = ["DemoWorld", "StreamHasher", "main"]

_POLITY_NAMES = ("aster", "brine", "cinder", "dune", "ember", "fjord", "gale", "heath")
_CARGO = ("grain", "timber", "ore", "salt", "cloth", "medicine", "tools")
_FAIL_REASONS = ("spoiled", "ambushed", "lost", "refused", "late", "overturned")
_INCIDENT_KINDS = ("fire", "theft", "flood", "brawl", "collapse", "sickness")
_SEVERITIES = ("low", "medium", "high", "critical")
_SEVERITY_WEIGHTS = (50, 30, 15, 5)
_RULES = ("curfew", "tariff", "weight-limit", "quarantine", "toll")
_ENFORCEMENT = ("warning", "fine", "seizure", "ban")
_PROJECTS = ("bridge", "granary", "wall", "well", "road")
_REGIONS = ("marsh", "ridge", "forest", "coast", "steppe")
#: action -> weight per event slot.
_ACTIONS = (
    ("deliver", 62),
    ("incident", 9),
    ("violation", 7),
    ("protocol", 1),
    ("depot", 2),
    ("corridor", 2),
    ("construction", 2),
    ("scout", 3),
)
_REFERENCE_EVENTS_PER_DAY = 16 * 24


class DemoWorld:
    """A seeded, deterministic little world publishing to a bus.

    Parameters
    ----------
    bus
        The :class:`~ringbus.EventBus` to publish on.
    seed
        Seeds the world's own random generator (no global state is used).
    events_per_tick
        World actions per tick (each publishes one or two events).
    ticks_per_day
        Ticks in a day; the last tick of a day publishes ``DAY_ROLLOVER``.
    polities, wards_per_polity
        Size of the world.
    snapshot_name
        Name of the snapshot hook carrying the world's state, or ``None``
        for no hook.

    Examples
    --------
    >>> from ringbus import EventBus
    >>> from ringbus.demo import DemoWorld
    >>> from ringbus.sim.kpi import KpiSubscriber
    >>> bus = EventBus()
    >>> kpi = KpiSubscriber()
    >>> kpi.attach(bus)
    >>> world = DemoWorld(bus, seed=7, events_per_tick=4, ticks_per_day=6)
    >>> world.run(days=2)
    >>> len(kpi.days())
    2
    """

    def __init__(
        self,
        bus: Any,
        *,
        seed: int = 1,
        events_per_tick: int = 16,
        ticks_per_day: int = 24,
        polities: int = 3,
        wards_per_polity: int = 3,
        snapshot_name: str | None = "demo",
    ) -> None:
        for name, value, top in (
            ("events_per_tick", events_per_tick, 100_000),
            ("ticks_per_day", ticks_per_day, 100_000),
            ("polities", polities, len(_POLITY_NAMES)),
            ("wards_per_polity", wards_per_polity, 100),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if not 1 <= value <= top:
                raise ValueError(f"{name} must be between 1 and {top}, got {value}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.bus = bus
        self.seed = seed
        self.events_per_tick = events_per_tick
        self.ticks_per_day = ticks_per_day
        self._rng = random.Random(seed)
        rng = self._rng
        self.polities: list[str] = list(_POLITY_NAMES[:polities])
        self.wards: list[tuple[str, str]] = []
        self.ward_risk: dict[str, float] = {}
        self.ward_weight: dict[str, int] = {}
        for polity in self.polities:
            for number in range(1, wards_per_polity + 1):
                ward = f"{polity}-w{number}"
                self.wards.append((polity, ward))
                troubled = rng.random() < 0.25
                self.ward_risk[ward] = round(
                    rng.uniform(0.25, 0.4) if troubled else rng.uniform(0.02, 0.08), 4
                )
                self.ward_weight[ward] = 3 if troubled else 1
        self.depots: dict[str, list[str]] = {polity: [] for polity in self.polities}
        self.next_tick = 0
        self._ids: dict[str, int] = {}
        self._ward_weights = [self.ward_weight[ward] for _, ward in self.wards]
        self._action_names = [name for name, _ in _ACTIONS]
        self._action_weights = [weight for _, weight in _ACTIONS]
        if snapshot_name is not None:
            bus.add_snapshot_hook(snapshot_name, self.save_state, self.load_state)

    # -- the loop ------------------------------------------------------
    @property
    def day(self) -> int:
        """The day of the next tick to run."""
        return self.next_tick // self.ticks_per_day

    def step(self) -> int:
        """Run one tick: set the clock, publish the world's events, drain. Return the tick."""
        bus = self.bus
        tick = self.next_tick
        day = tick // self.ticks_per_day
        bus.set_clock(tick, day)  # releases scheduled events due now
        act = self._act
        for action in self._rng.choices(
            self._action_names, self._action_weights, k=self.events_per_tick
        ):
            act(action, tick)
        if tick % self.ticks_per_day == self.ticks_per_day - 1:
            bus.publish(k.DAY_ROLLOVER, payload={"closed_day": day})
        self.next_tick = tick + 1
        bus.drain()
        return tick

    def run(self, days: int, *, progress: Callable[[int], object] | None = None) -> None:
        """Run ``days`` whole days (from wherever the world is).

        Parameters
        ----------
        days
            How many days to run.
        progress
            Called with the number of days done after each day.
        """
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError(f"days must be an int >= 0, got {days!r}")
        for done in range(1, days + 1):
            for _ in range(self.ticks_per_day):
                self.step()
            if progress is not None:
                progress(done)

    def evidence_rules(self, window_days: int = 7) -> tuple[EvidenceRule, ...]:
        """Evidence rules with thresholds suited to this world's event rate."""
        scale = self.events_per_tick * self.ticks_per_day / _REFERENCE_EVENTS_PER_DAY
        wards = len(self.wards) / len(self.polities)
        per_week = window_days / 7 * scale

        def at_least(value: float) -> int:
            return max(2, round(value))

        rules = []
        for what, kind, ward_threshold in (
            ("delivery_failures", k.DELIVERY_FAILED, 45),
            ("incidents", k.INCIDENT_RECORDED, 45),
            ("protocol_violations", k.PROTOCOL_VIOLATION, 35),
        ):
            ward_t = at_least(ward_threshold * per_week * 3 / wards)
            polity_t = at_least(ward_threshold * per_week * 2.5)
            rules.append(EvidenceRule(what, (kind,), "ward", window_days, ward_t))
            rules.append(EvidenceRule(what, (kind,), "polity", window_days, polity_t))
        return tuple(rules)

    # -- actions -------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        number = self._ids.get(prefix, 0) + 1
        self._ids[prefix] = number
        return f"{prefix}-{number}"

    def _place(self) -> tuple[str, str]:
        return self._rng.choices(self.wards, self._ward_weights)[0]

    def _act(self, action: str, tick: int) -> None:
        rng = self._rng
        bus = self.bus
        polity, ward = self._place()
        if action == "deliver":
            cargo = rng.choice(_CARGO)
            quantity = rng.randint(1, 40)
            hauler = f"hauler-{rng.randint(1, 12)}"
            depots = self.depots[polity]
            depot = rng.choice(depots) if depots else None
            if rng.random() < self.ward_risk[ward]:
                bus.publish(
                    k.DELIVERY_FAILED,
                    polity_id=polity,
                    ward_id=ward,
                    actor_id=hauler,
                    subject_id=depot,
                    payload={"cargo": cargo, "qty": quantity, "reason": rng.choice(_FAIL_REASONS)},
                )
            else:
                bus.publish(
                    k.DELIVERY_COMPLETED,
                    polity_id=polity,
                    ward_id=ward,
                    actor_id=hauler,
                    subject_id=depot,
                    payload={"cargo": cargo, "qty": quantity, "ticks": rng.randint(1, 30)},
                )
        elif action == "incident":
            bus.publish(
                k.INCIDENT_RECORDED,
                polity_id=polity,
                ward_id=ward,
                payload={
                    "incident_kind": rng.choice(_INCIDENT_KINDS),
                    "severity": rng.choices(_SEVERITIES, _SEVERITY_WEIGHTS)[0],
                },
            )
        elif action == "violation":
            rule = rng.choice(_RULES)
            actor = f"trader-{rng.randint(1, 30)}"
            bus.publish(
                k.PROTOCOL_VIOLATION,
                polity_id=polity,
                ward_id=ward,
                actor_id=actor,
                payload={"rule": rule},
            )
            if rng.random() < 0.6:
                bus.publish(
                    k.ENFORCEMENT_ACTION,
                    polity_id=polity,
                    ward_id=ward,
                    actor_id=f"warden-{polity}",
                    subject_id=actor,
                    payload={"rule": rule, "action": rng.choice(_ENFORCEMENT)},
                )
        elif action == "protocol":
            bus.publish(
                k.PROTOCOL_AUTHORED,
                polity_id=polity,
                actor_id=f"council-{polity}",
                subject_id=self._new_id("protocol"),
                payload={"rule": rng.choice(_RULES)},
            )
        elif action == "depot":
            depot = self._new_id("depot")
            self.depots[polity].append(depot)
            bus.publish(
                k.DEPOT_BUILT,
                polity_id=polity,
                ward_id=ward,
                subject_id=depot,
                payload={"capacity": rng.choice((100, 250, 500))},
            )
        elif action == "corridor":
            depots = self.depots[polity]
            if len(depots) < 2:
                return
            start, end = rng.sample(depots, 2)
            bus.publish(
                k.CORRIDOR_ESTABLISHED,
                polity_id=polity,
                ward_id=ward,
                subject_id=self._new_id("corridor"),
                payload={"from": start, "to": end, "length": rng.randint(3, 60)},
            )
        elif action == "construction":
            project = self._new_id("project")
            kind = rng.choice(_PROJECTS)
            bus.publish(
                k.CONSTRUCTION_PROJECT_STARTED,
                polity_id=polity,
                ward_id=ward,
                subject_id=project,
                payload={"project": kind, "budget": rng.randint(50, 900)},
            )
            done = tick + rng.randint(self.ticks_per_day // 2 + 1, 4 * self.ticks_per_day)
            bus.schedule(
                done,
                k.CONSTRUCTION_PROJECT_COMPLETED,
                polity_id=polity,
                ward_id=ward,
                subject_id=project,
                payload={"project": kind, "started_tick": tick},
            )
        elif action == "scout":
            mission = self._new_id("scout")
            back = tick + rng.randint(1, self.ticks_per_day)
            bus.schedule(
                back,
                k.SCOUT_MISSION_COMPLETED,
                polity_id=polity,
                actor_id=f"scout-{polity}-{rng.randint(1, 4)}",
                subject_id=mission,
                payload={"region": rng.choice(_REGIONS), "findings": rng.randint(0, 5)},
            )
        else:  # pragma: no cover - the action table is fixed
            raise AssertionError(action)

    # -- snapshots -----------------------------------------------------
    def save_state(self) -> dict[str, Any]:
        """The world's state as JSON-ready data (the snapshot hook's save)."""
        version, internal, gauss = self._rng.getstate()
        return {
            "seed": self.seed,
            "events_per_tick": self.events_per_tick,
            "ticks_per_day": self.ticks_per_day,
            "polities": list(self.polities),
            "wards": [list(pair) for pair in self.wards],
            "ward_risk": dict(self.ward_risk),
            "ward_weight": dict(self.ward_weight),
            "depots": {polity: list(ids) for polity, ids in self.depots.items()},
            "next_tick": self.next_tick,
            "ids": dict(self._ids),
            "rng": [version, list(internal), gauss],
        }

    def load_state(self, state: Any) -> None:
        """Become the world :meth:`save_state` described (its parameters included)."""
        try:
            version, internal, gauss = state["rng"]
            rng_state = (int(version), tuple(int(x) for x in internal), gauss)
            self.seed = int(state["seed"])
            self.events_per_tick = int(state["events_per_tick"])
            self.ticks_per_day = int(state["ticks_per_day"])
            self.polities = [str(p) for p in state["polities"]]
            self.wards = [(str(p), str(w)) for p, w in state["wards"]]
            self.ward_risk = {str(w): float(r) for w, r in state["ward_risk"].items()}
            self.ward_weight = {str(w): int(n) for w, n in state["ward_weight"].items()}
            self.depots = {str(p): [str(d) for d in ids] for p, ids in state["depots"].items()}
            self.next_tick = int(state["next_tick"])
            self._ids = {str(key): int(n) for key, n in state["ids"].items()}
            self._ward_weights = [self.ward_weight[ward] for _, ward in self.wards]
            self._rng.setstate(rng_state)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed demo world state: {error!r}") from error


class StreamHasher:
    """A running SHA-256 over the dispatched event stream.

    Each event's ``to_dict()`` is dumped as compact JSON with sorted keys;
    the digest after an event is ``SHA-256(previous digest || line)``
    (starting from 64 zeros), so the hash can travel in a snapshot and a
    resumed run ends on the same digest as the uninterrupted one.
    """

    def __init__(self) -> None:
        self.hexdigest = "0" * 64
        self.events = 0

    def attach(self, bus: Any, *, snapshot_name: str = "stream_hash") -> None:
        """Subscribe to every kind on ``bus`` and register the snapshot hook."""
        bus.subscribe(self.handle, name="stream_hash")
        bus.add_snapshot_hook(snapshot_name, self.save_state, self.load_state)

    def handle(self, event: Any) -> None:
        """Fold one event into the digest."""
        line = json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"))
        self.hexdigest = hashlib.sha256((self.hexdigest + line).encode()).hexdigest()
        self.events += 1

    def save_state(self) -> dict[str, Any]:
        """JSON-ready state (the snapshot hook's save)."""
        return {"hexdigest": self.hexdigest, "events": self.events}

    def load_state(self, state: Any) -> None:
        """Restore what :meth:`save_state` returned."""
        self.hexdigest = str(state["hexdigest"])
        self.events = int(state["events"])


# -- command line -------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringbus demo",
        description=(
            "Run a seeded little world through the bus with the KPI and evidence "
            "subscribers attached, then print KPIs per polity and the evidence raised. "
            "The same seed gives the same output and the same event stream."
        ),
    )
    parser.add_argument("--days", type=int, default=60, help="days to run (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    parser.add_argument(
        "--events-per-tick", type=int, default=16, help="world actions per tick (default 16)"
    )
    parser.add_argument("--ticks-per-day", type=int, default=24, help="ticks per day (default 24)")
    parser.add_argument("--polities", type=int, default=3, help="number of polities (default 3)")
    parser.add_argument(
        "--snapshot", metavar="FILE", type=Path, help="write a snapshot to FILE at the end"
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
        help="serve the viewer on 127.0.0.1:PORT (default 8765) while the world runs",
    )
    parser.add_argument(
        "--journal",
        metavar="FILE",
        type=Path,
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
        type=float,
        default=None,
        help="sleep this long after each tick (default 0, or 0.05 with --serve)",
    )
    return parser


def _load_snapshot(path: Path) -> dict[str, Any]:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SystemExit(f"ringbus demo: cannot read snapshot {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise SystemExit(f"ringbus demo: {path} is not JSON: {error}") from error
    hooks = data.get("hooks") if isinstance(data, dict) else None
    if not isinstance(hooks, dict) or "demo" not in hooks or "config" not in data:
        raise SystemExit(f"ringbus demo: {path} is not a snapshot written by 'ringbus demo'")
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
    print(f"events published: {bus.latest_seq()}", file=out)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo from the command line; return the exit code."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.days < 0:
        print("ringbus demo: --days must be >= 0", file=sys.stderr)
        return 2
    if args.tick_delay is not None and args.tick_delay < 0:
        print("ringbus demo: --tick-delay must be >= 0", file=sys.stderr)
        return 2
    snapshot = _load_snapshot(args.resume) if args.resume is not None else None
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

        server = serve(bus, host="127.0.0.1", port=args.serve, kpis=kpi.summary)
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
        if server is not None:
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
    return 130 if interrupted else 0
