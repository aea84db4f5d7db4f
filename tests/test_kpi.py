"""The KPI subscriber, checked against counts recomputed from the stream (SPEC §6)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest

from ringbus import kinds
from ringbus.demo import DemoWorld
from ringbus.sim.kpi import COUNTED_KINDS, KPI_NAMES, KpiSubscriber


def run_world(backend: Any, days: int = 4, seed: int = 5, **kpi_options: Any) -> tuple[Any, Any]:
    bus = backend.bus(max_events=200_000)
    kpi = KpiSubscriber(**kpi_options)
    kpi.attach(bus)
    DemoWorld(bus, seed=seed, events_per_tick=10, ticks_per_day=12).run(days)
    bus.drain()
    return bus, kpi


def recount(events: list[Any]) -> dict[str, Any]:
    """Count KPIs from the published stream, independently of the subscriber."""
    totals: Counter[str] = Counter()
    per_polity: dict[str, Counter[str]] = {}
    by_kind: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    for event in events:
        name = COUNTED_KINDS.get(event.kind)
        if name is None:
            continue
        totals[name] += 1
        if event.polity_id is not None:
            per_polity.setdefault(event.polity_id, Counter())[name] += 1
        if event.kind == kinds.INCIDENT_RECORDED:
            payload = event.payload_dict()
            by_kind[payload["incident_kind"]] += 1
            by_severity[payload["severity"]] += 1
    return {
        "totals": totals,
        "polities": per_polity,
        "by_kind": by_kind,
        "by_severity": by_severity,
    }


def test_counts_match_the_published_stream(backend: Any) -> None:
    bus, kpi = run_world(backend)
    events = bus.get_since(0)
    assert events[0].seq == 1 and len(events) == bus.latest_seq()
    expected = recount(events)
    totals = kpi.totals()
    for name in KPI_NAMES:
        assert totals[name] == expected["totals"][name], name
    assert totals["deliveries_completed"] > 0 and totals["deliveries_failed"] > 0
    assert totals["incidents_by_kind"] == dict(sorted(expected["by_kind"].items()))
    assert totals["incidents_by_severity"] == dict(sorted(expected["by_severity"].items()))
    assert kpi.polities() == sorted(expected["polities"])
    for polity, counter in expected["polities"].items():
        tally = kpi.polity(polity)
        for name in KPI_NAMES:
            assert tally[name] == counter[name], (polity, name)
    attempted = expected["totals"]["deliveries_completed"] + expected["totals"]["deliveries_failed"]
    assert totals["delivery_success_rate"] == round(
        expected["totals"]["deliveries_completed"] / attempted, 6
    )


def test_daily_aggregates_match_the_stream(backend: Any) -> None:
    bus, kpi = run_world(backend, days=3)
    events = bus.get_since(0)
    days = kpi.days()
    assert [day["day"] for day in days] == [0, 1, 2]
    for record in days:
        expected = recount([e for e in events if e.day == record["day"]])
        for name in KPI_NAMES:
            assert record[name] == expected["totals"][name]
        for polity, tally in record["polities"].items():
            assert tally["deliveries_failed"] == expected["polities"][polity]["deliveries_failed"]
    rollovers = [e for e in events if e.kind == kinds.DAY_ROLLOVER]
    assert [d["seq"] for d in days] == [e.seq for e in rollovers]
    assert kpi.current_day()["deliveries_completed"] == 0  # closed by the last rollover


def test_history_is_bounded(backend: Any) -> None:
    _bus, kpi = run_world(backend, days=5, history_days=2)
    assert [day["day"] for day in kpi.days()] == [3, 4]
    assert kpi.days(last=1)[0]["day"] == 4
    assert kpi.days(last=0) == []


def test_day_rollover_closes_the_day(backend: Any) -> None:
    bus = backend.bus()
    kpi = KpiSubscriber()
    kpi.attach(bus)
    bus.set_clock(1, 0)
    bus.publish(kinds.DELIVERY_COMPLETED, polity_id="p")
    bus.publish(kinds.DELIVERY_FAILED)  # no polity: totals only
    bus.publish(
        kinds.INCIDENT_RECORDED, polity_id="p", payload={"incident_kind": "fire", "severity": 3}
    )
    bus.publish(kinds.INCIDENT_RECORDED, polity_id="q")  # no payload: "unknown"
    bus.publish(kinds.DAY_ROLLOVER)
    bus.set_clock(2, 1)
    bus.publish(kinds.DAY_ROLLOVER, payload={"closed_day": 7})
    bus.drain()
    first, second = kpi.days()
    assert first["day"] == 0 and second["day"] == 7
    assert first["deliveries_attempted"] == 2 and first["delivery_success_rate"] == 0.5
    assert first["incidents_by_kind"] == {"fire": 1, "unknown": 1}
    assert first["incidents_by_severity"] == {"3": 1, "unknown": 1}
    assert first["polities"]["p"]["deliveries_completed"] == 1
    assert first["polities"]["p"]["deliveries_failed"] == 0
    assert second["delivery_success_rate"] is None and second["polities"] == {}
    assert kpi.totals()["deliveries_failed"] == 1
    assert kpi.polity("nowhere")["deliveries_completed"] == 0
    assert kpi.polities() == ["p", "q"]


def test_ignores_other_kinds(backend: Any) -> None:
    bus = backend.bus()
    kpi = KpiSubscriber()
    kpi.attach(bus)
    bus.publish("SOMETHING_ELSE", polity_id="p")
    bus.drain()
    assert kpi.summary()["events"] == 0
    assert kpi.polities() == []


def test_summary_is_json_ready_and_thread_safe(backend: Any) -> None:
    bus = backend.bus(max_events=5_000)
    kpi = KpiSubscriber()
    kpi.attach(bus)
    world = DemoWorld(bus, seed=2, events_per_tick=8, ticks_per_day=8)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                json.dumps(kpi.summary(last_days=3))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        world.run(6)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    summary = kpi.summary(last_days=3)
    assert [day["day"] for day in summary["days"]] == [3, 4, 5]
    assert set(summary) == {"events", "last_seq", "totals", "polities", "current_day", "days"}
    assert summary == json.loads(json.dumps(summary))
    assert kpi.summary(last_days=0)["days"] == []


def test_state_round_trip_and_replay(backend: Any) -> None:
    bus, kpi = run_world(backend, days=3)
    # KPIs come from events alone: replaying the stream into a fresh bus rebuilds them.
    replay_bus = backend.bus(max_events=200_000)
    replayed = KpiSubscriber()
    replayed.attach(replay_bus)
    for event in bus.get_since(0):
        replay_bus.ingest(replay_bus.event_from_dict(event.to_dict()))
    replay_bus.drain()
    assert replayed.summary() == kpi.summary()

    copy = KpiSubscriber()
    copy.load_state(json.loads(json.dumps(kpi.save_state())))
    assert copy.summary(last_days=10) == kpi.summary(last_days=10)
    assert copy.save_state() == kpi.save_state()


def test_snapshot_hook_is_registered(backend: Any) -> None:
    bus = backend.bus()
    kpi = KpiSubscriber()
    kpi.attach(bus)
    bus.publish(kinds.DEPOT_BUILT, polity_id="p")
    bus.drain()
    snapshot = json.loads(json.dumps(bus.snapshot()))
    assert snapshot["hooks"]["kpi"]["total"]["depots_built"] == 1
    fresh_bus = backend.bus()
    fresh = KpiSubscriber()
    fresh.attach(fresh_bus)
    fresh_bus.restore(snapshot)
    assert fresh.totals()["depots_built"] == 1
    with pytest.raises(ValueError, match="already registered"):
        KpiSubscriber().attach(bus)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="history_days must be >= 1"):
        KpiSubscriber(history_days=0)
    with pytest.raises(TypeError, match="history_days must be an int"):
        KpiSubscriber(history_days=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="malformed KPI state"):
        KpiSubscriber().load_state({"total": {}})
    with pytest.raises(ValueError, match="must be a dict"):
        KpiSubscriber().load_state([])
