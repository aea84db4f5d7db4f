"""Differential testing: seeded random operation scripts on both cores.

Every step runs on the pure-Python twin and on the compiled core; results,
exceptions (type and message) and the full observable state must match.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import ringbus
from ringbus import kinds

pytestmark = pytest.mark.c_extension

KINDS = (*kinds.CORE_KINDS, "CUSTOM", "DELIVERY_RETURNED")
BAD_VALUES: tuple[object, ...] = ({}, {1}, float("inf"), b"x", object)


def state(bus: Any) -> dict[str, Any]:
    return {
        "latest": bus.latest_seq(),
        "oldest": bus.oldest_seq(),
        "len": len(bus),
        "pending": [e.to_dict() for e in bus.pending_events()],
        "ring": [e.to_dict() for e in bus.get_since(0)],
        "stats": bus.stats(),
        "clock": (bus.tick, bus.day),
        "routing": bus.pending_routing(),
    }


def outcome(call: Any) -> Any:
    try:
        result = call()
    except ExceptionGroup as group:
        return ("group", str(group), [(type(e).__name__, str(e)) for e in group.exceptions])
    except Exception as error:  # the parity check compares every error
        return ("error", type(error).__name__, str(error))
    if isinstance(result, list):
        return [e.to_dict() for e in result]
    return result


def random_payload(rng: random.Random) -> object:
    shape = rng.randrange(8)
    size = rng.randrange(0, 16)
    if shape == 0:
        return None
    if shape == 1:
        return [(f"k{i}", rng.randrange(100)) for i in range(size)]
    if shape == 2:
        return {rng.choice(["a", 1, "b"]): "x"}
    if shape == 3:
        return {"bad": rng.choice(BAD_VALUES)}
    if shape == 4:
        return {"nested": [1, [2.5, ["deep", None]]], "flag": rng.random() < 0.5}
    return {f"k{i}": rng.choice([i, -i, 2**70, "s", 1.25, None, True]) for i in range(size)}


def step(rng: random.Random, bus: Any, log: list[tuple[int, int]], tag: int) -> Any:
    op = rng.randrange(100)
    if op < 8:
        urgent = rng.random() < 0.5
        destination = rng.choice([None, "a", "b", "nobody"]) if op < 4 else None
        kind = rng.choice(KINDS)
        if destination is None:
            return lambda: bus.publish_urgent(kind, payload=random_payload(rng))
        return lambda: bus.send(destination, kind, urgent=urgent, payload={"d": 1})
    if op < 55:
        kind = rng.choice(KINDS) if rng.random() > 0.02 else rng.choice(["", 7])
        tick = None if rng.random() < 0.7 else rng.choice([rng.randrange(50), -3])
        return lambda: bus.publish(
            kind,
            tick,
            polity_id=rng.choice([None, "p1", "p2"]),
            subject_id=rng.choice([None, "s1"]),
            payload=random_payload(rng),
            tags=rng.choice([(), ("a",), ["b", "c"], "bad"]),
        )
    if op < 70:
        return lambda: bus.drain(max_rounds=rng.choice([None, 1, 2]))
    if op < 76:
        selector = rng.choice([None, {"DELIVERY_*"}, {"TICK", "CUSTOM"}, "D*"])
        fail = rng.random() < 0.2
        republish = rng.random() < 0.1

        def handler(event: Any) -> None:
            log.append((tag, event.seq))
            if republish and event.kind != "ECHO":
                bus.publish("ECHO")
            if fail:
                raise ValueError(f"fail {event.seq}")

        name = rng.choice([None, "a", "b"])
        return lambda: bus.subscribe(handler, kinds=selector, name=name)
    if op < 80:
        subs = [s.sub_id for s in bus.subscriptions()]
        target = rng.choice(subs) if subs and rng.random() < 0.9 else 999
        return lambda: bus.unsubscribe(target)
    if op < 85:
        tick, day = rng.randrange(100), rng.choice([None, rng.randrange(5)])
        return lambda: bus.set_clock(tick, day)
    if op < 95:
        seq = rng.randrange(0, bus.latest_seq() + 3)
        selector = rng.choice([None, ["DELIVERY_*"], {"TICK"}])
        limit = rng.choice([None, 0, 1, 5])
        return lambda: bus.get_since(seq, kinds=selector, limit=limit)
    seq = rng.randrange(1, 200)
    event_type = type(bus)._world_event
    return lambda: bus.ingest(event_type(seq, 1, 0, rng.choice(KINDS)))


@pytest.mark.parametrize("seed", range(40))
def test_random_scripts_agree(both_backends: Any, seed: int) -> None:
    rng_config = random.Random(seed)
    config = ringbus.EventBusConfig(
        max_events=rng_config.choice([1, 2, 3, 8, 64]),
        max_payload_items=rng_config.choice([1, 2, 5, 12]),
        max_pending=rng_config.choice([3, 10, 1000]),
        drop_policy=rng_config.choice(["DROP_OLDEST", "DROP_OLDEST", "RAISE"]),
        cascade_rounds=rng_config.choice([1, 1, 3]),
    )
    py, cy = both_backends
    buses = [py.EventBus(config), cy.EventBus(config)]
    logs: list[list[tuple[int, int]]] = [[], []]
    rngs = [random.Random(seed * 7919), random.Random(seed * 7919)]
    for number in range(250):
        results = [outcome(step(rngs[i], buses[i], logs[i], number)) for i in range(2)]
        assert results[0] == results[1], f"step {number}"
        assert state(buses[0]) == state(buses[1]), f"step {number}"
        assert logs[0] == logs[1], f"step {number}"


@pytest.mark.parametrize("capacity", [1, 2, 5])
def test_edges_agree(both_backends: Any, capacity: int) -> None:
    """Capacity 1, exact wrap, wrap with pending, overflow, empty drain."""
    streams = []
    for backend in both_backends:
        bus = backend.bus(max_events=capacity, max_pending=capacity * 2)
        seen: list[int] = []
        bus.subscribe(lambda e, seen=seen: seen.append(e.seq))
        record: list[Any] = [bus.drain()]  # empty drain
        for _ in range(capacity):  # exact wrap
            bus.publish("A")
        record.append(state(bus))
        for _ in range(capacity):  # wrap with everything pending
            bus.publish("B")
        record.append(state(bus))
        record.append(outcome(lambda bus=bus: bus.publish("C")))  # overflow
        record.append(bus.drain())
        record.append(list(seen))
        record.append(state(bus))
        streams.append(json.dumps(record, sort_keys=True))
    assert len(set(streams)) == 1
