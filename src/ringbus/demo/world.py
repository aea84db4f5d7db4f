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

import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

from .. import kinds as k
from ..sim.evidence import EvidenceRule

__all__ = ["DemoWorld", "StreamHasher"]

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
    >>> _ = kpi.attach(bus)
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
