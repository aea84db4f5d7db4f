"""Key performance indicators, counted from events alone.

:class:`KpiSubscriber` counts what the world reports — deliveries completed
and failed, depots built, corridors established, construction completed,
incidents by kind and severity — in total and per polity. Every
``DAY_ROLLOVER`` event closes the day into a daily aggregate kept in a
bounded history. It never polls and never looks at the world: it reads
events, so a replayed stream rebuilds the same numbers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from .. import kinds as k
from .._subscriber import SnapshotSubscriber

__all__ = ["COUNTED_KINDS", "KPI_NAMES", "KpiSubscriber"]

#: event kind -> the KPI it increments.
COUNTED_KINDS: dict[str, str] = {
    k.DELIVERY_COMPLETED: "deliveries_completed",
    k.DELIVERY_FAILED: "deliveries_failed",
    k.DEPOT_BUILT: "depots_built",
    k.CORRIDOR_ESTABLISHED: "corridors_established",
    k.CONSTRUCTION_PROJECT_STARTED: "construction_started",
    k.CONSTRUCTION_PROJECT_COMPLETED: "construction_completed",
    k.INCIDENT_RECORDED: "incidents",
    k.PROTOCOL_AUTHORED: "protocols_authored",
    k.PROTOCOL_VIOLATION: "protocol_violations",
    k.ENFORCEMENT_ACTION: "enforcement_actions",
    k.SCOUT_MISSION_COMPLETED: "scout_missions_completed",
}

#: The counters every tally holds, in display order.
KPI_NAMES: tuple[str, ...] = tuple(COUNTED_KINDS.values())

_UNKNOWN = "unknown"


class _Tally:
    """Counters of one scope (everything, one polity, or one day)."""

    __slots__ = ("by_kind", "by_severity", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(KPI_NAMES, 0)
        self.by_kind: dict[str, int] = {}
        self.by_severity: dict[str, int] = {}

    def to_dict(self) -> dict[str, Any]:
        completed = self.counts["deliveries_completed"]
        attempted = completed + self.counts["deliveries_failed"]
        return {
            **self.counts,
            "deliveries_attempted": attempted,
            "delivery_success_rate": round(completed / attempted, 6) if attempted else None,
            "incidents_by_kind": dict(sorted(self.by_kind.items())),
            "incidents_by_severity": dict(sorted(self.by_severity.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Tally:
        tally = cls()
        for name in KPI_NAMES:
            tally.counts[name] = int(data.get(name, 0))
        tally.by_kind = {str(key): int(n) for key, n in data.get("incidents_by_kind", {}).items()}
        tally.by_severity = {
            str(key): int(n) for key, n in data.get("incidents_by_severity", {}).items()
        }
        return tally


def _amount_of(payload: tuple[tuple[str, Any], ...]) -> int:
    """How many occurrences one event stands for: 1, or a counter's ``amount``.

    An event published by :class:`~ringbus.sim.bridges.CounterAdapter` carries
    ``counter`` and ``amount`` in its payload; ``increment(name, 5)`` counts 5.
    """
    fields = dict(payload)
    amount = fields.get("amount")
    if "counter" in fields and isinstance(amount, int) and not isinstance(amount, bool):
        return amount
    return 1


class KpiSubscriber(SnapshotSubscriber):
    """Count KPIs from events, in total, per polity and per day.

    Parameters
    ----------
    history_days
        How many closed days to keep (the oldest is dropped first).

    Notes
    -----
    An event without a ``polity_id`` counts in the totals only. An event from
    a :class:`~ringbus.sim.bridges.CounterAdapter` counts its ``amount``. The day a
    ``DAY_ROLLOVER`` closes is its payload's ``closed_day`` if present,
    otherwise the event's ``day``. :meth:`summary` may be called from another
    thread while the bus runs.

    Examples
    --------
    >>> from ringbus import EventBus, kinds
    >>> from ringbus.sim.kpi import KpiSubscriber
    >>> bus = EventBus()
    >>> kpi = KpiSubscriber()
    >>> _ = kpi.attach(bus)
    >>> _ = bus.publish(kinds.DELIVERY_COMPLETED, polity_id="north")
    >>> _ = bus.publish(kinds.DELIVERY_FAILED, polity_id="north")
    >>> _ = bus.drain()
    >>> kpi.totals()["delivery_success_rate"]
    0.5
    """

    snapshot_name = "kpi"

    #: The kinds this subscriber listens to.
    KINDS: tuple[str, ...] = (*COUNTED_KINDS, k.DAY_ROLLOVER)

    def __init__(self, *, history_days: int = 365) -> None:
        if isinstance(history_days, bool) or not isinstance(history_days, int):
            raise TypeError(f"history_days must be an int, got {type(history_days).__name__}")
        if history_days < 1:
            raise ValueError(f"history_days must be >= 1, got {history_days}")
        self._history_days = history_days
        self._lock = threading.Lock()
        self._total = _Tally()
        self._polities: dict[str, _Tally] = {}
        self._day = _Tally()
        self._day_polities: dict[str, _Tally] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=history_days)
        self._events = 0
        self._last_seq = 0

    @property
    def history_days(self) -> int:
        """How many closed days are kept."""
        return self._history_days

    def subscribed_kinds(self) -> tuple[str, ...]:
        """The kinds the KPIs count, and ``DAY_ROLLOVER``."""
        return tuple(self.KINDS)

    # -- events --------------------------------------------------------
    def handle(self, event: Any) -> None:
        """Count one event (the bus calls this)."""
        kind = event.kind
        with self._lock:
            self._events += 1
            self._last_seq = event.seq
            if kind == k.DAY_ROLLOVER:
                self._close_day(event)
                return
            name = COUNTED_KINDS.get(kind)
            if name is None:
                return
            polity = event.polity_id
            scopes = [self._total, self._day]
            if polity is not None:
                tally = self._polities.get(polity)
                if tally is None:
                    tally = self._polities[polity] = _Tally()
                day_tally = self._day_polities.get(polity)
                if day_tally is None:
                    day_tally = self._day_polities[polity] = _Tally()
                scopes += (tally, day_tally)
            if name == "incidents":
                payload = event.payload_dict()
                incident_kind = str(payload.get("incident_kind", _UNKNOWN))
                severity = str(payload.get("severity", _UNKNOWN))
                for tally in scopes:
                    tally.counts[name] += 1
                    tally.by_kind[incident_kind] = tally.by_kind.get(incident_kind, 0) + 1
                    tally.by_severity[severity] = tally.by_severity.get(severity, 0) + 1
            else:
                amount = _amount_of(event.payload) if event.payload else 1
                for tally in scopes:
                    tally.counts[name] += amount

    def _close_day(self, event: Any) -> None:
        closed = dict(event.payload).get("closed_day", event.day)
        record = {
            "day": closed if isinstance(closed, int) else event.day,
            "seq": event.seq,
            "tick": event.tick,
            **self._day.to_dict(),
            "polities": {
                polity: tally.to_dict() for polity, tally in sorted(self._day_polities.items())
            },
        }
        self._history.append(record)
        self._day = _Tally()
        self._day_polities = {}

    # -- reading -------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """Counters over the whole run (a new dict)."""
        with self._lock:
            return self._total.to_dict()

    def polity(self, polity_id: str) -> dict[str, Any]:
        """Counters of one polity (zeros if it never appeared)."""
        with self._lock:
            return self._polities.get(polity_id, _Tally()).to_dict()

    def polities(self) -> list[str]:
        """The polities seen, sorted."""
        with self._lock:
            return sorted(self._polities)

    def days(self, last: int | None = None) -> list[dict[str, Any]]:
        """The closed days, oldest first (only the ``last`` N if given)."""
        with self._lock:
            history = list(self._history)
        return history if last is None else history[-last:] if last > 0 else []

    def current_day(self) -> dict[str, Any]:
        """Counters of the day not yet closed."""
        with self._lock:
            return self._day.to_dict()

    def summary(self, *, last_days: int = 7) -> dict[str, Any]:
        """Everything as one JSON-ready dict; safe to call from another thread.

        Keys: ``events`` (events counted), ``last_seq``, ``totals``,
        ``polities`` (polity -> counters), ``current_day`` and ``days`` (the
        last ``last_days`` closed days).
        """
        with self._lock:
            history = list(self._history)
            return {
                "events": self._events,
                "last_seq": self._last_seq,
                "totals": self._total.to_dict(),
                "polities": {
                    polity: tally.to_dict() for polity, tally in sorted(self._polities.items())
                },
                "current_day": self._day.to_dict(),
                "days": history[-last_days:] if last_days > 0 else [],
            }

    # -- snapshots -----------------------------------------------------
    def save_state(self) -> dict[str, Any]:
        """The subscriber's state as JSON-ready data (the snapshot hook's save)."""
        with self._lock:
            return {
                "events": self._events,
                "last_seq": self._last_seq,
                "total": self._total.to_dict(),
                "polities": {p: t.to_dict() for p, t in sorted(self._polities.items())},
                "day": self._day.to_dict(),
                "day_polities": {p: t.to_dict() for p, t in sorted(self._day_polities.items())},
                "history": list(self._history),
            }

    def load_state(self, state: Any) -> None:
        """Replace the state with what :meth:`save_state` returned."""
        if not isinstance(state, dict):
            raise ValueError(f"KPI state must be a dict, got {type(state).__name__}")
        try:
            total = _Tally.from_dict(state["total"])
            polities = {str(p): _Tally.from_dict(t) for p, t in state["polities"].items()}
            day = _Tally.from_dict(state["day"])
            day_polities = {str(p): _Tally.from_dict(t) for p, t in state["day_polities"].items()}
            history: Iterable[dict[str, Any]] = list(state["history"])
            events = int(state["events"])
            last_seq = int(state["last_seq"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"malformed KPI state: {error!r}") from error
        with self._lock:
            self._total = total
            self._polities = polities
            self._day = day
            self._day_polities = day_polities
            self._history = deque(history, maxlen=self._history_days)
            self._events = events
            self._last_seq = last_seq
