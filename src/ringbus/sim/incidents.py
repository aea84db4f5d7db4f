"""An incident log materialised from ``INCIDENT_RECORDED`` events.

Each ``INCIDENT_RECORDED`` event carries ``incident_kind`` and ``severity``
in its payload; :class:`IncidentLog` keeps the most recent ones as
:class:`Incident` records and answers queries over them.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from .. import kinds as k
from .._subscriber import SnapshotSubscriber

__all__ = ["Incident", "IncidentLog"]


@dataclass(frozen=True, slots=True)
class Incident:
    """One recorded incident.

    Parameters
    ----------
    seq, tick, day
        Of the ``INCIDENT_RECORDED`` event.
    incident_kind, severity
        From the payload (``"unknown"`` when missing; severity as a str).
    polity_id, ward_id, actor_id, subject_id
        Who and where.
    details
        The rest of the payload.
    """

    seq: int
    tick: int
    day: int
    incident_kind: str
    severity: str
    polity_id: str | None
    ward_id: str | None
    actor_id: str | None
    subject_id: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The incident as a JSON-ready dict."""
        data = asdict(self)
        data["details"] = dict(self.details)
        return data

    @classmethod
    def from_event(cls, event: Any) -> Incident:
        """Build a record from an ``INCIDENT_RECORDED`` event."""
        payload = event.to_dict()["payload"]
        incident_kind = payload.pop("incident_kind", "unknown")
        severity = payload.pop("severity", "unknown")
        return cls(
            seq=event.seq,
            tick=event.tick,
            day=event.day,
            incident_kind=str(incident_kind),
            severity=str(severity),
            polity_id=event.polity_id,
            ward_id=event.ward_id,
            actor_id=event.actor_id,
            subject_id=event.subject_id,
            details=payload,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incident:
        """Build a record from :meth:`to_dict` output."""
        return cls(**{**data, "details": dict(data.get("details", {}))})


class IncidentLog(SnapshotSubscriber):
    """The last ``max_incidents`` incidents, queryable.

    Parameters
    ----------
    max_incidents
        How many records to keep (the oldest is dropped first;
        :attr:`recorded` still counts them all).

    Examples
    --------
    >>> from ringbus import EventBus, kinds
    >>> from ringbus.sim.incidents import IncidentLog
    >>> bus = EventBus()
    >>> log = IncidentLog()
    >>> _ = log.attach(bus)
    >>> _ = bus.publish(kinds.INCIDENT_RECORDED, ward_id="w1",
    ...                 payload={"incident_kind": "fire", "severity": "high"})
    >>> _ = bus.drain()
    >>> [(i.incident_kind, i.severity, i.ward_id) for i in log.query(severity="high")]
    [('fire', 'high', 'w1')]
    """

    snapshot_name = "incidents"

    def __init__(self, *, max_incidents: int = 10_000) -> None:
        if isinstance(max_incidents, bool) or not isinstance(max_incidents, int):
            raise TypeError(f"max_incidents must be an int, got {type(max_incidents).__name__}")
        if max_incidents < 1:
            raise ValueError(f"max_incidents must be >= 1, got {max_incidents}")
        self._max = max_incidents
        self._records: deque[Incident] = deque(maxlen=max_incidents)
        self._recorded = 0
        self._lock = threading.Lock()

    def subscribed_kinds(self) -> tuple[str, ...]:
        """``INCIDENT_RECORDED`` only."""
        return (k.INCIDENT_RECORDED,)

    def handle(self, event: Any) -> None:
        """Record one ``INCIDENT_RECORDED`` event (other kinds are ignored)."""
        if event.kind != k.INCIDENT_RECORDED:
            return
        record = Incident.from_event(event)
        with self._lock:
            self._records.append(record)
            self._recorded += 1

    @property
    def recorded(self) -> int:
        """How many incidents were recorded in total (also those no longer kept)."""
        return self._recorded

    def __len__(self) -> int:
        return len(self._records)

    def all(self) -> list[Incident]:
        """The kept incidents, oldest first."""
        with self._lock:
            return list(self._records)

    def query(
        self,
        *,
        incident_kind: str | None = None,
        severity: str | None = None,
        polity_id: str | None = None,
        ward_id: str | None = None,
        subject_id: str | None = None,
        since_day: int | None = None,
        until_day: int | None = None,
        since_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Incident]:
        """Kept incidents matching every given filter.

        Parameters
        ----------
        incident_kind, severity, polity_id, ward_id, subject_id
            Exact matches.
        since_day, until_day
            Inclusive day range.
        since_seq
            Only incidents with ``seq > since_seq``.
        limit
            At most this many (the first ones in the chosen order).
        newest_first
            Order newest first instead of oldest first.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
        records = self.all()
        if newest_first:
            records.reverse()
        out: list[Incident] = []
        for record in records:
            if limit is not None and len(out) >= limit:
                break
            if incident_kind is not None and record.incident_kind != incident_kind:
                continue
            if severity is not None and record.severity != severity:
                continue
            if polity_id is not None and record.polity_id != polity_id:
                continue
            if ward_id is not None and record.ward_id != ward_id:
                continue
            if subject_id is not None and record.subject_id != subject_id:
                continue
            if since_day is not None and record.day < since_day:
                continue
            if until_day is not None and record.day > until_day:
                continue
            if since_seq is not None and record.seq <= since_seq:
                continue
            out.append(record)
        return out

    def counts(self, by: str = "incident_kind") -> dict[str, int]:
        """Kept incidents counted by a field (``incident_kind``, ``severity``, ``polity_id``,
        ``ward_id``), sorted by key; records without that field count under ``"-"``."""
        if by not in ("incident_kind", "severity", "polity_id", "ward_id"):
            raise ValueError(
                f"counts(by=) must be incident_kind, severity, polity_id or ward_id, got {by!r}"
            )
        tally: dict[str, int] = {}
        for record in self.all():
            key = getattr(record, by) or "-"
            tally[key] = tally.get(key, 0) + 1
        return dict(sorted(tally.items()))

    def save_state(self) -> dict[str, Any]:
        """JSON-ready state (the snapshot hook's save)."""
        with self._lock:
            return {
                "recorded": self._recorded,
                "records": [record.to_dict() for record in self._records],
            }

    def load_state(self, state: Any) -> None:
        """Replace the state with what :meth:`save_state` returned."""
        try:
            records = [Incident.from_dict(item) for item in state["records"]]
            recorded = int(state["recorded"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed incident log state: {error!r}") from error
        with self._lock:
            self._records = deque(records, maxlen=self._max)
            self._recorded = recorded
