"""Events scheduled for a future tick: release order, seqs, snapshots."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringbus import PendingOverflowError


def kinds_and_ticks(bus: Any) -> list[tuple[int, str, int, int]]:
    return [(e.seq, e.kind, e.tick, e.day) for e in bus.get_since(0)]


def test_release_order_and_seqs(backend: Any) -> None:
    bus = backend.bus()
    assert bus.schedule(5, "B") == 0
    assert bus.schedule(3, "A") == 1
    assert bus.schedule(5, "C", polity_id="p", payload={"n": [1, 2]}, tags=["t"]) == 2
    assert bus.schedule(4, "D") == 3
    assert [e["kind"] for e in bus.scheduled()] == ["A", "D", "B", "C"]
    bus.set_clock(2, 0)
    assert bus.latest_seq() == 0  # nothing due yet
    bus.set_clock(3, 0)
    bus.publish("LOOP")  # published by the loop after the release
    bus.set_clock(5, 1)  # clock jumps past tick 4: D, then B and C in scheduling order
    assert kinds_and_ticks(bus) == [
        (1, "A", 3, 0),
        (2, "LOOP", 3, 0),
        (3, "D", 4, 1),
        (4, "B", 5, 1),
        (5, "C", 5, 1),
    ]
    event = bus.get_since(4)[0]
    assert (event.polity_id, event.payload, event.tags) == ("p", (("n", (1, 2)),), ("t",))
    assert bus.scheduled() == [] and bus.pending_count() == 5
    bus.set_clock(6)
    assert bus.latest_seq() == 5


def test_scheduling_from_a_handler(backend: Any) -> None:
    bus = backend.bus()

    def follow_up(event: Any) -> None:
        bus.schedule(event.tick + 2, "FOLLOW_UP", subject_id=str(event.seq))

    bus.subscribe(follow_up, kinds={"START"})
    bus.set_clock(1, 0)
    bus.publish("START")
    bus.drain()
    bus.set_clock(2)
    assert bus.latest_seq() == 1
    bus.set_clock(3)
    (released,) = bus.get_since(1)
    assert (released.kind, released.tick, released.subject_id) == ("FOLLOW_UP", 3, "1")


def test_bad_schedules(backend: Any) -> None:
    bus = backend.bus()
    bus.set_clock(10, 1)
    with pytest.raises(ValueError, match="after the current tick 10, got 10"):
        bus.schedule(10, "X")
    with pytest.raises(TypeError, match="unknown fields day"):
        bus.schedule(11, "X", day=3)
    with pytest.raises(TypeError, match="polity_id"):
        bus.schedule(11, "X", polity_id=5)
    with pytest.raises(ValueError, match="kind"):
        bus.schedule(11, "")
    with pytest.raises(TypeError, match="at_tick"):
        bus.schedule("11", "X")
    assert bus.scheduled() == []
    disabled = backend.bus(enabled=False)
    assert disabled.schedule(1, "X") == 0
    disabled.set_clock(2)
    assert disabled.scheduled() == [] and disabled.latest_seq() == 0


def test_overflow_keeps_the_entry_queued(backend: Any) -> None:
    bus = backend.bus(max_pending=1)
    bus.schedule(1, "A")
    bus.schedule(1, "B")
    with pytest.raises(PendingOverflowError):
        bus.set_clock(1)
    assert [e["kind"] for e in bus.scheduled()] == ["B"]
    bus.drain()
    bus.set_clock(1)
    assert [e.kind for e in bus.get_since(0)] == ["A", "B"]


def test_schedule_survives_snapshot(backend: Any) -> None:
    def fill(bus: Any) -> None:
        bus.set_clock(1, 0)
        bus.publish("NOW")
        bus.schedule(4, "LATER", ward_id="w", payload={"x": 1.5})
        bus.schedule(2, "SOON")
        bus.schedule(4, "LAST")

    def finish(bus: Any) -> list[dict[str, Any]]:
        for tick in range(2, 6):
            bus.set_clock(tick, tick // 3)
            bus.publish("LOOP")
            bus.drain()
        return [e.to_dict() for e in bus.get_since(0)]

    straight = backend.bus()
    fill(straight)
    expected = finish(straight)

    first = backend.bus()
    fill(first)
    snapshot = json.loads(json.dumps(first.snapshot()))
    assert [e["kind"] for e in snapshot["scheduled"]["entries"]] == ["SOON", "LATER", "LAST"]
    restored = backend.bus()
    restored.restore(snapshot)
    assert restored.scheduled() == first.scheduled()
    assert first.get_since(0)[0].to_dict() == expected[0]
    assert finish(restored) == expected  # the pending NOW came back too
    assert restored.schedule(9, "NEXT") == 3  # scheduling order continues
    assert "scheduled" not in backend.bus().snapshot()
    with pytest.raises(ValueError, match="fresh bus"):
        restored.restore(snapshot)
    busy = backend.bus()
    busy.schedule(3, "X")
    with pytest.raises(ValueError, match="fresh bus"):
        busy.restore(snapshot)
    with pytest.raises(ValueError, match="unknown fields"):
        backend.bus().restore(
            {
                **snapshot,
                "scheduled": {
                    "next_order": 1,
                    "entries": [{"at_tick": 3, "order": 0, "kind": "X", "fields": {"day": 1}}],
                },
            }
        )
    with pytest.raises(ValueError, match="scheduled"):
        backend.bus().restore({**snapshot, "scheduled": []})
