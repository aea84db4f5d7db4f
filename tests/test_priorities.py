"""Four priority levels at publish: low, normal, high, urgent (both cores)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ringbus._normalise import PRIORITIES


def dispatch_order(bus: Any) -> list[tuple[int, str]]:
    order: list[tuple[int, str]] = []
    bus.subscribe(lambda event: order.append((event.seq, event.kind)))
    return order


def test_higher_levels_drain_first_fifo_within_a_level(backend: Any) -> None:
    bus = backend.bus()
    order = dispatch_order(bus)
    for kind, priority in [
        ("n1", None),
        ("l1", "low"),
        ("h1", "high"),
        ("u1", "urgent"),
        ("n2", "normal"),
        ("l2", "low"),
        ("h2", "high"),
        ("u2", "urgent"),
    ]:
        bus.publish(kind, priority=priority)
    bus.publish_urgent("u3")
    assert bus.drain() == 9
    assert [kind for _seq, kind in order] == ["u1", "u2", "u3", "h1", "h2", "n1", "n2", "l1", "l2"]
    # The ring and get_since stay in seq order.
    assert [event.kind for event in bus.get_since(0)] == [
        "n1",
        "l1",
        "h1",
        "u1",
        "n2",
        "l2",
        "h2",
        "u2",
        "u3",
    ]


def test_events_from_handlers_wait_for_the_next_round(backend: Any) -> None:
    bus = backend.bus(cascade_rounds=3)
    order = dispatch_order(bus)

    def react(event: Any) -> None:
        if event.kind == "low-start":
            bus.publish("late-low", priority="low")
            bus.publish("late-high", priority="high")

    bus.subscribe(react)
    bus.publish("low-start", priority="low")
    bus.publish("normal")
    bus.drain()
    assert [kind for _seq, kind in order] == ["normal", "low-start", "late-high", "late-low"]


def test_a_bad_priority_takes_no_seq(backend: Any) -> None:
    bus = backend.bus()
    for bad in ("LOW", "", 3, True, object()):
        with pytest.raises(ValueError, match="priority must be one of 'low', 'normal', 'high'"):
            bus.publish("A", priority=bad)
    assert bus.latest_seq() == 0 and bus.pending_count() == 0
    assert backend.bus(enabled=False).publish("A", priority="bogus") == 0


def test_lanes_survive_snapshot_and_restore(backend: Any) -> None:
    bus = backend.bus()
    for kind, priority in [("n", None), ("l", "low"), ("h", "high"), ("u", "urgent")]:
        bus.publish(kind, priority=priority)
    state = bus.snapshot()
    assert state["lanes"] == {"low": [2], "high": [3], "urgent": [4], "destinations": []}
    fresh = backend.bus()
    order = dispatch_order(fresh)
    fresh.restore(state)
    fresh.drain()
    assert [kind for _seq, kind in order] == ["u", "h", "n", "l"]
    bad = dict(state, lanes={"low": [2], "high": [2], "urgent": [], "destinations": []})
    with pytest.raises(ValueError, match="snapshot lanes name seq 2 twice"):
        backend.bus().restore(bad)


def test_a_small_ring_keeps_every_lane_in_order(backend: Any) -> None:
    """Pending events the ring overwrites (spilled) keep their lane."""
    bus = backend.bus(max_events=3)
    order = dispatch_order(bus)
    rng = random.Random(7)
    published: list[tuple[int, int, str]] = []
    for n in range(40):
        lane = rng.randrange(4)
        seq = bus.publish(f"E{n}", priority=PRIORITIES[lane])
        published.append((-lane, seq, f"E{n}"))
    bus.drain()
    assert order == [(seq, kind) for _lane, seq, kind in sorted(published)]


@pytest.mark.c_extension
def test_both_cores_order_a_random_run_alike(both_backends: Any) -> None:
    results = []
    for backend in both_backends:
        bus = backend.bus(max_events=8)
        order = dispatch_order(bus)
        rng = random.Random(2024)

        def react(event: Any, rng: random.Random = rng, bus: Any = bus) -> None:
            if rng.random() < 0.2:
                bus.publish("child", priority=rng.choice(PRIORITIES))

        bus.subscribe(react)
        for tick in range(30):
            bus.set_clock(tick)
            for _ in range(rng.randrange(6)):
                choice = rng.choice((*PRIORITIES, None, "send-urgent"))
                if choice == "send-urgent":
                    bus.publish_urgent("U")
                else:
                    bus.publish("E", priority=choice)
            bus.drain()
        results.append((order, bus.snapshot()))
    assert results[0] == results[1]
