"""The incident log materialised from INCIDENT_RECORDED events (SPEC §6)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringbus import kinds
from ringbus.demo import DemoWorld
from ringbus.sim.incidents import Incident, IncidentLog


def publish_incident(bus: Any, day: int, incident_kind: str, severity: Any, **fields: Any) -> int:
    seq: int = bus.publish(
        kinds.INCIDENT_RECORDED,
        day,
        day,
        payload={"incident_kind": incident_kind, "severity": severity, "note": "x"},
        **fields,
    )
    return seq


def test_log_is_materialised_and_queryable(backend: Any) -> None:
    bus = backend.bus()
    log = IncidentLog()
    log.attach(bus)
    a = publish_incident(bus, 0, "fire", "high", polity_id="p", ward_id="w1", subject_id="d1")
    b = publish_incident(bus, 1, "theft", "low", polity_id="p", ward_id="w2")
    c = publish_incident(bus, 2, "fire", 2, polity_id="q")
    bus.publish(kinds.DELIVERY_FAILED, polity_id="p")  # not an incident
    bus.drain()
    assert len(log) == 3 and log.recorded == 3
    first = log.all()[0]
    assert first == Incident(a, 0, 0, "fire", "high", "p", "w1", None, "d1", {"note": "x"})
    assert [i.seq for i in log.query(incident_kind="fire")] == [a, c]
    assert [i.seq for i in log.query(severity="2")] == [c]
    assert [i.seq for i in log.query(polity_id="p", since_day=1)] == [b]
    assert [i.seq for i in log.query(until_day=1, newest_first=True)] == [b, a]
    assert [i.seq for i in log.query(ward_id="w1", subject_id="d1")] == [a]
    assert [i.seq for i in log.query(since_seq=a, limit=1)] == [b]
    assert log.query(incident_kind="flood") == []
    assert log.counts() == {"fire": 2, "theft": 1}
    assert log.counts("severity") == {"2": 1, "high": 1, "low": 1}
    assert log.counts("ward_id") == {"-": 1, "w1": 1, "w2": 1}
    assert json.loads(json.dumps(first.to_dict()))["details"] == {"note": "x"}


def test_missing_payload_fields_and_direct_handle(backend: Any) -> None:
    bus = backend.bus()
    log = IncidentLog()
    log.attach(bus)
    bus.publish(kinds.INCIDENT_RECORDED)
    bus.drain()
    (incident,) = log.all()
    assert (incident.incident_kind, incident.severity, incident.details) == (
        "unknown",
        "unknown",
        {},
    )
    log.handle(bus.event_from_dict({**incident_event(bus).to_dict(), "kind": "OTHER"}))
    assert len(log) == 1


def incident_event(bus: Any) -> Any:
    return bus.get_since(0)[0]


def test_log_is_bounded_and_counts_from_the_stream(backend: Any) -> None:
    bus = backend.bus(max_events=100_000)
    log = IncidentLog(max_incidents=25)
    log.attach(bus)
    DemoWorld(bus, seed=9, events_per_tick=10, ticks_per_day=10).run(4)
    stream = bus.get_since(0, kinds={kinds.INCIDENT_RECORDED})
    assert log.recorded == len(stream) > 25
    assert len(log) == 25
    assert [i.seq for i in log.all()] == [e.seq for e in stream[-25:]]


def test_snapshot_round_trip(backend: Any) -> None:
    bus = backend.bus()
    log = IncidentLog()
    log.attach(bus)
    publish_incident(bus, 0, "flood", "critical", ward_id="w")
    bus.drain()
    snapshot = json.loads(json.dumps(bus.snapshot()))
    fresh_bus = backend.bus()
    fresh = IncidentLog()
    fresh.attach(fresh_bus)
    fresh_bus.restore(snapshot)
    assert fresh.all() == log.all() and fresh.recorded == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_incidents must be >= 1"):
        IncidentLog(max_incidents=0)
    with pytest.raises(TypeError, match="max_incidents must be an int"):
        IncidentLog(max_incidents="9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counts\\(by=\\)"):
        IncidentLog().counts("day")
    with pytest.raises(TypeError, match="limit"):
        IncidentLog().query(limit="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="malformed incident log state"):
        IncidentLog().load_state({"records": [{"seq": 1}], "recorded": 1})
