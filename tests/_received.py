"""Subscribers that record the full content of what they receive.

The compiled core hands handlers events that read their payload from the
ring slot until first read or until the slot is overwritten, and reuses an
event object for the next delivery when no handler kept it. Counting seqs
cannot see a mistake there; these recorders read every field, in several
orders, at delivery time and again (lazily, first read) on events a handler
kept until the ring has overwritten their slots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The four ways to read an event's content; the first one read is what
#: copies a view's payload out of its slot, so each one must be first sometimes.
ORDERS: tuple[tuple[str, ...], ...] = (
    ("payload", "tags", "payload_dict", "to_dict"),
    ("to_dict", "payload", "tags", "payload_dict"),
    ("payload_dict", "to_dict", "tags", "payload"),
    ("tags", "payload_dict", "payload", "to_dict"),
)

#: header: read every field but the payload (a view's payload is never
#: copied out); read: read everything at delivery, keep nothing (so the core
#: may reuse the event object); keep: keep unread, read after the ring has
#: overwritten the slot; read_keep: both.
MODES = ("header", "read", "keep", "read_keep")
HEADER = ("seq", "tick", "day", "kind", "polity_id", "ward_id", "actor_id", "subject_id")


def read(event: Any, order: tuple[str, ...] = ORDERS[0]) -> dict[str, Any]:
    """Every field of ``event``, read in ``order``."""
    reading: dict[str, Any] = {}
    for name in order:
        if name == "payload":
            reading[name] = event.payload
        elif name == "tags":
            reading[name] = event.tags
        elif name == "payload_dict":
            reading[name] = event.payload_dict()
        else:
            reading[name] = event.to_dict()
    return {name: reading[name] for name in ORDERS[0]}


def read_header(event: Any) -> dict[str, Any]:
    """Every field of ``event`` but the payload."""
    reading = {name: getattr(event, name) for name in HEADER}
    reading["tags"] = event.tags
    return {"header": reading}


def expected_reading(data: dict[str, Any], mode: str = "read") -> dict[str, Any]:
    """What a receiver in ``mode`` must read of an event whose ``to_dict()`` is ``data``.

    Payload values here are scalars or lists (stored as tuples).
    """
    if mode == "header":
        return {"header": {**{name: data[name] for name in HEADER}, "tags": tuple(data["tags"])}}

    def stored(value: Any) -> Any:
        return tuple(stored(v) for v in value) if isinstance(value, list) else value

    payload = tuple((key, stored(value)) for key, value in data["payload"].items())
    return {
        "payload": payload,
        "tags": tuple(data["tags"]),
        "payload_dict": dict(payload),
        "to_dict": data,
    }


class Receiver:
    """A handler that records ``(when, seq, reading)`` for every event it gets.

    ``reading`` is None for an event kept unread.

    ``when`` is ``"at"`` for a reading at delivery time and ``"late"`` for
    the first reading of a kept event, taken by :meth:`read_kept` once
    ``published()`` has grown by ``horizon`` since the event was kept.
    """

    def __init__(
        self,
        mode: str,
        order: int,
        horizon: int,
        published: Callable[[], int],
        log: list[Any] | None = None,
    ) -> None:
        assert mode in MODES
        self.mode = mode
        self.order = ORDERS[order % len(ORDERS)]
        self.late_order = ORDERS[(order + 1) % len(ORDERS)]
        self.horizon = horizon
        self.published = published
        self.log: list[Any] = [] if log is None else log
        self.kept: list[tuple[Any, int]] = []

    def __call__(self, event: Any) -> None:
        if self.mode == "header":
            self.log.append(("at", event.seq, read_header(event)))
            return
        if self.mode in ("read", "read_keep"):
            self.log.append(("at", event.seq, read(event, self.order)))
        else:
            self.log.append(("at", event.seq, None))
        if self.mode in ("keep", "read_keep"):
            self.kept.append((event, self.published()))

    def read_kept(self, everything: bool = False) -> None:
        """Read the kept events the ring has had time to overwrite (or all of them)."""
        now = self.published()
        still: list[tuple[Any, int]] = []
        for event, since in self.kept:
            if everything or now - since >= self.horizon:
                self.log.append(("late", event.seq, read(event, self.late_order)))
            else:
                still.append((event, since))
        self.kept = still
