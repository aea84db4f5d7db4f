"""The queue of events scheduled for a future tick.

:meth:`ringbus.EventBus.schedule` files an event here; when the bus clock
reaches its tick, :meth:`ringbus.EventBus.set_clock` publishes it (it gets
its seq then). Entries come out in a stable order: due tick first, then the
order they were scheduled in.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from ._normalise import EventFields
from ._state import SnapshotPart

__all__ = ["SCHEDULE_FIELDS", "Schedule", "ScheduledEvent"]

#: Keyword fields :meth:`ringbus.EventBus.schedule` accepts besides tick and kind.
SCHEDULE_FIELDS = tuple(EventFields.__annotations__)

#: ``(at_tick, order, kind, fields)``; ``fields`` holds JSON-ready publish keywords.
ScheduledEvent = tuple[int, int, str, dict[str, Any]]


class Schedule(SnapshotPart):
    """A priority queue of scheduled events, ordered by ``(at_tick, order)``.

    ``order`` is a counter of scheduling calls, so two events due at the same
    tick come out in the order they were scheduled, on every run.
    """

    __slots__ = ("_heap", "_next_order")

    def __init__(self) -> None:
        self._heap: list[ScheduledEvent] = []
        self._next_order = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def next_tick(self) -> int | None:
        """The earliest due tick, or ``None`` when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def add(self, at_tick: int, kind: str, fields: dict[str, Any]) -> int:
        """File an event for ``at_tick``; return its scheduling order number."""
        order = self._next_order
        self._next_order += 1
        heapq.heappush(self._heap, (at_tick, order, kind, fields))
        return order

    def first(self) -> ScheduledEvent:
        """The entry released next (raises ``IndexError`` when empty)."""
        return self._heap[0]

    def pop_first(self) -> ScheduledEvent:
        """Remove and return the entry released next."""
        return heapq.heappop(self._heap)

    def entries(self) -> list[ScheduledEvent]:
        """Every entry, in release order (a copy)."""
        return sorted(self._heap)

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state for a snapshot."""
        return {
            "next_order": self._next_order,
            "entries": [
                {"at_tick": at_tick, "order": order, "kind": kind, "fields": fields}
                for at_tick, order, kind, fields in self.entries()
            ],
        }

    def prepare_load(self, state: object) -> Callable[[], None]:
        """Check what :meth:`to_state` returned; return what loads it (cannot fail)."""
        if not isinstance(state, dict) or not isinstance(state.get("entries"), list):
            raise ValueError("snapshot 'scheduled' must be a dict with an 'entries' list")
        heap: list[ScheduledEvent] = []
        for item in state["entries"]:
            if not isinstance(item, dict):
                raise ValueError(f"scheduled entry must be a dict, got {type(item).__name__}")
            try:
                entry = (
                    int(item["at_tick"]),
                    int(item["order"]),
                    str(item["kind"]),
                    dict(item["fields"]),
                )
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"malformed scheduled entry {item!r}: {error}") from error
            unknown = sorted(set(entry[3]) - set(SCHEDULE_FIELDS))
            if unknown:
                raise ValueError(f"scheduled entry has unknown fields {', '.join(unknown)}")
            heap.append(entry)
        heapq.heapify(heap)
        next_order = state.get("next_order", 0)
        if isinstance(next_order, bool) or not isinstance(next_order, int):
            raise ValueError("snapshot 'scheduled.next_order' must be an int")
        next_order = max(next_order, max((e[1] + 1 for e in heap), default=0))

        def commit() -> None:
            self._heap = heap
            self._next_order = next_order

        return commit
