"""Evidence windows, items, cascades and bounds (SPEC §6)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringbus import CascadeLimitError, kinds
from ringbus.demo import DemoWorld
from ringbus.sim.evidence import (
    DEFAULT_RULES,
    EVIDENCE_RAISED,
    EvidenceRule,
    EvidenceSubscriber,
)

FAIL = kinds.DELIVERY_FAILED


def make(backend: Any, *rules: EvidenceRule, **options: Any) -> tuple[Any, EvidenceSubscriber]:
    bus = backend.bus(**options)
    evidence = EvidenceSubscriber(rules or None)
    evidence.attach(bus)
    return bus, evidence


def fail(bus: Any, day: int, ward: str = "w1", polity: str = "p1") -> int:
    seq: int = bus.publish(FAIL, day * 10, day, polity_id=polity, ward_id=ward)
    return seq


def test_exactly_at_threshold(backend: Any) -> None:
    rule = EvidenceRule("failures", (FAIL,), "ward", window_days=3, threshold=3)
    bus, evidence = make(backend, rule)
    first = fail(bus, 0)
    fail(bus, 1)
    bus.drain()
    assert evidence.items() == [] and evidence.window_count("failures", "ward", "w1") == 2
    last = fail(bus, 2)  # day 2 is the window's last day: 3 in days 0-2
    bus.drain()
    (item,) = evidence.items()
    assert item == {
        "id": 1,
        "what": "failures",
        "scope": "ward",
        "where": "w1",
        "polity_id": "p1",
        "ward_id": "w1",
        "window_days": 3,
        "from_day": 0,
        "to_day": 2,
        "count": 3,
        "threshold": 3,
        "first_seq": first,
        "last_seq": last,
        "tick": 20,
        "day": 2,
        "event_seq": last + 1,
    }
    # The window starts afresh after an item.
    assert evidence.window_count("failures", "ward", "w1") == 0
    assert evidence.raised == 1


def test_window_sliding_out(backend: Any) -> None:
    rule = EvidenceRule("failures", (FAIL,), "ward", window_days=3, threshold=3)
    bus, evidence = make(backend, rule)
    fail(bus, 0)
    fail(bus, 0)
    second_day = fail(bus, 3)  # day 0 has slid out of days 1-3
    bus.drain()
    assert evidence.items() == []
    assert evidence.window_count("failures", "ward", "w1") == 1
    fail(bus, 4)
    last = fail(bus, 5)  # days 3-5: three events, the day-3 one at the window's first day
    bus.drain()
    (item,) = evidence.items()
    assert (item["first_seq"], item["last_seq"], item["from_day"], item["to_day"]) == (
        second_day,
        last,
        3,
        5,
    )


def test_one_day_window_and_per_polity_scope(backend: Any) -> None:
    ward_rule = EvidenceRule("failures", (FAIL,), "ward", window_days=1, threshold=2)
    polity_rule = EvidenceRule("failures", (FAIL,), "polity", window_days=1, threshold=2)
    bus, evidence = make(backend, ward_rule, polity_rule)
    fail(bus, 0, ward="a")
    fail(bus, 0, ward="b")  # polity p1 reaches 2; no ward does
    fail(bus, 1, ward="a")
    bus.publish(FAIL, 10, 1)  # no ward, no polity: counted by neither rule
    fail(bus, 1, ward="a")  # ward a reaches 2 on day 1 only (day 0 slid out)
    bus.drain()
    items = evidence.items()
    assert [(i["scope"], i["where"], i["day"]) for i in items] == [
        ("polity", "p1", 0),
        ("ward", "a", 1),
        ("polity", "p1", 1),
    ]
    assert items[0]["ward_id"] is None and items[0]["polity_id"] == "p1"
    assert evidence.raised_by_rule() == {"failures/ward": 1, "failures/polity": 2}


def test_items_are_published_for_the_next_drain(backend: Any) -> None:
    rule = EvidenceRule("failures", (FAIL,), "ward", window_days=2, threshold=2)
    bus, _evidence = make(backend, rule)
    seen: list[Any] = []
    bus.subscribe(seen.append, kinds={EVIDENCE_RAISED})
    fail(bus, 0)
    fail(bus, 0)
    assert bus.drain() == 2
    assert seen == [] and bus.pending_count() == 1  # waits for the next drain
    assert bus.drain() == 1
    (event,) = seen
    assert event.kind == EVIDENCE_RAISED and event.seq == 3 and event.ward_id == "w1"
    payload = event.payload_dict()
    assert payload["what"] == "failures" and payload["count"] == 2
    assert (payload["first_seq"], payload["last_seq"]) == (1, 2)
    assert event.subject_id == "evidence-1"
    # With more rounds the same item arrives within the same drain.
    bus2, _ = make(backend, rule)
    seen2: list[Any] = []
    bus2.subscribe(seen2.append, kinds={EVIDENCE_RAISED})
    fail(bus2, 0)
    fail(bus2, 0)
    assert bus2.drain(max_rounds=2) == 3
    assert [e.to_dict() for e in seen2] == [e.to_dict() for e in seen]


def test_runaway_cascade_is_stopped(backend: Any) -> None:
    # A rule that counts evidence itself raises evidence for every evidence item.
    echo = EvidenceRule("echo", (FAIL, EVIDENCE_RAISED), "ward", window_days=1, threshold=1)
    bus, evidence = make(backend, echo, cascade_rounds=5)
    fail(bus, 0)
    with pytest.raises(CascadeLimitError, match="within 5 drain rounds"):
        bus.drain()
    assert evidence.raised == 5
    assert bus.pending_count() == 1  # kept, not lost
    with pytest.raises(CascadeLimitError):
        bus.drain(max_rounds=3)
    assert evidence.raised == 8
    seqs = [e.seq for e in bus.get_since(0)]
    assert seqs == list(range(1, 10))


def test_cascade_is_deterministic(backend: Any) -> None:
    def run() -> list[dict[str, Any]]:
        bus = backend.bus(max_events=100_000, cascade_rounds=3)
        evidence = EvidenceSubscriber(window_days=2)
        evidence.attach(bus)
        echo = EvidenceSubscriber(
            [EvidenceRule("echo", (EVIDENCE_RAISED,), "polity", 2, 3)], publish=True
        )
        echo.attach(bus, snapshot_name="echo")
        DemoWorld(bus, seed=3, events_per_tick=12, ticks_per_day=10).run(6)
        assert evidence.raised > 0 and echo.raised > 0
        return [e.to_dict() for e in bus.get_since(0)]

    assert run() == run()


def test_memory_stays_bounded(backend: Any) -> None:
    rule = EvidenceRule("failures", (FAIL,), "ward", window_days=2, threshold=3)
    bus = backend.bus(max_events=64)
    evidence = EvidenceSubscriber([rule], max_items=5)
    evidence.attach(bus)
    for day in range(200):
        for ward in range(day % 7, day % 7 + 4):  # wards come and go
            for _ in range(2):
                bus.publish(FAIL, day, day, ward_id=f"w{ward + day // 20}", polity_id="p")
        bus.drain()
        assert evidence.open_windows() <= 8
    assert len(evidence.items()) == 5
    assert evidence.items()[-1]["id"] == evidence.raised
    state = evidence.save_state()
    assert len(state["items"]) == 5
    assert all(len(buckets) <= 2 for buckets in state["windows"][0].values())


def test_state_round_trip(backend: Any) -> None:
    bus = backend.bus(max_events=100_000)
    evidence = EvidenceSubscriber(window_days=3)
    evidence.attach(bus)
    DemoWorld(bus, seed=4, events_per_tick=12, ticks_per_day=8).run(5)
    state = json.loads(json.dumps(evidence.save_state()))
    copy = EvidenceSubscriber(window_days=3)
    copy.load_state(state)
    assert copy.save_state() == evidence.save_state()
    assert copy.items() == evidence.items() and copy.raised == evidence.raised
    with pytest.raises(ValueError, match="different rules"):
        EvidenceSubscriber(window_days=4).load_state(state)
    with pytest.raises(ValueError, match="malformed evidence state"):
        EvidenceSubscriber(window_days=3).load_state({**state, "windows": [{"w": [[1]]}]})
    with pytest.raises(ValueError, match="must be a dict"):
        copy.load_state([])


def test_rules_and_arguments() -> None:
    assert len(DEFAULT_RULES) == 6
    assert {(r.what, r.scope) for r in DEFAULT_RULES} == {
        (what, scope)
        for what in ("delivery_failures", "incidents", "protocol_violations")
        for scope in ("ward", "polity")
    }
    assert EvidenceRule("x", FAIL).kinds == (FAIL,)
    assert EvidenceRule("x", [FAIL]).to_dict()["kinds"] == [FAIL]
    with pytest.raises(ValueError, match="scope must be one of ward, polity"):
        EvidenceRule("x", (FAIL,), "region")
    with pytest.raises(ValueError, match="window_days must be an int >= 1"):
        EvidenceRule("x", (FAIL,), window_days=0)
    with pytest.raises(ValueError, match="threshold must be an int >= 1"):
        EvidenceRule("x", (FAIL,), threshold=True)
    with pytest.raises(ValueError, match="kinds must be non-empty"):
        EvidenceRule("x", ())
    with pytest.raises(ValueError, match="what must be"):
        EvidenceRule("", (FAIL,))
    with pytest.raises(ValueError, match="either rules or window_days"):
        EvidenceSubscriber(DEFAULT_RULES, window_days=3)
    with pytest.raises(TypeError, match="EvidenceRule objects"):
        EvidenceSubscriber(["x"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_items"):
        EvidenceSubscriber(max_items=0)
    with pytest.raises(KeyError, match="no rule"):
        EvidenceSubscriber().window_count("nope", "ward", "w")
    assert EvidenceSubscriber(window_days=3).rules[0].window_days == 3


def test_refused_publish_loses_nothing(backend: Any) -> None:
    rule = EvidenceRule("failures", (FAIL,), "ward", window_days=1, threshold=1)
    bus = backend.bus(max_pending=1, error_policy="log")
    filler = bus.subscribe(lambda event: bus.publish("NOISE"), kinds={FAIL})
    evidence = EvidenceSubscriber([rule])
    evidence.attach(bus)
    fail(bus, 0)
    bus.drain()  # the filler takes the only pending slot: the evidence event is refused
    assert evidence.raised == 0 and evidence.items() == []
    assert bus.stats()["handler_errors"] == 1
    assert evidence.window_count("failures", "ward", "w1") == 1  # kept for a retry
    bus.drain()
    bus.unsubscribe(filler)
    fail(bus, 0)
    bus.drain()
    (item,) = evidence.items()
    assert (item["id"], item["count"], item["first_seq"]) == (1, 2, 1)
    assert bus.get_since(0)[-1].kind == EVIDENCE_RAISED
