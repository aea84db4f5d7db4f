"""Bridges: the logging handler (with the real logging module) and the counter adapter."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from ringbus import kinds
from ringbus.sim.bridges import COUNTER_INCREMENTED, LOG_RECORD, CounterAdapter, EventLogHandler
from ringbus.sim.kpi import KpiSubscriber


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("ringbus.test.bridge")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = True
    log.setLevel(logging.NOTSET)


def test_log_records_become_events(backend: Any, logger: logging.Logger) -> None:
    bus = backend.bus()
    handler = EventLogHandler(bus, logging.INFO)
    logger.addHandler(handler)
    bus.set_clock(7, 2)
    logger.debug("below the handler's level")
    logger.info("depot %s is %d%% full", "d-3", 80)
    logger.warning("corridor blocked", extra={"polity_id": "north", "subject_id": "c-9"})
    try:
        raise KeyError("x")
    except KeyError:
        logger.exception("lookup failed")
    events = bus.get_since(0)
    assert [e.kind for e in events] == [LOG_RECORD] * 3
    first, second, third = events
    assert (first.tick, first.day) == (7, 2)
    assert first.payload_dict() == {
        "level": "INFO",
        "levelno": logging.INFO,
        "logger": "ringbus.test.bridge",
        "message": "depot d-3 is 80% full",
    }
    assert (second.polity_id, second.subject_id, second.ward_id) == ("north", "c-9", None)
    assert second.payload_dict()["level"] == "WARNING"
    assert third.payload_dict()["level"] == "ERROR"
    assert third.payload_dict()["exception"] == "KeyError"
    seen: list[Any] = []
    bus.subscribe(seen.append, kinds={"AUDIT_LOG"})
    logger.removeHandler(handler)
    logger.addHandler(EventLogHandler(bus, kind="AUDIT_LOG"))
    logger.error("custom kind")
    bus.drain()
    assert [e.payload_dict()["message"] for e in seen] == ["custom kind"]


def test_logging_from_a_handler_does_not_recurse(backend: Any, logger: logging.Logger) -> None:
    bus = backend.bus()
    handler = EventLogHandler(bus)
    logger.addHandler(handler)

    class Chatty:
        def publish(self, *args: Any, **fields: Any) -> int:
            logger.info("logged while publishing")  # would loop without the guard
            result: int = bus.publish(*args, **fields)
            return result

    handler.bus = Chatty()
    logger.info("outer")
    assert [e.payload_dict()["message"] for e in bus.get_since(0)] == ["outer"]


def test_publish_errors_go_to_handle_error(
    backend: Any, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = backend.bus(max_pending=1)
    logger.addHandler(EventLogHandler(bus))
    logger.info("one")
    logger.info("two")  # the pending queue is full: reported, not silently dropped
    assert "PendingOverflowError" in capsys.readouterr().err
    assert bus.latest_seq() == 1
    with pytest.raises(ValueError, match="kind must be"):
        EventLogHandler(bus, kind="")


def test_counter_adapter_feeds_the_kpis(backend: Any) -> None:
    bus = backend.bus()
    kpi = KpiSubscriber()
    kpi.attach(bus)
    stats = CounterAdapter(
        bus,
        kinds={"deliveries_ok": kinds.DELIVERY_COMPLETED, "deliveries_bad": kinds.DELIVERY_FAILED},
        polity_id="north",
    )
    assert stats.increment("deliveries_ok") == 1
    assert stats.increment("deliveries_ok", 2) == 3
    assert stats.inc("deliveries_bad", polity_id="south", ward_id="w") == 1
    assert stats.increment("retries", 5) == 5
    bus.drain()
    events = bus.get_since(0)
    assert [e.kind for e in events] == [
        kinds.DELIVERY_COMPLETED,
        kinds.DELIVERY_COMPLETED,
        kinds.DELIVERY_FAILED,
        COUNTER_INCREMENTED,
    ]
    assert events[1].payload_dict() == {"counter": "deliveries_ok", "amount": 2}
    assert (events[2].polity_id, events[2].ward_id) == ("south", "w")
    assert events[3].polity_id == "north"
    assert stats.value("deliveries_ok") == stats["deliveries_ok"] == 3
    assert stats["never"] == 0
    assert stats.values() == {"deliveries_bad": 1, "deliveries_ok": 3, "retries": 5}
    # one event per call, counting its amount: 1 + 2
    assert kpi.polity("north")["deliveries_completed"] == stats["deliveries_ok"] == 3
    assert kpi.totals()["deliveries_completed"] == 3
    assert kpi.polity("south")["deliveries_failed"] == 1
    stats.increment("deliveries_ok", 5)
    bus.drain()
    assert kpi.totals()["deliveries_completed"] == stats["deliveries_ok"] == 8
    # a world event whose payload merely has an "amount" still counts once
    bus.publish(kinds.DELIVERY_COMPLETED, polity_id="north", payload={"amount": 40})
    bus.drain()
    assert kpi.totals()["deliveries_completed"] == 9


def test_counter_adapter_errors(backend: Any) -> None:
    bus = backend.bus()
    stats = CounterAdapter(bus)
    with pytest.raises(TypeError, match="counter name"):
        stats.increment("")
    with pytest.raises(TypeError, match="amount must be an int"):
        stats.increment("x", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="kinds must map"):
        CounterAdapter(bus, kinds={"x": ""})
    with pytest.raises(ValueError, match="default_kind"):
        CounterAdapter(bus, default_kind="")
    assert bus.latest_seq() == 0 and stats.values() == {}
