"""Input that would corrupt state later is refused up front, on both cores.

- ``restore()`` is all-or-nothing: a refused snapshot changes nothing.
- The route cache stays bounded however many kinds are published.
- The ring's size is limited the same way on both cores, with one message.
- Sizes too large for the core are a ``ValueError`` naming the field.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from ringbus import MAX_RING_BYTES, EventBusConfig
from ringbus._ringbus_py import ROUTE_CACHE_LIMIT


# -- restore() is all-or-nothing ---------------------------------------------
def rich_snapshot(backend: Any) -> dict[str, Any]:
    """A snapshot with every section: pending events in both lanes, a direct
    event, scheduled events, dead letters, group turns, delivery records, hooks."""
    bus = backend.bus(error_policy="dead_letter", max_retries=1)
    bus.add_snapshot_hook("counter", lambda: {"n": 7}, lambda state: None)
    bus.track_deliveries(50)

    def fail(event: Any) -> None:
        raise RuntimeError("boom")

    bus.subscribe(fail, kinds={"FAIL"}, name="failing")
    bus.subscribe(lambda e: None, kinds={"JOB"}, group="workers")
    bus.subscribe(lambda e: None, kinds={"JOB"}, group="workers")
    bus.subscribe(lambda e: None, kinds={"DIRECT"}, name="inbox")
    bus.set_clock(3, 1)
    bus.publish("FAIL")
    bus.publish("JOB")
    bus.drain()
    bus.set_clock(4, 1)
    bus.drain()  # the retry fails too: a dead letter
    bus.publish("FAIL")  # a pending retry after this drain
    bus.drain()
    bus.schedule(9, "LATER", payload={"x": 1})
    bus.publish("A", payload={"i": 1})
    bus.publish_urgent("B")
    bus.send("inbox", "DIRECT")
    bus.publish("A", payload={"i": 2})
    snapshot = json.loads(json.dumps(bus.snapshot()))
    for section in ("scheduled", "dead_letters", "lanes", "routing", "deliveries"):
        assert section in snapshot, section
    assert len(snapshot["pending"]) == 4
    assert snapshot["dead_letters"]["dead"] and snapshot["dead_letters"]["retrying"]
    return snapshot


def target_bus(backend: Any, loads: list[Any] | None = None) -> Any:
    bus = backend.bus(error_policy="dead_letter", max_retries=1)
    bus.add_snapshot_hook("counter", lambda: {"n": 0}, (loads if loads is not None else []).append)
    bus.set_clock(1, 0)
    return bus


def full_state(bus: Any) -> tuple[Any, ...]:
    return (
        json.dumps(bus.snapshot(), sort_keys=True),
        bus.stats(),
        len(bus),
        bus.get_since(0),
        bus.scheduled(),
        bus.dead_letters.stats(),
    )


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def corrupt(snapshot: dict[str, Any]) -> None:
        node = snapshot
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return corrupt


def _swap_pending(snapshot: dict[str, Any]) -> None:
    pending = snapshot["pending"]
    pending[1], pending[2] = pending[2], pending[1]


def _duplicate_pending(snapshot: dict[str, Any]) -> None:
    snapshot["pending"].append(dict(snapshot["pending"][-1]))


def _pending_after_seq(snapshot: dict[str, Any]) -> None:
    snapshot["seq"] = snapshot["pending"][-1]["seq"] - 1


def _big_payload(snapshot: dict[str, Any]) -> None:
    snapshot["pending"][-1]["payload"] = {f"k{i}": i for i in range(20)}


def _bad_event(snapshot: dict[str, Any]) -> None:
    snapshot["pending"][-1]["kind"] = ""


CORRUPTIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "scheduled not a dict": _set(("scheduled",), "soon"),
    "scheduled entry malformed": _set(("scheduled", "entries", 0, "at_tick"), "x"),
    "scheduled unknown field": _set(("scheduled", "entries", 0, "fields", "colour"), 1),
    "scheduled payload invalid": _set(("scheduled", "entries", 0, "fields", "payload"), "x"),
    "scheduled tick negative": _set(("scheduled", "entries", 0, "at_tick"), -1),
    "dead letter due tick not an int": _set(("dead_letters", "retrying", 0, "due_tick"), "soon"),
    "dead letter count negative": _set(("dead_letters", "dropped"), -1),
    "dead letters not a dict": _set(("dead_letters",), []),
    "dead letter missing key": _set(("dead_letters", "dead", 0), {"event": {}}),
    "dead letter bad event": _set(("dead_letters", "retrying", 0, "event", "seq"), -1),
    "pending out of order": _swap_pending,
    "pending seq repeated": _duplicate_pending,
    "pending after seq": _pending_after_seq,
    "pending payload too large": _big_payload,
    "pending event malformed": _bad_event,
    "pending not a list": _set(("pending",), {}),
    "lanes not a dict": _set(("lanes",), []),
    "lane destination malformed": _set(("lanes", "destinations"), [[1]]),
    "lane destination not a str": _set(("lanes", "destinations", 0, 1), None),
    "lane urgent not pending": _set(("lanes", "urgent"), [999]),
    "routing malformed": _set(("routing", "group_turns", "workers"), -1),
    "deliveries malformed": _set(("deliveries", "records"), "none"),
    "deliveries bad record": _set(("deliveries", "records", 0), {"seq": 1}),
    "tick negative": _set(("tick",), -1),
    "day not an int": _set(("day",), "1"),
    "seq too large": _set(("seq",), 2**64),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_refused_restore_changes_nothing(backend: Any, name: str) -> None:
    good = rich_snapshot(backend)
    bad = copy.deepcopy(good)
    CORRUPTIONS[name](bad)
    loads: list[Any] = []
    bus = target_bus(backend, loads)
    before = full_state(bus)
    with pytest.raises((ValueError, TypeError)):
        bus.restore(bad)
    assert full_state(bus) == before
    assert loads == []  # no hook saw the refused snapshot
    # The refusal left the bus fresh: the good snapshot restores and continues.
    bus.restore(good)
    assert loads == [{"n": 7}]
    assert bus.snapshot() == {**good, "hooks": {"counter": {"n": 0}}}
    assert bus.publish("A") == good["seq"] + 1


def test_restore_refuses_more_pending_than_the_bus_holds(backend: Any) -> None:
    good = rich_snapshot(backend)
    bus = backend.bus(max_pending=3)
    bus.add_snapshot_hook("counter", dict, lambda state: None)
    before = full_state(bus)
    with pytest.raises(ValueError, match="4 pending events, more than max_pending=3"):
        bus.restore(good)
    assert full_state(bus) == before
    full = backend.bus(max_events=3, drop_policy="RAISE")
    full.add_snapshot_hook("counter", dict, lambda state: None)
    before = full_state(full)
    with pytest.raises(ValueError, match="4 pending events, more than max_events=3"):
        full.restore(good)
    assert full_state(full) == before


def test_hook_load_failure_rolls_everything_back(backend: Any) -> None:
    good = rich_snapshot(backend)
    good["hooks"] = {"first": {"v": 1}, "second": {"v": 2}, "third": {"v": 3}}
    state: dict[str, Any] = {"first": {"v": 0}, "second": {"v": 0}, "third": {"v": 0}}
    failing = {"second": True}

    def hook(name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        def save() -> Any:
            return state[name]

        def load(value: Any) -> None:
            if failing.get(name):
                raise RuntimeError(f"{name} cannot load")
            state[name] = value

        return save, load

    bus = backend.bus(error_policy="dead_letter", max_retries=1)
    for name in ("first", "second", "third"):
        bus.add_snapshot_hook(name, *hook(name))
    before = full_state(bus)
    with pytest.raises(RuntimeError, match="second cannot load") as raised:
        bus.restore(good)
    assert any("snapshot hook 'second'" in note for note in raised.value.__notes__)
    # The bus is untouched and the hook that had loaded got its old state back.
    assert full_state(bus) == before
    assert state == {"first": {"v": 0}, "second": {"v": 0}, "third": {"v": 0}}
    failing.clear()
    bus.restore(good)
    assert state == {"first": {"v": 1}, "second": {"v": 2}, "third": {"v": 3}}
    assert bus.snapshot() == good


def test_hook_load_failure_keeps_the_error_of_a_failed_rollback(backend: Any) -> None:
    good = rich_snapshot(backend)
    good["hooks"] = {"first": {"v": 1}, "second": {"v": 2}}
    calls: list[Any] = []

    def load_first(value: Any) -> None:
        calls.append(value)
        if value == {"v": 0}:
            raise RuntimeError("first cannot go back")

    def load_second(value: Any) -> None:
        raise RuntimeError("second cannot load")

    bus = backend.bus()
    bus.add_snapshot_hook("first", lambda: {"v": 0}, load_first)
    bus.add_snapshot_hook("second", lambda: {"v": 0}, load_second)
    before = full_state(bus)
    with pytest.raises(RuntimeError, match="second cannot load") as raised:
        bus.restore(good)
    assert calls == [{"v": 1}, {"v": 0}]
    assert any("first cannot go back" in note for note in raised.value.__notes__)
    assert full_state(bus) == before


def test_restore_saves_only_the_hooks_it_loads(backend: Any) -> None:
    good = rich_snapshot(backend)

    def unsaveable() -> Any:
        raise AssertionError("save() of a hook with no state in the snapshot was called")

    bus = backend.bus()
    bus.add_snapshot_hook("counter", dict, lambda state: None)
    bus.add_snapshot_hook("other", unsaveable, lambda state: None)
    bus.restore(good)
    assert bus.latest_seq() == good["seq"]


def test_hook_load_that_publishes_is_refused(backend: Any) -> None:
    good = rich_snapshot(backend)
    state = {"v": 0}
    bus = backend.bus()
    bus.add_snapshot_hook("counter", lambda: dict(state), state.update)
    bus.add_snapshot_hook("noisy", dict, lambda value: bus.publish("LOADED"))
    good["hooks"] = {"counter": {"v": 1}, "noisy": {}}
    with pytest.raises(RuntimeError, match="published or scheduled events during restore"):
        bus.restore(good)
    assert state == {"v": 0}
    # Only what the hook published (loading, then being put back): no snapshot event.
    assert {e.kind for e in bus.pending_events()} == {"LOADED"}


def test_restored_bus_continues_after_a_refusal(backend: Any) -> None:
    good = rich_snapshot(backend)
    bad = copy.deepcopy(good)
    _swap_pending(bad)
    seen: list[Any] = []
    bus = backend.bus()
    bus.add_snapshot_hook("counter", dict, lambda state: None)
    with pytest.raises(ValueError, match="pending events must be in increasing seq order"):
        bus.restore(bad)
    bus.restore(good)
    bus.subscribe(lambda e: seen.append((e.seq, e.kind)), kinds={"A", "B"})
    bus.subscribe(lambda e: seen.append((e.seq, e.kind)), kinds={"DIRECT"}, name="inbox")
    bus.drain()
    assert seen == [(5, "B"), (4, "A"), (6, "DIRECT"), (7, "A")]  # the urgent lane first


# -- the route cache is bounded ----------------------------------------------
@pytest.mark.parametrize("selector", [None, {"KIND_*"}, {"OTHER"}])
def test_route_cache_stays_bounded(backend: Any, selector: set[str] | None) -> None:
    bus = backend.bus(max_events=1024)
    seen: list[str] = []
    bus.subscribe(lambda e: seen.append(e.kind), kinds=selector)
    kinds_published = [f"KIND_{i}" for i in range(100_000)]
    for start in range(0, len(kinds_published), 1000):
        for kind in kinds_published[start : start + 1000]:
            bus.publish(kind)
        bus.drain()
        assert len(bus._routes) <= ROUTE_CACHE_LIMIT
    assert seen == ([] if selector == {"OTHER"} else kinds_published)


def test_route_cache_is_invalidated_when_subscriptions_change(backend: Any) -> None:
    bus = backend.bus()
    first: list[str] = []
    second: list[str] = []
    for i in range(ROUTE_CACHE_LIMIT + 10):
        bus.publish(f"K{i}")
    bus.publish("HOT")
    bus.drain()
    assert len(bus._routes) <= ROUTE_CACHE_LIMIT
    sub = bus.subscribe(first.append, kinds={"HOT"})
    bus.publish("HOT")
    bus.drain()
    bus.subscribe(second.append, kinds={"H*"})
    bus.unsubscribe(sub)
    bus.publish("HOT")
    bus.drain()
    assert [e.seq for e in first] == [ROUTE_CACHE_LIMIT + 12]
    assert [e.seq for e in second] == [ROUTE_CACHE_LIMIT + 13]


def test_route_cache_limit_is_the_same_on_both_cores(both_backends: Any) -> None:
    assert {b.core.ROUTE_CACHE_LIMIT for b in both_backends} == {ROUTE_CACHE_LIMIT}


# -- the ring's size is limited the same way on both cores --------------------
def test_ring_size_limit(backend: Any) -> None:
    slot = 88 + 16 * 12
    needs = f"max_events=1000000000000 needs about {slot}000000000000 bytes of ring"
    with pytest.raises(ValueError, match=needs):
        backend.bus(max_events=10**12)
    with pytest.raises(ValueError, match=needs):
        backend.RingCore(max_events=10**12)
    largest = MAX_RING_BYTES // slot
    with pytest.raises(ValueError, match=f"max_events={largest + 1} needs about"):
        backend.RingCore(max_events=largest + 1)
    with pytest.raises(ValueError, match=f"max_events={largest + 1} needs about"):
        EventBusConfig(max_events=largest + 1)
    assert EventBusConfig(max_events=largest).max_events == largest  # accepted, not built
    with pytest.raises(ValueError, match="max_payload_items must be <= 64"):
        backend.bus(max_payload_items=10**12)
    with pytest.raises(ValueError, match="max_payload_items must be <= 64"):
        backend.RingCore(max_payload_items=10**12)


@pytest.mark.c_extension
def test_ring_size_error_is_the_same_on_both_cores(both_backends: Any) -> None:
    messages = set()
    for backend in both_backends:
        with pytest.raises(ValueError) as raised:
            backend.RingCore(max_events=10**12, max_payload_items=64, max_pending=0)
        messages.add(str(raised.value))
    assert messages == {
        "max_events=1000000000000 needs about 1112000000000000 bytes of ring (1112 bytes "
        "per event at max_payload_items=64); a ring may take at most 68719476736 bytes "
        "(64 GiB): lower max_events to 61798090 or less"
    }


@pytest.mark.parametrize(
    "field", ["max_events", "max_payload_items", "max_pending", "cascade_rounds"]
)
@pytest.mark.parametrize("value", [2**63, 2**200])
def test_huge_sizes_are_a_value_error_naming_the_field(
    backend: Any, field: str, value: int
) -> None:
    limit = 64 if field == "max_payload_items" else sys.maxsize
    with pytest.raises(ValueError, match=f"{field} must be <= {limit}, got {value}"):
        backend.RingCore(**{field: value})
    with pytest.raises(ValueError, match=f"{field} must be <= {limit}, got {value}"):
        EventBusConfig(**{field: value})
    with pytest.raises(ValueError, match="max_rounds"):
        backend.RingCore().drain(value)


@pytest.mark.parametrize("field", ["retry_backoff_ticks", "dead_letter_limit", "max_retries"])
def test_huge_facade_sizes_are_a_value_error_naming_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EventBusConfig(**{field: 2**200})
