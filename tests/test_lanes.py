"""Urgent lanes and direct delivery, on both cores."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringbus import UnknownDestinationError


def recorder(bus: Any, **options: Any) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    bus.subscribe(lambda e: seen.append((e.kind, e.seq)), **options)
    return seen


def test_urgent_events_go_first_in_seq_order(backend: Any) -> None:
    bus = backend.bus()
    seen = recorder(bus)
    bus.publish("N1")
    bus.publish_urgent("U1")
    bus.publish("N2")
    bus.publish_urgent("U2", payload={"x": 1})
    assert bus.pending_count() == 4
    assert [e.seq for e in bus.pending_events()] == [1, 2, 3, 4]
    assert bus.drain() == 4
    assert seen == [("U1", 2), ("U2", 4), ("N1", 1), ("N2", 3)]
    assert [e.seq for e in bus.get_since(0)] == [1, 2, 3, 4]  # the ring stays in seq order
    assert bus.pending_count() == 0 and bus.stats()["dispatched"] == 4


def test_urgent_published_by_handlers_waits_for_the_next_round(backend: Any) -> None:
    bus = backend.bus(cascade_rounds=2)
    seen: list[str] = []

    def handler(event: Any) -> None:
        seen.append(event.kind)
        if event.kind == "N1":
            bus.publish("N3")
            bus.publish_urgent("U-late")

    bus.subscribe(handler)
    bus.publish("N1")
    bus.publish("N2")
    bus.publish_urgent("U1")
    assert bus.drain() == 5
    assert seen == ["U1", "N1", "N2", "U-late", "N3"]


def test_urgent_lane_survives_a_wrapped_ring(backend: Any) -> None:
    bus = backend.bus(max_events=2)
    seen = recorder(bus)
    bus.publish_urgent("U1")
    bus.publish("N1")
    bus.publish_urgent("U2")
    bus.publish("N2")
    bus.publish("N3")
    assert len(bus) == 2 and bus.pending_count() == 5
    assert bus.drain() == 5
    assert seen == [("U1", 1), ("U2", 3), ("N1", 2), ("N2", 4), ("N3", 5)]


def test_send_reaches_only_the_named_subscription(backend: Any) -> None:
    bus = backend.bus()
    to_a = recorder(bus, name="a")
    to_b = recorder(bus, name="b", kinds={"ORDER"})
    everyone = recorder(bus)
    bus.send("a", "ORDER")
    bus.send("b", "ORDER", payload={"n": 1})
    bus.publish("ORDER")
    bus.drain()
    assert to_a == [("ORDER", 1), ("ORDER", 3)]
    assert to_b == [("ORDER", 2), ("ORDER", 3)]
    assert everyone == [("ORDER", 3)]


def test_send_to_a_group_picks_one_member(backend: Any) -> None:
    bus = backend.bus()
    got: list[tuple[str, int]] = []
    for name in ("w1", "w2"):
        bus.subscribe(lambda e, name=name: got.append((name, e.seq)), name=name, group="pool")
    for _ in range(4):
        bus.send("pool", "JOB")
    bus.drain()
    assert sorted(seq for _name, seq in got) == [1, 2, 3, 4]
    assert {name for name, _seq in got} == {"w1", "w2"}


def test_unknown_destination_raises_after_delivering_the_rest(backend: Any) -> None:
    bus = backend.bus()
    seen = recorder(bus, name="a", kinds={"ORDER"})
    bus.send("nobody", "ORDER")
    bus.send("a", "OTHER")  # the name exists, but not for this kind
    bus.publish("ORDER")
    with pytest.raises(ExceptionGroup) as info:
        bus.drain()
    errors = info.value.exceptions
    assert [type(e) for e in errors] == [UnknownDestinationError, UnknownDestinationError]
    assert "no subscription named 'nobody' takes kind 'ORDER'" in str(errors[0])
    assert seen == [("ORDER", 3)]
    assert bus.pending_count() == 0


def test_unknown_destination_log_and_dead_letter(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    logged = backend.bus(unknown_destination="log")
    logged.send("nobody", "ORDER")
    with caplog.at_level("ERROR", logger="ringbus"):
        assert logged.drain() == 1
    assert "no subscription named 'nobody'" in caplog.text

    kept = backend.bus(unknown_destination="dead_letter")
    kept.send("nobody", "ORDER", payload={"n": 1})
    kept.drain()
    (letter,) = kept.dead_letters.list()
    assert (letter.event.seq, letter.name, letter.reason) == (1, "nobody", "unknown destination")
    assert letter.error_type == "UnknownDestinationError"


def test_bad_destination(backend: Any) -> None:
    bus = backend.bus()
    with pytest.raises(TypeError, match="destination must be a non-empty str"):
        bus.send("", "ORDER")
    with pytest.raises(TypeError, match="destination must be a non-empty str"):
        bus.send(3, "ORDER")
    assert bus.latest_seq() == 0


def test_lanes_and_destinations_survive_snapshot(backend: Any) -> None:
    def build() -> tuple[Any, list[tuple[str, int]], list[tuple[str, int]]]:
        bus = backend.bus()
        return bus, recorder(bus), recorder(bus, name="direct")

    bus, _all, _direct = build()
    bus.publish("N1")
    bus.send("direct", "D1")
    bus.publish_urgent("U1")
    bus.send("direct", "D2", urgent=True)
    snapshot = json.loads(json.dumps(bus.snapshot()))
    assert snapshot["lanes"] == {"urgent": [3, 4], "destinations": [[2, "direct"], [4, "direct"]]}

    expected_all = [("U1", 3), ("N1", 1)]
    expected_direct = [("U1", 3), ("D2", 4), ("N1", 1), ("D1", 2)]
    for target in (bus, None):
        if target is None:
            target, everything, direct = build()
            target.restore(snapshot)
        else:
            everything, direct = _all, _direct
        target.drain()
        assert everything == expected_all
        assert direct == expected_direct


def test_disabled_bus_ignores_lanes(backend: Any) -> None:
    bus = backend.bus(enabled=False)
    assert bus.publish_urgent("U") == 0
    assert bus.send("x", "D") == 0
    assert bus.drain() == 0


def test_publishing_shortcuts_take_publishs_fields_only(backend: Any) -> None:
    bus = backend.bus()
    bus.subscribe(print, name="dest")
    with pytest.raises(
        TypeError, match="publish_urgent\\(\\) got an unexpected keyword argument 'bogus'"
    ):
        bus.publish_urgent("A", bogus=1)
    with pytest.raises(TypeError, match="send\\(\\) got an unexpected keyword argument 'priority'"):
        bus.send("dest", "A", priority="high")
    assert bus.latest_seq() == 0
    seq = bus.send("dest", "A", 3, 1, polity_id="p", payload={"x": 1}, tags=["t"])
    event = bus.pending_events()[0]
    assert (seq, event.tick, event.day, event.polity_id, event.payload, event.tags) == (
        1,
        3,
        1,
        "p",
        (("x", 1),),
        ("t",),
    )
