"""The bus's own health, published as events.

:class:`HealthReporter` watches a bus's drains and, every ``every_ticks``
ticks, publishes a ``BUS_HEALTH`` event whose payload holds the pending
depth, drain durations, overwritten events, handler errors and the state of
each transport — so the same subscribers and transports that carry the
world's events carry the bus's health too.

:func:`publish_loss` publishes a ``DATA_LOSS`` event: what a transport
dropped, or what a Redis consumer found missing, with the seq ranges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, Self

from .._normalise import check_option_count

__all__ = ["BUS_HEALTH", "DATA_LOSS", "HealthReporter", "loss_payload", "publish_loss"]

#: Kind of the events a :class:`HealthReporter` publishes.
BUS_HEALTH = "BUS_HEALTH"

#: Kind of the events that report lost events (:func:`publish_loss`).
DATA_LOSS = "DATA_LOSS"

#: Most ``[first, last]`` seq ranges a ``DATA_LOSS`` event names (the count covers all).
MAX_LOSS_RANGES = 32

#: Payload items every health event holds, before the transports.
BASE_ITEMS = (
    "pending",
    "published",
    "overwritten",
    "handler_errors",
    "drains",
    "drain_ms_last",
    "drain_ms_max",
)


class _Reporting(Protocol):
    name: str

    def status(self) -> dict[str, Any]: ...


class HealthReporter:
    """Publish the bus's state as a ``BUS_HEALTH`` event at a set cadence in ticks.

    The payload (JSON-ready, within the bus's ``max_payload_items``):

    - ``pending``, ``published``, ``overwritten``, ``handler_errors``: the
      bus's counters (:meth:`~ringbus.EventBus.stats`);
    - ``drains``: drains since the last report;
    - ``drain_ms_last``, ``drain_ms_max``: duration of the last drain and the
      longest since the last report, in milliseconds (``None`` without a
      ``timer``);
    - one item per watched transport, ``transport:<name>`` ->
      ``[state, sent, failed, dropped, buffered]``.

    Parameters
    ----------
    every_ticks
        Cadence: a report at the first drain end at least this many ticks
        after the previous one (the first at the first drain end).
    transports
        Transports (anything with ``name`` and ``status()``) to report on.
    timer
        ``timer() -> seconds`` measuring drains (default
        :func:`time.perf_counter`). Durations differ between runs; pass
        ``None`` to leave them out for byte-identical event streams.

    Examples
    --------
    >>> from ringbus import EventBus
    >>> from ringbus.sim.health import HealthReporter
    >>> bus = EventBus()
    >>> reporter = HealthReporter(every_ticks=10, timer=None).attach(bus)
    >>> bus.drain()
    0
    >>> [event.kind for event in bus.pending_events()]
    ['BUS_HEALTH']
    """

    def __init__(
        self,
        *,
        every_ticks: int = 10,
        transports: tuple[_Reporting, ...] | list[_Reporting] = (),
        timer: Callable[[], float] | None = time.perf_counter,
    ) -> None:
        check_option_count("every_ticks", every_ticks)
        self.every_ticks = every_ticks
        self.timer = timer
        self._transports: list[_Reporting] = []
        self._bus: Any = None
        self._started = 0.0
        self._next_tick = 0
        self._drains = 0
        self._last_ms: float | None = None
        self._max_ms: float | None = None
        self.reports = 0
        for transport in transports:
            self.add_transport(transport)

    def add_transport(self, transport: _Reporting) -> None:
        """Report on ``transport`` too (it needs ``name`` and ``status()``)."""
        if not callable(getattr(transport, "status", None)) or not hasattr(transport, "name"):
            raise TypeError("a reported transport needs a name and a status() method")
        self._check_room(len(self._transports) + 1)
        self._transports.append(transport)

    def _check_room(self, transports: int) -> None:
        if self._bus is None:
            return
        room = int(self._bus.max_payload_items)
        needed = len(BASE_ITEMS) + transports
        if needed > room:
            raise ValueError(
                f"a health event for {transports} transports needs {needed} payload "
                f"items but the bus keeps max_payload_items={room}: raise max_payload_items "
                "or report on fewer transports"
            )

    def attach(self, bus: Any) -> Self:
        """Watch ``bus``'s drains and publish on it; return self."""
        if self._bus is not None:
            raise RuntimeError("this HealthReporter is already attached; detach() it first")
        self._bus = bus
        try:
            self._check_room(len(self._transports))
        except ValueError:
            self._bus = None
            raise
        self._next_tick = int(bus.tick)
        bus.add_drain_listener(self._drain_ended, on_start=self._drain_started)
        return self

    def detach(self) -> None:
        """Stop watching the bus."""
        if self._bus is not None:
            self._bus.remove_drain_listener(self._drain_ended, on_start=self._drain_started)
            self._bus = None

    def _drain_started(self) -> None:
        if self.timer is not None:
            self._started = self.timer()

    def _drain_ended(self) -> None:
        self._drains += 1
        if self.timer is not None:
            elapsed = round((self.timer() - self._started) * 1000.0, 3)
            self._last_ms = elapsed
            self._max_ms = elapsed if self._max_ms is None else max(self._max_ms, elapsed)
        if self._bus.tick >= self._next_tick:
            self.publish()

    def payload(self) -> dict[str, Any]:
        """The health payload as of now (what :meth:`publish` sends)."""
        stats = self._bus.stats()
        payload: dict[str, Any] = {
            "pending": stats["pending"],
            "published": stats["published"],
            "overwritten": stats["overwritten"],
            "handler_errors": stats["handler_errors"],
            "drains": self._drains,
            "drain_ms_last": self._last_ms,
            "drain_ms_max": self._max_ms,
        }
        for transport in self._transports:
            status = transport.status()
            payload[f"transport:{transport.name}"] = [
                str(status.get("state", "ok")),
                int(status.get("sent", status.get("published", 0))),
                int(status.get("failed", 0)),
                int(status.get("dropped", 0)),
                int(status.get("buffered", status.get("uncommitted", 0))),
            ]
        return payload

    def publish(self) -> int:
        """Publish a ``BUS_HEALTH`` event now and start a new reporting period; return its seq."""
        if self._bus is None:
            raise RuntimeError("attach() the HealthReporter to a bus first")
        seq = int(self._bus.publish(BUS_HEALTH, payload=self.payload(), tags=("health",)))
        self.reports += 1
        self._drains = 0
        self._max_ms = None
        self._next_tick = int(self._bus.tick) + self.every_ticks
        return seq


def loss_payload(
    *,
    reporter: str,
    producer: str,
    reason: str,
    events: int,
    ranges: list[list[int]],
    total: int,
) -> dict[str, Any]:
    """The payload of a ``DATA_LOSS`` event (JSON-ready, 9 items).

    Parameters
    ----------
    reporter
        Who noticed: a transport's or a source's name.
    producer
        The bus whose events were lost (its config name).
    reason
        Why, in words.
    events
        How many events this report covers (``-1``: unknown, e.g. a
        stream that Redis lost).
    ranges
        ``[first_seq, last_seq]`` runs of the lost seqs, oldest first; at
        most :data:`MAX_LOSS_RANGES` are kept (``more_ranges`` counts the rest).
    total
        The reporter's running count of lost events.
    """
    kept = [[int(first), int(last)] for first, last in ranges[:MAX_LOSS_RANGES]]
    return {
        "reporter": reporter,
        "producer": producer,
        "reason": reason,
        "events": int(events),
        "first_seq": kept[0][0] if kept else None,
        "last_seq": int(ranges[-1][1]) if ranges else None,
        "ranges": kept,
        "more_ranges": max(0, len(ranges) - MAX_LOSS_RANGES),
        "total": int(total),
    }


def publish_loss(bus: Any, **report: Any) -> int:
    """Publish a ``DATA_LOSS`` event on ``bus`` (see :func:`loss_payload`); return its seq."""
    return int(bus.publish(DATA_LOSS, payload=loss_payload(**report), tags=("health", "loss")))
