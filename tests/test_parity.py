"""Differential testing: seeded random operation scripts on both cores.

Every step runs on the pure-Python twin and on the compiled core; results,
exceptions (type and message), the full observable state and the full
content of every event a handler received or kept must match.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

import ringbus
from _received import MODES, ORDERS, Receiver
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


def published(bus: Any) -> Any:
    return lambda: bus.stats()["published"]


def step(
    rng: random.Random,
    bus: Any,
    log: list[tuple[int, int]],
    tag: int,
    receivers: list[Receiver],
    horizon: int,
) -> Any:
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
            actor_id=rng.choice([None, "a1", "a2"]),
            tags=rng.choice([(), ("a",), ["b", "c"], (), "bad"]),
        )
    if op < 70:
        return lambda: bus.drain(max_rounds=rng.choice([None, 1, 2]))
    if op < 76:
        selector = rng.choice([None, {"DELIVERY_*"}, {"TICK", "CUSTOM"}, "D*"])
        fail = rng.random() < 0.2
        republish = rng.random() < 0.1
        # what the handler reads of each event, and whether it keeps it
        receiver = Receiver(rng.choice(MODES), rng.randrange(len(ORDERS)), horizon, published(bus))
        receivers.append(receiver)

        def handler(event: Any) -> None:
            log.append((tag, event.seq))
            receiver(event)
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
    receivers: list[list[Receiver]] = [[], []]
    rngs = [random.Random(seed * 7919), random.Random(seed * 7919)]
    horizon = 3 * config.max_events
    for number in range(250):
        results = [
            outcome(step(rngs[i], buses[i], logs[i], number, receivers[i], horizon))
            for i in range(2)
        ]
        assert results[0] == results[1], f"step {number}"
        assert state(buses[0]) == state(buses[1]), f"step {number}"
        assert logs[0] == logs[1], f"step {number}"
        assert received(receivers[0]) == received(receivers[1]), f"step {number}"
    assert received(receivers[0], everything=True) == received(receivers[1], everything=True)


def received(receivers: list[Receiver], everything: bool = False) -> list[tuple[int, str]]:
    """What each handler read since the last call, as text that tells 1, 1.0 and True apart."""
    entries = []
    for index, receiver in enumerate(receivers):
        receiver.read_kept(everything)
        entries.extend((index, repr(entry)) for entry in receiver.log)
        receiver.log.clear()
    return entries


EDGE_PAYLOADS: tuple[Any, ...] = ({"a": 1, "b": [1, "x"]}, None, {"c": 1.5}, {}, [("d", True)])
EDGE_TAGS: tuple[tuple[str, ...], ...] = (("t1", "t2"), (), ("u",), ())


@pytest.mark.parametrize("capacity", [1, 2, 3, 5])
def test_edges_agree(both_backends: Any, capacity: int) -> None:
    """Capacity 1, exact wrap, wrap with pending, overflow, empty drain.

    Handlers of every reading pattern: ``K`` events go only to handlers that
    keep them unread, ``B`` events also to handlers that read and keep them,
    ``A`` and ``C`` events only to handlers that keep nothing (so the
    compiled core reuses their event objects). Content changes per event,
    with empty tags, payloads and ids after non-empty ones.
    """
    streams = []
    for backend in both_backends:
        bus = backend.bus(max_events=capacity, max_pending=capacity * 2)
        number = 0

        def publish(kind: str, bus: Any = bus) -> Any:
            nonlocal number
            number += 1
            return bus.publish(
                kind,
                subject_id=("s1", None)[number % 2],
                payload=EDGE_PAYLOADS[number % len(EDGE_PAYLOADS)],
                tags=EDGE_TAGS[number % len(EDGE_TAGS)],
            )

        receivers = []
        for mode in MODES:
            for order in range(len(ORDERS)):
                receiver = Receiver(mode, order, 3 * capacity, published(bus))
                selector = {"keep": {"K"}, "read_keep": {"B"}}.get(mode, {"A", "B", "C"})
                bus.subscribe(receiver, kinds=selector)
                receivers.append(receiver)
        record: list[Any] = [bus.drain()]  # empty drain
        for _ in range(capacity):  # exact wrap
            publish("A")
        record.append(state(bus))
        record.append(bus.drain())
        for index in range(capacity * 2):  # wrap with everything pending
            publish("B" if index % 3 else "K")
        record.append(state(bus))
        record.append(outcome(lambda: publish("C")))  # overflow
        record.append(bus.drain())
        record.append(received(receivers))
        record.append(state(bus))
        for index in range(capacity * 3):  # overwrite every slot kept events read from
            publish("K" if index % 2 else "C")
            record.append(bus.drain())
            record.append(received(receivers))
        record.append(received(receivers, everything=True))
        record.append(state(bus))
        streams.append(repr(record))
    assert len(set(streams)) == 1
