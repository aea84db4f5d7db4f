"""Bus health published as BUS_HEALTH events."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from ringbus import kinds
from ringbus.sim.health import BUS_HEALTH, HealthReporter
from ringbus.transports import StdoutTransport


class StepTimer:
    """A deterministic timer: each call is 2.5 ms after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.0025
        return self.now


def test_health_events_at_the_cadence(backend: Any) -> None:
    bus = backend.bus()
    reporter = HealthReporter(every_ticks=5, timer=StepTimer()).attach(bus)
    seen: list[Any] = []
    bus.subscribe(seen.append, kinds={BUS_HEALTH})
    for tick in range(12):
        bus.set_clock(tick)
        bus.publish(kinds.TICK)
        bus.drain()
    # reports at the drain ends of ticks 0, 5 and 10; each is delivered by the next drain
    assert [event.tick for event in seen] == [0, 5, 10]
    assert reporter.reports == 3
    payload = seen[1].payload_dict()
    assert payload["drains"] == 5
    assert payload["drain_ms_last"] == 2.5
    assert payload["drain_ms_max"] == 2.5
    assert payload["handler_errors"] == 0
    assert payload["pending"] == 0
    assert seen[1].tags == ("health",)


def test_health_reports_overwrites_errors_and_transports(backend: Any) -> None:
    bus = backend.bus(max_events=4, error_policy="log")
    stream = io.StringIO()
    stream.close()
    transport = StdoutTransport(stream, max_buffer=2, name="console").attach(bus)
    reporter = HealthReporter(every_ticks=1, transports=[transport], timer=None).attach(bus)

    def broken(event: Any) -> None:
        if event.kind == kinds.DEPOT_BUILT:
            raise ValueError("bad depot")

    bus.subscribe(broken)
    for _ in range(6):
        bus.publish(kinds.DEPOT_BUILT)
    bus.drain()
    payload = reporter.payload()
    assert payload["overwritten"] == 3  # 6 depots + the first health event in 4 slots
    assert payload["handler_errors"] == 6
    assert payload["drain_ms_last"] is None
    assert payload["transport:console"] == ["ok", 0, 1, 4, 2]
    assert len(payload) <= bus.max_payload_items


def test_health_events_travel_through_transports(backend: Any) -> None:
    bus = backend.bus()
    stream = io.StringIO()
    transport = StdoutTransport(stream, name="console").attach(bus)
    HealthReporter(every_ticks=1, transports=[transport], timer=None).attach(bus)
    bus.publish(kinds.TICK)
    bus.drain()
    bus.set_clock(1)
    bus.drain()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [record["kind"] for record in records] == ["TICK", "BUS_HEALTH"]
    assert records[1]["payload"]["transport:console"] == ["ok", 1, 0, 0, 0]


def test_health_event_stream_is_deterministic_without_timer(both_backends: Any) -> None:
    runs = []
    for backend in both_backends:
        for _ in range(2):
            bus = backend.bus()
            HealthReporter(every_ticks=3, timer=None).attach(bus)
            for tick in range(10):
                bus.set_clock(tick, tick // 4)
                bus.publish(kinds.TICK)
                bus.drain()
            runs.append(json.dumps([event.to_dict() for event in bus.get_since(0)]))
    assert len(set(runs)) == 1


def test_health_payload_must_fit(backend: Any) -> None:
    bus = backend.bus(max_payload_items=8)
    first = StdoutTransport(io.StringIO(), name="a")
    second = StdoutTransport(io.StringIO(), name="b")
    reporter = HealthReporter(transports=[first]).attach(bus)
    with pytest.raises(ValueError, match="needs 9 payload items"):
        reporter.add_transport(second)
    with pytest.raises(ValueError, match="every_ticks"):
        HealthReporter(every_ticks=0)
    with pytest.raises(TypeError, match="status"):
        HealthReporter(transports=[object()])  # type: ignore[list-item]
    reporter.detach()
    with pytest.raises(RuntimeError, match="attach"):
        reporter.publish()
