"""Subscriber classes share one protocol: ``attach(bus)`` returns it, ``detach()`` undoes it."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from ringbus import Subscriber
from ringbus.sim.evidence import EvidenceSubscriber
from ringbus.sim.health import HealthReporter
from ringbus.sim.incidents import IncidentLog
from ringbus.sim.kpi import KpiSubscriber
from ringbus.transports import StdoutTransport, Transport

MAKERS: dict[str, Callable[[], Any]] = {
    "kpi": KpiSubscriber,
    "evidence": EvidenceSubscriber,
    "incidents": IncidentLog,
    "health": lambda: HealthReporter(every_ticks=1),
    "stdout": lambda: StdoutTransport(io.StringIO()),
}


@pytest.mark.parametrize("name", MAKERS)
def test_attach_returns_the_subscriber_and_detach_undoes_it(backend: Any, name: str) -> None:
    bus = backend.bus()
    subscriber = MAKERS[name]()
    assert isinstance(subscriber, Subscriber)
    before = (len(bus.subscriptions()), bus.snapshot()["hooks"])
    assert subscriber.attach(bus) is subscriber
    with pytest.raises(RuntimeError, match="already attached"):
        subscriber.attach(bus)
    subscriber.detach()
    subscriber.detach()  # detaching twice is fine
    assert (len(bus.subscriptions()), bus.snapshot()["hooks"]) == before
    assert subscriber.attach(bus) is subscriber  # and it can attach again
    bus.publish("DELIVERY_COMPLETED", polity_id="p1")
    bus.drain()
    subscriber.detach()


def test_snapshot_subscribers_take_another_hook_name(backend: Any) -> None:
    bus = backend.bus()
    first = KpiSubscriber().attach(bus)
    with pytest.raises(ValueError, match="already registered"):
        KpiSubscriber().attach(bus)
    assert len(bus.subscriptions()) == 1  # the refused attach left nothing behind
    second = KpiSubscriber().attach(bus, snapshot_name="kpi-2")
    assert set(bus.snapshot()["hooks"]) == {"kpi", "kpi-2"}
    assert first.bus is bus and second.bus is bus


def test_transport_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Transport()  # type: ignore[abstract]
