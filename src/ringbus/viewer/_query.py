"""Query parsing and event selection for the viewer's JSON API.

Everything here is pure: it reads the bus through its public read API
(``get_since``, ``latest_seq``, ``oldest_seq``) and never takes a lock, so a
reader in the server thread cannot hold up the sim thread's publish path.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_KINDS",
    "MAX_LIMIT",
    "BusReader",
    "EventQuery",
    "QueryError",
    "Selection",
    "kind_counts",
    "export_events",
    "journal_events",
    "newest_events",
    "parse_flag",
    "parse_query",
    "select_events",
]

#: Events returned when ``limit`` is left out.
DEFAULT_LIMIT = 100
#: The largest ``limit`` accepted.
MAX_LIMIT = 5000
#: The most kinds or globs one ``kinds`` parameter may list.
MAX_KINDS = 64
_MAX_SEQ = 2**63 - 1
_MAX_DIGITS = len(str(_MAX_SEQ))
_MAX_TEXT = 256

_EVENT_PARAMS = (
    "since",
    "before",
    "kinds",
    "limit",
    "polity",
    "ward",
    "actor",
    "subject",
    "key",
    "value",
    "from_seq",
    "to_seq",
    "from_tick",
    "to_tick",
    "from_day",
    "to_day",
)
_RANGES = ("from_seq", "to_seq", "from_tick", "to_tick", "from_day", "to_day")


class QueryError(ValueError):
    """A query parameter is missing, malformed or out of range (HTTP 400)."""


class BusReader(Protocol):
    """The read side of an event bus the viewer needs."""

    def get_since(
        self, seq: int, *, kinds: Sequence[str] | None = None, limit: int | None = None
    ) -> list[Any]: ...

    def latest_seq(self) -> int: ...

    def oldest_seq(self) -> int: ...


@dataclass(frozen=True)
class EventQuery:
    """A validated ``/api/events`` (or ``/api/stream``) query.

    Attributes
    ----------
    since
        Cursor: return events with ``seq > since``; ``None`` asks for the
        newest ``limit`` matching events instead.
    kinds
        Exact kinds and fnmatch globs, or ``None`` for every kind.
    limit
        At most this many events.
    polity, ward, actor, subject
        Exact ``polity_id``/``ward_id``/``actor_id``/``subject_id`` to keep.
    key, value
        Keep events whose payload has ``key`` (and, if ``value`` is given,
        whose value is that string, or JSON-encodes to it: ``40``, ``true``).
    before
        Only events with ``seq < before`` (page back through older events).
    from_seq, to_seq, from_tick, to_tick, from_day, to_day
        Inclusive ranges of ``seq``, ``tick`` and ``day`` to keep.
    """

    since: int | None = None
    kinds: tuple[str, ...] | None = None
    limit: int = DEFAULT_LIMIT
    polity: str | None = None
    ward: str | None = None
    actor: str | None = None
    subject: str | None = None
    key: str | None = None
    value: str | None = None
    before: int | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    from_tick: int | None = None
    to_tick: int | None = None
    from_day: int | None = None
    to_day: int | None = None

    @property
    def filtered(self) -> bool:
        """Whether a filter beyond ``kinds`` and seqs applies (done here, not in the core)."""
        return any(
            item is not None
            for item in (
                self.polity,
                self.ward,
                self.actor,
                self.subject,
                self.key,
                self.from_tick,
                self.to_tick,
                self.from_day,
                self.to_day,
            )
        )

    @property
    def floor(self) -> int:
        """Every event kept has a seq above this."""
        return max(self.since or 0, (self.from_seq or 1) - 1)

    @property
    def ceiling(self) -> int | None:
        """Every event kept has a seq at or below this (``None``: no bound)."""
        bounds = [b for b in (self.to_seq, self.before) if b is not None]
        if self.before is not None:
            bounds[-1] -= 1
        return min(bounds) if bounds else None

    def matches(self, event: Any) -> bool:
        """Whether ``event`` passes the polity/ward/actor/subject/payload filters."""
        if self.polity is not None and event.polity_id != self.polity:
            return False
        if self.ward is not None and event.ward_id != self.ward:
            return False
        if self.actor is not None and event.actor_id != self.actor:
            return False
        if self.subject is not None and event.subject_id != self.subject:
            return False
        if self.from_tick is not None and event.tick < self.from_tick:
            return False
        if self.to_tick is not None and event.tick > self.to_tick:
            return False
        if self.from_day is not None and event.day < self.from_day:
            return False
        if self.to_day is not None and event.day > self.to_day:
            return False
        if self.key is not None:
            for name, item in event.payload:
                if name == self.key and (self.value is None or _value_matches(item, self.value)):
                    return True
            return False
        return True

    def to_params(self) -> dict[str, str]:
        """The query as URL parameters (what :func:`parse_query` reads back)."""
        out: dict[str, str] = {}
        if self.since is not None:
            out["since"] = str(self.since)
        if self.kinds is not None:
            out["kinds"] = ",".join(self.kinds)
        out["limit"] = str(self.limit)
        for name in ("polity", "ward", "actor", "subject", "key", "value", "before", *_RANGES):
            item = getattr(self, name)
            if item is not None:
                out[name] = str(item)
        return out


def _value_matches(item: object, wanted: str) -> bool:
    if isinstance(item, str):
        return item == wanted
    try:
        return json.dumps(item, separators=(",", ":"), sort_keys=True) == wanted
    except (TypeError, ValueError):
        return False


def _one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise QueryError(f"parameter {name!r} given {len(values)} times; give it at most once")
    return values[0]


def _text(params: Mapping[str, list[str]], name: str) -> str | None:
    item = _one(params, name)
    if item is None:
        return None
    if not item:
        raise QueryError(f"parameter {name!r} is empty; leave it out to match everything")
    if len(item) > _MAX_TEXT:
        raise QueryError(f"parameter {name!r} is longer than {_MAX_TEXT} characters")
    if not item.isprintable():
        raise QueryError(f"parameter {name!r} holds control characters")
    return item


def _int(params: Mapping[str, list[str]], name: str, low: int, high: int) -> int | None:
    item = _one(params, name)
    if item is None:
        return None
    if not item.isascii() or not item.isdigit():
        raise QueryError(f"parameter {name!r} must be a whole number, got {item[:40]!r}")
    if len(item.lstrip("0")) > _MAX_DIGITS:
        raise QueryError(
            f"parameter {name!r} must be between {low} and {high}, got a {len(item)}-digit number"
        )
    number = int(item)
    if not low <= number <= high:
        raise QueryError(f"parameter {name!r} must be between {low} and {high}, got {number}")
    return number


def parse_since(text: str, name: str = "since") -> int:
    """Parse a seq cursor (``since`` or the ``Last-Event-ID`` header)."""
    got = _int({name: [text.strip()]}, name, 0, _MAX_SEQ)
    assert got is not None
    return got


def parse_flag(params: Mapping[str, list[str]], name: str) -> bool:
    """Parse an on/off parameter: ``1``/``true``/``yes`` or ``0``/``false``/``no``."""
    item = _one(params, name)
    if item is None:
        return False
    lowered = item.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise QueryError(f"parameter {name!r} must be 1 or 0 (true or false), got {item!r}")


def parse_query(
    params: Mapping[str, list[str]], *, extra: Sequence[str] = (), default_limit: int | None = None
) -> EventQuery:
    """Validate URL parameters into an :class:`EventQuery`.

    Parameters
    ----------
    params
        Parsed query string (``urllib.parse.parse_qs(..., keep_blank_values=True)``).
    extra
        Further parameter names the caller handles itself (accepted, ignored here).
    default_limit
        ``limit`` when the parameter is left out (:data:`DEFAULT_LIMIT` if ``None``).

    Raises
    ------
    QueryError
        An unknown parameter, a repeated one, or a malformed or out-of-range value;
        the message names the parameter and what is accepted.
    """
    known = (*_EVENT_PARAMS, *extra)
    unknown = sorted(name for name in params if name not in known)
    if unknown:
        raise QueryError(
            f"unknown parameter {unknown[0]!r}; accepted parameters are {', '.join(known)}"
        )
    kinds: tuple[str, ...] | None = None
    if "kinds" in params:
        items: list[str] = []
        for chunk in params["kinds"]:
            items.extend(part.strip() for part in chunk.split(","))
        if not items or any(not part for part in items):
            raise QueryError(
                "parameter 'kinds' holds an empty kind; give kinds or globs separated "
                "by commas (e.g. kinds=DELIVERY_*,TICK), or leave it out for every kind"
            )
        for part in items:
            if len(part) > _MAX_TEXT or not part.isprintable():
                raise QueryError(f"parameter 'kinds' holds an invalid kind {part[:40]!r}")
        kinds = tuple(dict.fromkeys(items))
        if len(kinds) > MAX_KINDS:
            raise QueryError(
                f"parameter 'kinds' lists {len(kinds)} kinds or globs; give at most {MAX_KINDS}"
            )
    limit = _int(params, "limit", 1, MAX_LIMIT)
    key = _text(params, "key")
    value = _one(params, "value")
    if value is not None:
        if key is None:
            raise QueryError("parameter 'value' needs 'key' (the payload key to compare)")
        if len(value) > _MAX_TEXT or not value.isprintable():
            raise QueryError("parameter 'value' is too long or holds control characters")
    ranges: dict[str, int | None] = {name: _int(params, name, 0, _MAX_SEQ) for name in _RANGES}
    for low, high in (("from_seq", "to_seq"), ("from_tick", "to_tick"), ("from_day", "to_day")):
        first, last = ranges[low], ranges[high]
        if first is not None and last is not None and first > last:
            raise QueryError(f"parameter {low!r} ({first}) is above {high!r} ({last})")
    return EventQuery(
        since=_int(params, "since", 0, _MAX_SEQ),
        before=_int(params, "before", 1, _MAX_SEQ),
        **ranges,
        kinds=kinds,
        limit=(default_limit or DEFAULT_LIMIT) if limit is None else limit,
        polity=_text(params, "polity"),
        ward=_text(params, "ward"),
        actor=_text(params, "actor"),
        subject=_text(params, "subject"),
        key=key,
        value=value,
    )


@dataclass(frozen=True)
class Selection:
    """What one read of the bus found for a query.

    Attributes
    ----------
    events
        Matching events, oldest first.
    cursor
        Pass as ``since`` next time: every seq up to it has been looked at.
    latest_seq, oldest_seq
        The bus's newest accepted seq and oldest retained seq around the read.
    gap
        ``(first, last)`` seqs after ``since`` that were overwritten in the
        ring before they could be read, or ``None``.
    more
        Whether more matching events follow ``cursor`` right now.
    """

    events: list[Any]
    cursor: int
    latest_seq: int
    oldest_seq: int
    gap: tuple[int, int] | None
    more: bool

    def to_json(self) -> dict[str, Any]:
        """The JSON body of ``/api/events``."""
        return {
            "events": [event.to_dict() for event in self.events],
            "next_since": self.cursor,
            "latest_seq": self.latest_seq,
            "oldest_seq": self.oldest_seq,
            "gap": gap_json(self.gap),
            "more": self.more,
        }


def gap_json(gap: tuple[int, int] | None) -> dict[str, int] | None:
    """``{"first", "last", "missing"}`` for a gap, or ``None``."""
    if gap is None:
        return None
    return {"first": gap[0], "last": gap[1], "missing": gap[1] - gap[0] + 1}


def _cap(query: EventQuery, top: int | None) -> int | None:
    bounds = [b for b in (query.ceiling, top) if b is not None]
    return min(bounds) if bounds else None


def select_events(bus: BusReader, query: EventQuery, *, top: int | None = None) -> Selection:
    """Read the events ``query`` asks for from ``bus``, without locking it.

    With ``since`` the oldest ``limit`` matching events after it come back
    (follow mode); without it, the newest ``limit`` matching events (a first
    look, or a page back with ``before``). Events are whole: the core hands
    out complete immutable events. ``top`` caps the read at a seq the caller
    fixed beforehand, so readers that share it read the same events.
    """
    kinds = list(query.kinds) if query.kinds is not None else None
    if query.since is None:
        return newest_events(bus, query, floor=query.floor, top=top)
    # The publisher counts a seq a moment before the event lands in the ring,
    # so only seqs below the one read here are sure to be in the copy taken
    # next (one sim thread publishes). The cursor never passes that bound
    # unless an event the read returned proves the ring got further.
    latest = bus.latest_seq()
    cap = _cap(query, top)
    safe = max(0, latest - 1)
    if cap is not None:
        safe = min(safe, cap)
    since = query.since
    start = max(since, query.floor)
    core_limit = None if query.filtered else query.limit + 1
    found = bus.get_since(start, kinds=kinds, limit=core_limit)
    oldest_after = bus.oldest_seq()
    latest_after = bus.latest_seq()
    if cap is not None and found and found[-1].seq > cap:
        # everything up to the cap has been looked at
        found = [event for event in found if event.seq <= cap]
        safe = max(safe, cap)
    events: list[Any] = []
    more = False
    cursor = max(since, safe)
    for event in found:
        if query.filtered and not query.matches(event):
            continue
        if len(events) == query.limit:
            more = True
            cursor = events[-1].seq
            break
        events.append(event)
    else:
        if found:
            cursor = max(cursor, found[-1].seq)
    # Seqs after ``start`` that the read could not see: everything before the
    # oldest retained event (bounded by the first event read, which was there).
    first_seen = found[0].seq if found else latest_after + 1
    if not found and oldest_after:
        first_seen = min(first_seen, oldest_after)
    gap_last = min(first_seen, oldest_after if oldest_after else first_seen) - 1
    gap_last = min(gap_last, cursor)
    gap = (start + 1, gap_last) if gap_last > start else None
    return Selection(events, cursor, max(latest_after, cursor), oldest_after, gap, more)


def newest_events(
    bus: BusReader, query: EventQuery, *, floor: int, top: int | None = None
) -> Selection:
    """The newest ``query.limit`` matching events with ``seq > floor``.

    Reads a window back from the newest seq (or from ``before``/``to_seq``),
    widening it (x4) only while too few events match, so a first look at a
    large ring costs about ``limit`` events, not the whole ring.
    """
    kinds = list(query.kinds) if query.kinds is not None else None
    latest = bus.latest_seq()
    cap = _cap(query, top)
    upper = latest if cap is None else min(latest, cap)
    safe = min(max(0, latest - 1), upper)
    window = 2 * query.limit + 2
    while True:
        start = max(floor, upper - window)
        # at most ``upper - start`` events lie in (start, upper]: all of them come back
        found = bus.get_since(start, kinds=kinds, limit=upper - start) if upper > start else []
        found = [event for event in found if event.seq <= upper]
        if query.filtered:
            found = [event for event in found if query.matches(event)]
        if len(found) >= query.limit or start <= floor or start <= bus.oldest_seq():
            break
        window *= 4
    cursor = max(safe, floor, found[-1].seq if found else 0)
    events = found[-query.limit :]
    return Selection(events, cursor, max(bus.latest_seq(), cursor), bus.oldest_seq(), None, False)


def export_events(bus: BusReader, query: EventQuery) -> list[Any]:
    """Every retained event matching ``query`` (oldest first; ``limit`` ignored)."""
    kinds = list(query.kinds) if query.kinds is not None else None
    found = bus.get_since(max(query.since or 0, query.floor), kinds=kinds)
    cap = query.ceiling
    return [
        event
        for event in found
        if (cap is None or event.seq <= cap) and (not query.filtered or query.matches(event))
    ]


def journal_events(
    path: str | os.PathLike[str], query: EventQuery, *, below: int, count: int
) -> list[Any]:
    """The newest ``count`` events of a journal matching ``query`` with ``seq < below``.

    The journal is read from its start and the read stops at ``below`` (its
    events are in seq order); a line torn by a writer still busy is ignored.
    Events come back as :class:`~ringbus.WorldEvent`, oldest first.

    Raises
    ------
    QueryError
        The journal cannot be read.
    """
    from ringbus import WorldEvent
    from ringbus._selectors import KindSelector
    from ringbus.journal import JournalError, read_journal

    if count <= 0:
        return []
    selector = None if query.kinds is None else KindSelector(query.kinds)
    floor = query.floor
    kept: deque[Any] = deque(maxlen=count)
    try:
        for _, record in read_journal(path):
            seq = record.get("seq", 0)
            if seq >= below:
                break
            if seq <= floor or (selector is not None and record.get("kind") not in selector):
                continue
            event = WorldEvent.from_dict(record)
            if not query.filtered or query.matches(event):
                kept.append(event)
    except (JournalError, OSError, ValueError, TypeError) as error:
        raise QueryError(f"the journal cannot be read: {error}") from error
    return list(kept)


def kind_counts(bus: BusReader) -> dict[str, int]:
    """Events per kind over what the ring still retains, kinds sorted by name."""
    counts: dict[str, int] = {}
    for event in bus.get_since(0):
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return dict(sorted(counts.items()))


def call_kpis(kpis: Callable[[], Any] | None, attempts: int = 5) -> Any:
    """Call the KPI summary, retrying if the sim thread changed it mid-read.

    Returns ``None`` when there is no KPI source. The result is checked to be
    JSON-serialisable and returned as plain JSON data.
    """
    if kpis is None:
        return None
    for attempt in range(attempts):
        try:
            return json.loads(json.dumps(kpis(), allow_nan=False))
        except RuntimeError:  # a dict changed size while being read: read again
            if attempt == attempts - 1:
                raise
    return None  # pragma: no cover
