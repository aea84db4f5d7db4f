"""Snapshots of a bus: what travels, how it is checked, how it is applied.

:meth:`EventBus.snapshot` gathers each component's ``to_state()`` (seq counter
and clock, pending events and their lanes, the schedule, dead letters, group
turns, delivery records, and each snapshot hook's state).
:meth:`EventBus.restore` checks the whole snapshot first — each component's
``prepare_load(state)`` checks its part and returns a step that cannot fail —
then loads the hooks, then applies the steps: all of it, or nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from ._deliveries import DeliveryTracker
from ._normalise import NORMAL, PRIORITIES, check_non_negative, jsonify
from ._schedule import Schedule

__all__ = [
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "LoadHook",
    "SaveHook",
    "SnapshotHooks",
    "check_lanes",
    "check_pending",
    "prepare_restore",
    "take_snapshot",
]

SNAPSHOT_FORMAT = "ringbus-snapshot"
SNAPSHOT_VERSION = 1

SaveHook = Callable[[], Any]
LoadHook = Callable[[Any], object]


class SnapshotHooks:
    """The snapshot hooks of one bus: a subscriber's ``save``/``load`` pair by name."""

    def __init__(self) -> None:
        self._hooks: dict[str, tuple[SaveHook, LoadHook]] = {}

    def add(self, name: str, save: SaveHook, load: LoadHook) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"snapshot hook name must be a non-empty str, got {name!r}")
        if not callable(save) or not callable(load):
            raise TypeError("snapshot hook save and load must be callable")
        if name in self._hooks:
            raise ValueError(f"a snapshot hook named {name!r} is already registered")
        self._hooks[name] = (save, load)

    def remove(self, name: str) -> None:
        try:
            del self._hooks[name]
        except KeyError:
            raise KeyError(f"no snapshot hook named {name!r}") from None

    def names(self) -> set[str]:
        return set(self._hooks)

    def saved(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Each hook's state (or those of ``names``), as JSON-ready copies."""
        hooks: dict[str, Any] = {}
        for name in self._hooks if names is None else names:
            save = self._hooks[name][0]
            try:
                hooks[name] = json.loads(json.dumps(save(), allow_nan=False))
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"snapshot hook {name!r} returned state that is not JSON-serialisable: {error}"
                ) from error
        return hooks

    def load(self, hooks: dict[str, Any], is_fresh: Callable[[], bool]) -> None:
        """Run each hook's ``load``; on an error put the ones already loaded back."""
        before = self.saved(hooks)
        loaded: list[str] = []
        try:
            for name, state in hooks.items():
                try:
                    self._hooks[name][1](state)
                except BaseException as error:
                    error.add_note(
                        f"ringbus: snapshot hook {name!r} failed to load its state; restore() "
                        "left the bus unchanged and put the hooks loaded before it back"
                    )
                    raise
                loaded.append(name)
            if not is_fresh():
                raise RuntimeError(
                    "a snapshot hook's load() published or scheduled events during restore(); "
                    "loads must only set their subscriber's state"
                )
        except BaseException as error:
            for done in reversed(loaded):
                try:
                    self._hooks[done][1](before[done])
                except Exception as undo_error:
                    error.add_note(
                        f"ringbus: snapshot hook {done!r} could not get its previous state "
                        f"back: {undo_error!r}"
                    )
            raise


def take_snapshot(bus: Any, debug_events: bool | int) -> dict[str, Any]:
    """The state of ``bus`` as a JSON-ready dict (see :meth:`EventBus.snapshot`)."""
    hooks = bus._snapshot_hooks.saved()
    state: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "seq": bus.latest_seq(),
        "tick": bus.tick,
        "day": bus.day,
        "config": bus._config.to_dict(),
        "pending": [event.to_dict() for event in bus.pending_events()],
        "hooks": hooks,
    }
    if bus._schedule:
        state["scheduled"] = bus._schedule.to_state()
    if bus._dead_letters.has_state():
        state["dead_letters"] = bus._dead_letters.to_dict()
    lanes, destinations = bus.pending_routing()
    if lanes or destinations:
        listed = {
            name: [seq for seq, lane in lanes if lane == index]
            for index, name in enumerate(PRIORITIES)
            if index != NORMAL
        }
        state["lanes"] = {name: seqs for name, seqs in listed.items() if seqs or name == "urgent"}
        state["lanes"]["destinations"] = [[seq, name] for seq, name in destinations]
    routing = bus._registry.to_state()
    if routing:
        state["routing"] = routing
    if bus._registry.tracker is not None:
        state["deliveries"] = bus._registry.tracker.to_state()
    inboxes = bus._inboxes()
    if any(entries for _name, entries in inboxes):
        state["producers"] = [
            {"name": name, "inbox": [inbox_entry_to_dict(entry) for entry in entries]}
            for name, entries in inboxes
            if entries
        ]
    if debug_events is not False:
        count = (
            bus._config.snapshot_debug_events
            if debug_events is True
            else check_non_negative("debug_events", debug_events)
        )
        recent = bus.get_since(max(0, bus.latest_seq() - count)) if count else []
        state["debug_events"] = [event.to_dict() for event in recent[-count:] if count]
    return state


def prepare_restore(bus: Any, snapshot: object) -> tuple[Callable[[], None], dict[str, Any]]:
    """Check the whole snapshot; return what applies it (cannot fail) and the hooks' states."""
    if not isinstance(snapshot, dict):
        raise TypeError(f"snapshot must be a dict, got {type(snapshot).__name__}")
    if snapshot.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"not a ringbus snapshot (format={snapshot.get('format')!r})")
    if snapshot.get("version") != SNAPSHOT_VERSION:
        raise ValueError(
            f"unsupported snapshot version {snapshot.get('version')!r}; "
            f"this ringbus reads version {SNAPSHOT_VERSION}"
        )
    for key in ("seq", "tick", "day", "pending", "hooks"):
        if key not in snapshot:
            raise ValueError(f"snapshot is missing {key!r}")
    seq = check_non_negative("seq", snapshot["seq"])
    tick = check_non_negative("tick", snapshot["tick"])
    day = None if snapshot["day"] is None else check_non_negative("day", snapshot["day"])
    hooks = snapshot["hooks"]
    if not isinstance(hooks, dict):
        raise ValueError("snapshot 'hooks' must be a dict")
    unknown = sorted(set(hooks) - bus._snapshot_hooks.names())
    if unknown:
        raise ValueError(
            f"snapshot carries state for hooks {', '.join(map(repr, unknown))} that are "
            "not registered on this bus: attach those subscribers before restore()"
        )
    pending = check_pending(bus, snapshot["pending"], seq, tick, day)
    lanes, directed = check_lanes(snapshot.get("lanes"), pending)
    steps: list[Callable[[], None]] = []
    if "scheduled" in snapshot:
        schedule = Schedule()
        schedule.prepare_load(snapshot["scheduled"])()
        for at_tick, _order, kind, fields in schedule.entries():
            bus._scheduled_fields(at_tick, kind, fields)
        steps.append(lambda: setattr(bus, "_schedule", schedule))
    if "dead_letters" in snapshot:
        steps.append(bus._dead_letters.prepare_load(snapshot["dead_letters"], bus.event_from_dict))
    if "routing" in snapshot:
        steps.append(bus._registry.prepare_load(snapshot["routing"]))
    if "deliveries" in snapshot:
        tracker = DeliveryTracker.from_state(snapshot["deliveries"])
        steps.append(lambda: setattr(bus._registry, "tracker", tracker))
    if "producers" in snapshot:
        inboxes = check_inboxes(bus, snapshot["producers"])

        def load_inboxes() -> None:
            for name, entries in inboxes:
                bus._load_inbox(name, entries)

        steps.append(load_inboxes)

    def commit() -> None:
        # Everything below was checked: none of it can fail.
        if pending:
            bus._skip_to(pending[0].seq - 1)
            for event in pending:
                bus._ingest_routed(event, lanes.get(event.seq, NORMAL), directed.get(event.seq))
        bus._skip_to(seq)
        # After the pending events, which move the clock up to their own times.
        bus.set_clock(tick, day)
        for step in steps:
            step()
        if bus._dead_letters.retries:
            bus._listen_for_retries()
        bus._invalidate_routes()

    return commit, hooks


def check_pending(bus: Any, items: object, seq: int, tick: int, day: int | None) -> list[Any]:
    """The snapshot's pending events, checked to be ingestible in order."""
    if not isinstance(items, list):
        raise ValueError("snapshot 'pending' must be a list")
    pending = [bus.event_from_dict(item) for item in items]
    previous = 0
    last = (0, 0)
    monotonic = bus.clock_policy == "monotonic"
    for event in pending:
        if event.seq <= previous:
            raise ValueError(
                f"snapshot pending events must be in increasing seq order from 1, "
                f"got seq {event.seq} after {previous}"
            )
        if monotonic and (event.tick < last[0] or event.day < last[1]):
            raise ValueError(
                f"snapshot pending event seq {event.seq} at tick {event.tick}, day "
                f"{event.day} is before the event ahead of it (tick {last[0]}, day "
                f"{last[1]}): time never goes backwards"
            )
        if monotonic and (event.tick > tick or (day is not None and event.day > day)):
            raise ValueError(
                f"snapshot pending event seq {event.seq} is later than the snapshot's "
                f"clock (tick {tick}, day {day})"
            )
        last = (event.tick, event.day)
        if len(event.payload) > bus.max_payload_items:
            raise ValueError(
                f"snapshot pending event seq {event.seq} has {len(event.payload)} payload "
                f"items, more than max_payload_items={bus.max_payload_items}"
            )
        previous = event.seq
    if pending and pending[-1].seq > seq:
        raise ValueError("snapshot has pending events after its seq")
    if bus.enabled and len(pending) > bus.max_pending:
        raise ValueError(
            f"snapshot has {len(pending)} pending events, more than max_pending={bus.max_pending}"
        )
    if bus.enabled and bus._config.drop_policy == "RAISE" and len(pending) > bus.max_events:
        raise ValueError(
            f"snapshot has {len(pending)} pending events, more than "
            f"max_events={bus.max_events} with drop_policy='RAISE'"
        )
    return pending


def check_lanes(lanes: object, pending: list[Any]) -> tuple[dict[int, int], dict[int, str]]:
    """The snapshot's lane of each pending event not in the normal lane, and its
    destinations, each naming a pending event."""
    if lanes is None:
        return {}, {}
    if not isinstance(lanes, dict):
        raise ValueError("snapshot 'lanes' must be a dict")
    seqs = {event.seq for event in pending}
    lane_of_seq: dict[int, int] = {}
    for index, name in enumerate(PRIORITIES):
        if index == NORMAL:
            continue
        listed = lanes.get(name, [])
        if not isinstance(listed, list):
            raise ValueError(f"snapshot 'lanes' {name!r} must be a list of seqs")
        for seq in listed:
            if isinstance(seq, bool) or not isinstance(seq, int) or seq not in seqs:
                raise ValueError(f"snapshot {name} lane names {seq!r}, not a pending event's seq")
            if seq in lane_of_seq:
                raise ValueError(f"snapshot lanes name seq {seq} twice")
            lane_of_seq[seq] = index
    destinations = lanes.get("destinations", [])
    if not isinstance(destinations, list):
        raise ValueError("snapshot 'lanes' must hold a 'destinations' list")
    directed: dict[int, str] = {}
    for item in destinations:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValueError(f"snapshot destination must be a [seq, name] pair, got {item!r}")
        seq, name = item
        if isinstance(seq, bool) or not isinstance(seq, int) or seq not in seqs:
            raise ValueError(f"snapshot destination names {seq!r}, not a pending event's seq")
        if not isinstance(name, str) or not name:
            raise ValueError(f"snapshot destination name must be a non-empty str, got {name!r}")
        directed[seq] = name
    return lane_of_seq, directed


#: The fields of a producer's inbox entry, in the core's entry order.
INBOX_FIELDS = (
    "kind",
    "tick",
    "day",
    "polity_id",
    "ward_id",
    "actor_id",
    "subject_id",
    "payload",
    "tags",
    "priority",
)


def inbox_entry_to_dict(entry: tuple[Any, ...]) -> dict[str, Any]:
    """An inbox entry (payload as pairs) as a JSON-ready dict; tick/day ``None``: the clock's."""
    kind, tick, day, polity_id, ward_id, actor_id, subject_id, pairs, tags, lane = entry
    return {
        "kind": kind,
        "tick": None if tick < 0 else tick,
        "day": None if day < 0 else day,
        "polity_id": polity_id,
        "ward_id": ward_id,
        "actor_id": actor_id,
        "subject_id": subject_id,
        "payload": {key: jsonify(value) for key, value in pairs},
        "tags": list(tags),
        "priority": None if lane == NORMAL else PRIORITIES[lane],
    }


def check_inboxes(bus: Any, items: object) -> list[tuple[str, list[Any]]]:
    """The snapshot's producer inboxes, each entry checked as ``publish`` checks an event."""
    if not isinstance(items, list):
        raise ValueError("snapshot 'producers' must be a list")
    inboxes: list[tuple[str, list[Any]]] = []
    names: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or set(item) != {"name", "inbox"}:
            raise ValueError("snapshot producer must be a dict with 'name' and 'inbox'")
        name, inbox = item["name"], item["inbox"]
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"snapshot producer name must be a unique non-empty str, got {name!r}")
        names.add(name)
        if not isinstance(inbox, list):
            raise ValueError(f"snapshot producer {name!r} inbox must be a list")
        entries = []
        for fields in inbox:
            if not isinstance(fields, dict) or set(fields) != set(INBOX_FIELDS):
                raise ValueError(
                    f"snapshot producer {name!r} inbox entry must be a dict with exactly "
                    f"{', '.join(INBOX_FIELDS)}"
                )
            entries.append(bus._inbox_entry(*(fields[key] for key in INBOX_FIELDS), True))
        inboxes.append((name, entries))
    return inboxes
