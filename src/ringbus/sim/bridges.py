"""Bridges for code that still logs or counts by hand.

:class:`EventLogHandler` is a :class:`logging.Handler` that publishes each
log record as an event; :class:`CounterAdapter` keeps an old
``counter.increment(name)`` API working by publishing an event per call, so
the KPI and evidence subscribers see what that code reports.

Both publish on the calling thread with the bus clock: use them from the
thread that runs the bus.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["COUNTER_INCREMENTED", "LOG_RECORD", "CounterAdapter", "EventLogHandler"]

#: Default kind of events published by :class:`EventLogHandler`.
LOG_RECORD = "LOG_RECORD"
#: Default kind of events published by :class:`CounterAdapter`.
COUNTER_INCREMENTED = "COUNTER_INCREMENTED"


class EventLogHandler(logging.Handler):
    """Publish log records as events.

    Each record becomes one event of ``kind`` whose payload holds ``level``
    (the level name), ``levelno``, ``logger`` (the logger name) and
    ``message`` (the formatted message), plus ``exception`` (the exception
    type name) when the record carries one. A record's ``extra`` attributes
    named ``polity_id``, ``ward_id``, ``actor_id`` or ``subject_id`` fill
    those fields.

    Parameters
    ----------
    bus
        The bus to publish on.
    level
        The least severe level handled.
    kind
        The event kind.

    Examples
    --------
    >>> import logging
    >>> from ringbus import EventBus
    >>> from ringbus.sim.bridges import EventLogHandler
    >>> bus = EventBus()
    >>> log = logging.getLogger("depot")
    >>> log.propagate = False
    >>> log.addHandler(EventLogHandler(bus))
    >>> log.warning("stock low at %s", "depot-3")
    >>> bus.get_since(0)[0].payload_dict()["message"]
    'stock low at depot-3'
    """

    def __init__(self, bus: Any, level: int | str = logging.NOTSET, *, kind: str = LOG_RECORD):
        super().__init__(level)
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty str, got {kind!r}")
        self.bus = bus
        self.kind = kind
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        """Publish ``record`` (errors go to :meth:`logging.Handler.handleError`)."""
        if getattr(self._busy, "active", False):
            return  # a record logged while publishing one: would recurse
        self._busy.active = True
        try:
            payload: dict[str, Any] = {
                "level": record.levelname,
                "levelno": record.levelno,
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info and record.exc_info[0] is not None:
                payload["exception"] = record.exc_info[0].__name__
            self.bus.publish(
                self.kind,
                polity_id=_field(record, "polity_id"),
                ward_id=_field(record, "ward_id"),
                actor_id=_field(record, "actor_id"),
                subject_id=_field(record, "subject_id"),
                payload=payload,
            )
        except Exception:
            self.handleError(record)
        finally:
            self._busy.active = False


def _field(record: logging.LogRecord, name: str) -> str | None:
    value = getattr(record, name, None)
    return value if isinstance(value, str) else None


class CounterAdapter:
    """An old-style counter whose increments become events.

    ``increment(name)`` publishes one event: of the kind ``kinds`` maps
    ``name`` to (so counts the KPI subscriber knows feed it directly), or of
    ``default_kind`` with the counter name in the payload. The adapter also
    keeps the running totals, so ``value(name)`` and ``counter[name]`` still
    answer as before.

    Parameters
    ----------
    bus
        The bus to publish on.
    kinds
        Counter name -> event kind.
    default_kind
        Kind for names not in ``kinds``.
    polity_id, ward_id
        Default who/where for every event (``increment`` may override).

    Examples
    --------
    >>> from ringbus import EventBus, kinds
    >>> from ringbus.sim.bridges import CounterAdapter
    >>> bus = EventBus()
    >>> stats = CounterAdapter(bus, kinds={"deliveries_ok": kinds.DELIVERY_COMPLETED})
    >>> stats.increment("deliveries_ok")
    1
    >>> stats.increment("retries", 3)
    3
    >>> [(e.kind, e.payload_dict()) for e in bus.get_since(0)]
    [('DELIVERY_COMPLETED', {'counter': 'deliveries_ok', 'amount': 1}), \
('COUNTER_INCREMENTED', {'counter': 'retries', 'amount': 3})]
    """

    def __init__(
        self,
        bus: Any,
        *,
        kinds: Mapping[str, str] | None = None,
        default_kind: str = COUNTER_INCREMENTED,
        polity_id: str | None = None,
        ward_id: str | None = None,
    ) -> None:
        self.bus = bus
        self.kinds: dict[str, str] = dict(kinds or {})
        for name, kind in self.kinds.items():
            if not isinstance(name, str) or not isinstance(kind, str) or not kind:
                raise TypeError(f"kinds must map str to non-empty str, got {name!r}: {kind!r}")
        if not isinstance(default_kind, str) or not default_kind:
            raise ValueError(f"default_kind must be a non-empty str, got {default_kind!r}")
        self.default_kind = default_kind
        self.polity_id = polity_id
        self.ward_id = ward_id
        self._values: dict[str, int] = {}

    def increment(
        self,
        name: str,
        amount: int = 1,
        *,
        polity_id: str | None = None,
        ward_id: str | None = None,
        actor_id: str | None = None,
        subject_id: str | None = None,
    ) -> int:
        """Add ``amount`` to counter ``name``, publish the event, return the new value.

        Raises
        ------
        TypeError
            ``name`` is not a str or ``amount`` not an int.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"counter name must be a non-empty str, got {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"counter amount must be an int, got {type(amount).__name__}")
        self.bus.publish(
            self.kinds.get(name, self.default_kind),
            polity_id=self.polity_id if polity_id is None else polity_id,
            ward_id=self.ward_id if ward_id is None else ward_id,
            actor_id=actor_id,
            subject_id=subject_id,
            payload={"counter": name, "amount": amount},
        )
        value = self._values.get(name, 0) + amount
        self._values[name] = value
        return value

    inc = increment

    def value(self, name: str) -> int:
        """The counter's total so far (0 if never incremented)."""
        return self._values.get(name, 0)

    def __getitem__(self, name: str) -> int:
        return self.value(name)

    def values(self) -> dict[str, int]:
        """Every counter's total, sorted by name."""
        return dict(sorted(self._values.items()))
