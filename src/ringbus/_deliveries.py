"""Delivery states for debugging: pending, processing, completed, failed.

Tracking is opt-in (:meth:`ringbus.EventBus.track_deliveries`). When it is
off nothing is wrapped and nothing is recorded. When it is on, each route
entry calls its handler through the tracker, which records one
:class:`DeliveryRecord` per ``(seq, subscription)``: ``processing`` while
the handler runs, then ``completed`` or ``failed``; a retry of the same
delivery (dead-letter policy) moves the same record again and counts its
attempts. Records are kept in the order deliveries started, at most
``limit`` of them: one more forgets the oldest, counted in ``evicted``.
``pending`` is never stored: the bus derives it from the events still
waiting for a drain when asked.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._errors import refuse_awaitable

__all__ = ["DELIVERY_STATES", "DeliveryRecord", "DeliveryTracker"]

DELIVERY_STATES = ("pending", "processing", "completed", "failed")


@dataclass(slots=True)
class DeliveryRecord:
    """One event's delivery to one subscription.

    Attributes
    ----------
    seq, kind
        The event.
    sub_id, name
        The subscription (``sub_id`` is ``None`` for a pending event whose
        group member is chosen only at dispatch).
    group
        The load-balanced group the subscription belongs to, if any.
    state
        ``"pending"``, ``"processing"``, ``"completed"`` or ``"failed"``.
    attempts
        Times the handler was called for this event (retries included).
    error
        ``"ExceptionType: message"`` of the last failure, else ``None``.
    """

    seq: int
    kind: str
    sub_id: int | None
    name: str | None
    group: str | None
    state: str
    attempts: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "sub_id": self.sub_id,
            "name": self.name,
            "group": self.group,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Any) -> DeliveryRecord:
        """Build a record from :meth:`to_dict` output."""
        if not isinstance(data, dict) or data.get("state") not in DELIVERY_STATES:
            raise ValueError(f"malformed delivery record in snapshot: {data!r}")
        try:
            return cls(**data)
        except TypeError as error:
            raise ValueError(f"malformed delivery record in snapshot: {error}") from None


class DeliveryTracker:
    """A bounded record of delivery states, in the order deliveries started.

    Parameters
    ----------
    limit
        Most records kept (>= 1).
    """

    __slots__ = ("evicted", "limit", "records")

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"delivery tracking limit must be an int, got {type(limit).__name__}")
        if limit < 1:
            raise ValueError(
                f"delivery tracking limit must be >= 1, got {limit}; pass None to turn it off"
            )
        self.limit = limit
        self.evicted = 0
        self.records: dict[tuple[int, int], DeliveryRecord] = {}

    def call(self, subscription: Any, handler: Callable[[Any], object], event: Any) -> object:
        """Call ``handler(event)`` for ``subscription``, recording the state changes."""
        key = (event.seq, subscription.sub_id)
        record = self.records.get(key)
        if record is None:
            record = DeliveryRecord(
                event.seq,
                event.kind,
                subscription.sub_id,
                subscription.name,
                subscription.group,
                "processing",
            )
            self.records[key] = record
            if len(self.records) > self.limit:
                del self.records[next(iter(self.records))]
                self.evicted += 1
        record.state = "processing"
        record.attempts += 1
        try:
            result = handler(event)
            if result is not None and inspect.isawaitable(result):
                refuse_awaitable(result, handler)
        except Exception as error:
            record.state = "failed"
            record.error = f"{type(error).__name__}: {error}"
            raise
        # An async subscription's call starts a coroutine that drain_async
        # awaits next: the delivery is done only when that coroutine is.
        awaiting = getattr(getattr(handler, "tier", None), "awaiting", None)
        if awaiting:
            awaiting[-1] = _settled(record, awaiting[-1])
            return result
        record.state = "completed"
        return result

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state for a snapshot."""
        return {
            "limit": self.limit,
            "evicted": self.evicted,
            "records": [record.to_dict() for record in self.records.values()],
        }

    @classmethod
    def from_state(cls, state: Any) -> DeliveryTracker:
        """Rebuild a tracker from :meth:`to_state` output."""
        if not isinstance(state, dict) or not isinstance(state.get("records"), list):
            raise ValueError("snapshot 'deliveries' must be a dict with a 'records' list")
        tracker = cls(state.get("limit"))  # type: ignore[arg-type]
        evicted = state.get("evicted", 0)
        if isinstance(evicted, bool) or not isinstance(evicted, int) or evicted < 0:
            raise ValueError(f"snapshot 'deliveries' has a bad 'evicted' count: {evicted!r}")
        tracker.evicted = evicted
        for item in state["records"]:
            record = DeliveryRecord.from_dict(item)
            if record.sub_id is None:
                raise ValueError(f"malformed delivery record in snapshot: {item!r}")
            tracker.records[(record.seq, record.sub_id)] = record
        return tracker


async def _settled(record: DeliveryRecord, coroutine: Awaitable[object]) -> None:
    """Await an async handler's coroutine, recording how its delivery ended."""
    try:
        await coroutine
    except Exception as error:
        record.state = "failed"
        record.error = f"{type(error).__name__}: {error}"
        raise
    record.state = "completed"


class TrackedHandler:
    """A route entry's handler that reports to a :class:`DeliveryTracker`."""

    __slots__ = ("handler", "subscription", "tracker")

    def __init__(
        self, tracker: DeliveryTracker, subscription: Any, handler: Callable[[Any], object]
    ) -> None:
        self.tracker = tracker
        self.subscription = subscription
        self.handler = handler

    def __call__(self, event: Any) -> object:
        return self.tracker.call(self.subscription, self.handler, event)

    def __repr__(self) -> str:
        return f"<tracked {self.handler!r}>"
