"""Pure-Python twin of the compiled core ``ringbus._ringbus``.

This module is the readable reference: the extension matches it name for
name, result for result, exception for exception and message for message.
It is used when the extension is not built or ``RINGBUS_NO_EXTENSIONS`` is
set, and it is what type checkers see. ``RingCore`` also follows the
extension's structure, method for method: ring positions, slots, the spill
and the urgent lane by position, so the compiled code can be read here.
"""

from __future__ import annotations

import gc
import hashlib
import json
import json.encoder
import threading
from _thread import get_ident
from collections import deque
from collections.abc import Callable, Container
from inspect import isawaitable
from math import isfinite
from typing import Any

from ._errors import (
    CascadeLimitError,
    PendingOverflowError,
    ProducerClosedError,
    RingFullError,
    WrongThreadError,
    cascade_limit_message,
    clock_back_message,
    event_before_clock_message,
    handler_errors_message,
    inbox_refused_note,
    pending_overflow_message,
    producer_closed_message,
    refuse_awaitable,
    ring_full_message,
    wrong_thread_message,
)
from ._limits import ROUTE_CACHE_LIMIT, check_ring_size
from ._normalise import (
    CLOCK_POLICIES,
    DROP_POLICIES,
    FIELDS,
    MAX_PAYLOAD_ITEMS_LIMIT,
    NORMAL,
    URGENT,
    check_id,
    check_kind,
    check_lane,
    check_limit,
    check_non_negative,
    check_positive,
    event_args_from_dict,
    jsonify,
    lane_of,
    normalise_payload,
    normalise_tags,
    thaw_value,
)

__all__ = ["FIELDS", "DROP_POLICIES", "ROUTE_CACHE_LIMIT", "Producer", "RingCore", "WorldEvent"]


Payload = tuple[tuple[str, Any], ...]
Route = tuple[tuple[Callable[[Any], object], object], ...]
# A producer's inbox entry: kind, tick, day (-1: the bus clock when it enters
# the ring), the four ids, the payload pairs, the tags and the lane, all validated.
InboxEntry = tuple[
    str, int, int, str | None, str | None, str | None, str | None, Payload, tuple[str, ...], int
]

_sha256 = hashlib.sha256
_set = object.__setattr__
_new = object.__new__


class WorldEvent:
    """One immutable fact of the simulated world.

    Parameters
    ----------
    seq
        Sequence number assigned by the bus (starts at 1, never reused).
    tick, day
        Simulation clock when the event happened.
    kind
        What happened: one of :mod:`ringbus.kinds` or any non-empty string.
    polity_id, ward_id, actor_id, subject_id
        Who and where (``subject_id`` is the corridor, depot, ...), or ``None``.
    payload
        A mapping or an iterable of ``(key, value)`` pairs; stored as a tuple
        of pairs. Values are ``None``, ``bool``, ``int``, finite ``float``,
        ``str`` or lists/tuples of them (stored as tuples).
    tags
        Free labels.
    """

    __slots__ = FIELDS
    __match_args__ = FIELDS

    seq: int
    tick: int
    day: int
    kind: str
    polity_id: str | None
    ward_id: str | None
    actor_id: str | None
    subject_id: str | None
    payload: Payload
    tags: tuple[str, ...]

    def __init__(
        self,
        seq: int,
        tick: int,
        day: int,
        kind: str,
        polity_id: str | None = None,
        ward_id: str | None = None,
        actor_id: str | None = None,
        subject_id: str | None = None,
        payload: object = (),
        tags: object = (),
    ) -> None:
        if hasattr(self, "seq"):
            raise AttributeError("WorldEvent is immutable: cannot set 'seq'")
        _set(self, "seq", check_non_negative("seq", seq))
        _set(self, "tick", check_non_negative("tick", tick))
        _set(self, "day", check_non_negative("day", day))
        _set(self, "kind", check_kind(kind))
        _set(self, "polity_id", check_id("polity_id", polity_id))
        _set(self, "ward_id", check_id("ward_id", ward_id))
        _set(self, "actor_id", check_id("actor_id", actor_id))
        _set(self, "subject_id", check_id("subject_id", subject_id))
        _set(self, "payload", normalise_payload(payload, None))
        _set(self, "tags", normalise_tags(tags))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"WorldEvent is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"WorldEvent is immutable: cannot delete {name!r}")

    def _key(self) -> tuple[object, ...]:
        return (
            self.seq,
            self.tick,
            self.day,
            self.kind,
            self.polity_id,
            self.ward_id,
            self.actor_id,
            self.subject_id,
            self.payload,
            self.tags,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not WorldEvent:
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        if type(other) is not WorldEvent:
            return NotImplemented
        return self._key() != other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"WorldEvent(seq={self.seq}, tick={self.tick}, day={self.day}, "
            f"kind={self.kind!r}, polity_id={self.polity_id!r}, "
            f"ward_id={self.ward_id!r}, actor_id={self.actor_id!r}, "
            f"subject_id={self.subject_id!r}, payload={self.payload!r}, "
            f"tags={self.tags!r})"
        )

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (WorldEvent, self._key())

    def __copy__(self) -> WorldEvent:
        return self

    def __deepcopy__(self, memo: object) -> WorldEvent:
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a new JSON-ready dict (payload as a dict, tuples as lists)."""
        return {
            "seq": self.seq,
            "tick": self.tick,
            "day": self.day,
            "kind": self.kind,
            "polity_id": self.polity_id,
            "ward_id": self.ward_id,
            "actor_id": self.actor_id,
            "subject_id": self.subject_id,
            "payload": {key: jsonify(value) for key, value in self.payload},
            "tags": list(self.tags),
        }

    def payload_dict(self) -> dict[str, Any]:
        """Return the payload as a new dict; the event is untouched.

        Nested mappings (frozen as tuples of pairs) come back as dicts.
        """
        return {
            key: thaw_value(value) if type(value) is tuple else value for key, value in self.payload
        }

    @classmethod
    def from_dict(cls, data: object) -> WorldEvent:
        """Build an event from the output of :meth:`to_dict` (e.g. a JSON line)."""
        return cls(*event_args_from_dict(data, FIELDS))  # type: ignore[arg-type]


def _fill_event(
    event: WorldEvent,
    seq: int,
    tick: int,
    day: int,
    kind: str,
    polity_id: str | None,
    ward_id: str | None,
    actor_id: str | None,
    subject_id: str | None,
    payload: Payload,
    tags: tuple[str, ...],
) -> None:
    """Set every field of a new, empty event from already validated values (no checks)."""
    _set_seq(event, seq)
    _set_tick(event, tick)
    _set_day(event, day)
    _set_kind(event, kind)
    _set_polity_id(event, polity_id)
    _set_ward_id(event, ward_id)
    _set_actor_id(event, actor_id)
    _set_subject_id(event, subject_id)
    _set_payload(event, payload)
    _set_tags(event, tags)


# The slots' own setters: setting through them skips WorldEvent.__setattr__
# (which refuses) and the attribute lookup, about twice as fast per field.
(
    _set_seq,
    _set_tick,
    _set_day,
    _set_kind,
    _set_polity_id,
    _set_ward_id,
    _set_actor_id,
    _set_subject_id,
    _set_payload,
    _set_tags,
) = (WorldEvent.__dict__[name].__set__ for name in FIELDS)


class Producer:
    """A handle that publishes into a bus from any thread.

    Made by :meth:`RingCore.producer`. :meth:`publish` checks the event at
    once (its errors go to the caller) and puts it in the producer's inbox;
    the inbox enters the bus at the start of the owner thread's next drain.
    """

    __slots__ = ("_closed", "_core", "_inbox", "_lock", "_name")

    _core: RingCore
    _name: str
    _inbox: list[InboxEntry]
    _closed: bool
    _lock: threading.Lock

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("make producers with bus.producer(name)")

    @classmethod
    def _made(cls, core: RingCore, name: str) -> Producer:
        producer = _new(cls)
        producer._core = core
        producer._name = name
        producer._inbox = []
        producer._closed = False
        producer._lock = threading.Lock()
        return producer

    @property
    def name(self) -> str:
        """The producer's name."""
        return self._name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or the bus's ``close_producers``) closed it."""
        return self._closed

    def publish(
        self,
        kind: str,
        tick: int | None = None,
        day: int | None = None,
        *,
        polity_id: str | None = None,
        ward_id: str | None = None,
        actor_id: str | None = None,
        subject_id: str | None = None,
        payload: object = None,
        tags: object = (),
        priority: str | None = None,
    ) -> None:
        """Check one event and put it in the inbox; any thread may call this.

        Arguments as the bus's ``publish``; the seq is given when the event
        enters the bus (at the start of the next drain), so none is
        returned. A disabled bus keeps nothing.

        Raises
        ------
        TypeError, ValueError
            A field is of the wrong type or value.
        ProducerClosedError
            The producer is closed.
        """
        core = self._core
        if not core._enabled:
            return
        if self._closed:
            raise ProducerClosedError(producer_closed_message(self._name))
        entry = core._inbox_entry(
            kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags, priority
        )
        with self._lock:
            if self._closed:
                raise ProducerClosedError(producer_closed_message(self._name))
            self._inbox.append(entry)

    def close(self) -> int:
        """Refuse further events; return how many are still waiting in the inbox."""
        return self._close()

    def _close(self) -> int:
        with self._lock:
            self._closed = True
            return len(self._inbox)

    def _take(self) -> list[InboxEntry]:
        with self._lock:
            batch = self._inbox
            self._inbox = []
        return batch

    def _put_back(self, rest: list[InboxEntry]) -> None:
        if rest:
            with self._lock:
                self._inbox[:0] = rest

    def _put_back_last(self, entries: list[InboxEntry]) -> None:
        with self._lock:
            self._inbox.extend(entries)

    def _entries(self) -> list[InboxEntry]:
        with self._lock:
            return list(self._inbox)

    def __len__(self) -> int:
        return len(self._inbox)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Producer {self._name!r}{state} inbox={len(self._inbox)}>"


class RingCore:
    """The ring, the seq counter, the pending queue and the drain loop.

    :class:`ringbus.EventBus` builds on this class; use that. The core keeps
    the last ``max_events`` events in a ring that overwrites the oldest, and
    the events published since the last drain in a bounded pending queue
    that holds its own references, so an event is dispatched exactly once
    even when the ring has wrapped past it.

    Handlers come from per-kind routes: ``_routes`` maps a kind to a tuple of
    ``(handler, subscription)`` entries; a kind not in it is looked up once
    through :meth:`_resolve_route`. It holds at most :data:`ROUTE_CACHE_LIMIT`
    kinds: caching one more starts it afresh.
    """

    def __init__(
        self,
        max_events: int = 50_000,
        max_payload_items: int = 12,
        max_pending: int = 1_000_000,
        enabled: bool = True,
        drop_policy: str = "DROP_OLDEST",
        cascade_rounds: int = 1,
        clock_policy: str = "monotonic",
    ) -> None:
        self._max_events = check_positive("max_events", max_events)
        self._max_payload_items = check_positive(
            "max_payload_items", max_payload_items, MAX_PAYLOAD_ITEMS_LIMIT
        )
        # The compiled core preallocates this ring: refuse what it could not hold.
        check_ring_size(self._max_events, self._max_payload_items)
        self._max_pending = check_positive("max_pending", max_pending)
        if drop_policy not in DROP_POLICIES:
            raise ValueError(
                f"drop_policy must be one of {', '.join(DROP_POLICIES)}, got {drop_policy!r}"
            )
        self._raise_when_full = drop_policy == "RAISE"
        self._cascade_rounds = check_positive("cascade_rounds", cascade_rounds)
        if clock_policy not in CLOCK_POLICIES:
            raise ValueError(
                f"clock_policy must be one of {', '.join(CLOCK_POLICIES)}, got {clock_policy!r}"
            )
        self._monotonic = clock_policy == "monotonic"
        self._enabled = bool(enabled)
        # Positions count stored events; position p lives in slot p % _max_events.
        # Events at positions >= _next_pos are pending; pending events that the
        # ring overwrote wait in _spill. The slot list grows up to _max_events
        # (a huge ring that is never filled costs nothing), then wraps.
        self._pos = 0
        self._next_pos = 0
        # _pos % _max_events and _next_pos % _max_events, kept as they move.
        self._pos_slot = 0
        self._next_slot = 0
        self._slots: list[WorldEvent] = []
        self._storing = False  # twin only: see _reader_copy
        self._spill: deque[WorldEvent] = deque()
        # Urgent lane: (position, seq) of pending urgent events; _done holds the
        # positions of those already dispatched ahead of their turn.
        self._urgent: deque[tuple[int, int]] = deque()
        self._done: set[int] = set()
        # The lane of each pending "high" or "low" event, by seq.
        self._levels: dict[int, int] = {}
        # Direct delivery: destination of each pending direct event, by seq.
        self._destinations: dict[int, str] = {}
        self._routes: dict[str, Route] = {}
        self._seq = 0
        self._tick = 0
        self._day = 0
        self._draining = False
        self._published = 0
        self._dispatched = 0
        self._delivered = 0
        self._handler_errors = 0
        self._overwritten = 0
        self._owner = get_ident()
        # Producers in the order they were made: their inboxes enter the ring
        # in this order at the start of each drain.
        self._producers: list[Producer] = []
        self._inboxes_held = False

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(f"{type(self).__name__} cannot be pickled: use snapshot()")

    # -- the owner thread ------------------------------------------------
    @property
    def owner_thread(self) -> int:
        """Ident (``threading.get_ident()``) of the thread the bus belongs to.

        ``publish``, ``ingest``, ``set_clock`` and ``drain`` (and the
        facade's ``subscribe``, ``unsubscribe`` and ``restore``) raise
        :class:`~ringbus.WrongThreadError` from any other thread; other
        threads publish through :meth:`producer` handles.
        """
        return self._owner

    def transfer_to_current_thread(self) -> None:
        """Make the calling thread the bus's owner.

        Call it from the thread that takes the bus over, once the previous
        owner has stopped using it (handed over through a join or a queue).
        """
        self._owner = get_ident()

    def _check_owner(self, what: str) -> None:
        """Raise :class:`~ringbus.WrongThreadError` unless called from the owner thread."""
        current = get_ident()
        if current != self._owner:
            raise WrongThreadError(wrong_thread_message(what, self._owner, current))

    # -- configuration -------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether :meth:`publish` stores events (``False``: a cheap no-op)."""
        return self._enabled

    @property
    def max_events(self) -> int:
        """Number of slots in the ring."""
        return self._max_events

    @property
    def max_payload_items(self) -> int:
        """Largest number of payload pairs an event keeps."""
        return self._max_payload_items

    @property
    def clock_policy(self) -> str:
        """``"monotonic"`` (time never goes backwards) or ``"free"``."""
        return "monotonic" if self._monotonic else "free"

    @property
    def max_pending(self) -> int:
        """Largest number of events waiting for :meth:`drain`."""
        return self._max_pending

    # -- clock ---------------------------------------------------------
    @property
    def tick(self) -> int:
        """The bus clock's tick, used when :meth:`publish` is given none."""
        return self._tick

    @property
    def day(self) -> int:
        """The bus clock's day, used when :meth:`publish` is given none."""
        return self._day

    def set_clock(self, tick: int, day: int | None = None) -> None:
        """Set the bus clock (once per tick, from the sim loop).

        Time never goes backwards: neither ``tick`` nor ``day`` may be lower
        than the clock's.

        Parameters
        ----------
        tick
            The current tick.
        day
            The current day; ``None`` keeps the current one.

        Raises
        ------
        ValueError
            ``tick`` or ``day`` is before the clock's.
        """
        if get_ident() != self._owner:
            self._check_owner("set_clock")
        tick_value = check_non_negative("tick", tick)
        day_value = self._day if day is None else check_non_negative("day", day)
        if self._monotonic and tick_value < self._tick:
            raise ValueError(clock_back_message("tick", self._tick, tick_value))
        if self._monotonic and day_value < self._day:
            raise ValueError(clock_back_message("day", self._day, day_value))
        self._tick = tick_value
        self._day = day_value

    # -- publishing ----------------------------------------------------
    def publish(
        self,
        kind: str,
        tick: int | None = None,
        day: int | None = None,
        *,
        polity_id: str | None = None,
        ward_id: str | None = None,
        actor_id: str | None = None,
        subject_id: str | None = None,
        payload: object = None,
        tags: object = (),
        priority: str | None = None,
    ) -> int:
        """Accept one event and return its seq (``0`` when the bus is disabled).

        Parameters
        ----------
        kind
            What happened (see :mod:`ringbus.kinds`).
        tick, day
            Sim clock; ``None`` takes the bus clock. Never before the
            clock's (time never goes backwards); a later one moves the
            clock forward to it.
        polity_id, ward_id, actor_id, subject_id
            Who and where, ``str`` or ``None``.
        payload
            A dict, an iterable of ``(key, value)`` pairs, or ``None``.
            More than ``max_payload_items`` pairs are cut to exactly that
            many, the last being ``("__truncated__", True)``.
        tags
            An iterable of ``str``.
        priority
            ``"low"``, ``"normal"`` (``None``), ``"high"`` or ``"urgent"``:
            within a drain round, higher priorities are dispatched first, in
            seq order within each.

        Raises
        ------
        TypeError, ValueError
            A field is of the wrong type or value, or ``tick``/``day`` is
            before the clock's; the message names it.
        PendingOverflowError
            ``max_pending`` events are already waiting for :meth:`drain`.
        RingFullError
            The ring is full and ``drop_policy`` is ``"RAISE"``.
        """
        if not self._enabled:
            return 0
        if priority is not None:
            lane = lane_of(priority)
            if lane != NORMAL:
                return self._publish_routed(
                    lane,
                    None,
                    kind,
                    tick,
                    day,
                    polity_id,
                    ward_id,
                    actor_id,
                    subject_id,
                    payload,
                    tags,
                )
        return self._publish(
            kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags
        )

    def _publish(
        self,
        kind: str,
        tick: int | None,
        day: int | None,
        polity_id: str | None,
        ward_id: str | None,
        actor_id: str | None,
        subject_id: str | None,
        payload: object,
        tags: object,
    ) -> int:
        if not self._enabled:
            return 0
        if get_ident() != self._owner:
            self._check_owner("publish")
        if type(kind) is not str or not kind:
            kind = check_kind(kind)
        # -1: the bus clock, read when the event is stored.
        tick_value = -1 if tick is None else check_non_negative("tick", tick)
        day_value = -1 if day is None else check_non_negative("day", day)
        if polity_id is not None and type(polity_id) is not str:
            polity_id = check_id("polity_id", polity_id)
        if ward_id is not None and type(ward_id) is not str:
            ward_id = check_id("ward_id", ward_id)
        if actor_id is not None and type(actor_id) is not str:
            actor_id = check_id("actor_id", actor_id)
        if subject_id is not None and type(subject_id) is not str:
            subject_id = check_id("subject_id", subject_id)
        pairs = normalise_payload(payload, self._max_payload_items)
        tag_tuple = normalise_tags(tags)
        return self._store(
            0,
            tick_value,
            day_value,
            kind,
            polity_id,
            ward_id,
            actor_id,
            subject_id,
            tag_tuple,
            pairs,
            len(pairs),
        )

    def ingest(self, event: WorldEvent) -> int:
        """Accept an already built event, keeping its seq (replay, restore).

        The event's seq must be greater than :meth:`latest_seq`; gaps are
        allowed (a journal may hold only some kinds). Returns the seq, or
        ``0`` when the bus is disabled.
        """
        if not self._enabled:
            return 0
        if get_ident() != self._owner:
            self._check_owner("ingest")
        if type(event) is not WorldEvent:
            raise TypeError(f"ingest() takes a WorldEvent, got {type(event).__name__}")
        self._check_ingest_seq(event.seq)
        payload = event.payload
        count = len(payload)
        if count > self._max_payload_items:
            raise ValueError(
                f"event seq {event.seq} has {count} payload items, "
                f"more than max_payload_items={self._max_payload_items}"
            )
        return self._store(
            event.seq,
            event.tick,
            event.day,
            event.kind,
            event.polity_id,
            event.ward_id,
            event.actor_id,
            event.subject_id,
            event.tags,
            payload,
            count,
        )

    def _check_ingest_seq(self, seq: int) -> None:
        if seq <= self._seq:
            raise ValueError(
                f"event seq {seq} is not after latest_seq {self._seq}: ingested seqs must increase"
            )

    def _publish_routed(
        self,
        lane: int,
        destination: str | None,
        kind: str,
        tick: int | None,
        day: int | None,
        polity_id: str | None,
        ward_id: str | None,
        actor_id: str | None,
        subject_id: str | None,
        payload: object,
        tags: object,
    ) -> int:
        """Publish into a lane (an index of ``PRIORITIES``) and/or to one destination."""
        if destination is not None and (type(destination) is not str or not destination):
            raise TypeError(f"destination must be a non-empty str, got {destination!r}")
        check_lane(lane)
        seq = self._publish(
            kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags
        )
        if seq:
            self._mark(seq, lane, destination)
        return seq

    def _ingest_routed(self, event: WorldEvent, lane: int, destination: str | None) -> int:
        """``ingest`` into a lane and/or to one destination (restore)."""
        if destination is not None and (type(destination) is not str or not destination):
            raise TypeError(f"destination must be a non-empty str, got {destination!r}")
        check_lane(lane)
        seq = self.ingest(event)
        if seq:
            self._mark(seq, lane, destination)
        return seq

    def _mark(self, seq: int, lane: int, destination: str | None) -> None:
        position = self._pos - 1  # the event just stored
        if lane != URGENT and lane != NORMAL:
            self._levels[seq] = lane
        if lane == URGENT:
            entry = (position, seq)  # may run finalizers that publish urgent events too
            index = len(self._urgent)
            while index and self._urgent[index - 1][0] > position:
                index -= 1
            self._urgent.insert(index, entry)  # the lane stays in position order
        if destination is not None:
            self._destinations[seq] = destination

    def pending_routing(self) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
        """``(seq, lane)`` of pending events not in the normal lane, in seq order, and
        ``(seq, destination)`` of pending direct ones."""
        lanes = [(seq, URGENT) for _position, seq in self._urgent]
        lanes += self._levels.items()
        return sorted(lanes), sorted(self._destinations.items())

    def _pending_count(self) -> int:
        return self._pos - self._next_pos - len(self._done)

    def _is_pending(self, position: int) -> bool:
        """Whether the event at ``position`` has not been dispatched yet."""
        return position >= self._next_pos and not (self._done and position in self._done)

    def _full(self, seq: int, tick: int, day: int) -> bool:
        """Whether storing an event (with ``seq``, or numbered next if 0; at
        ``tick`` and ``day``, or the clock's if -1) must be refused."""
        return (
            (seq != 0 and seq <= self._seq)
            or (self._monotonic and ((0 <= tick < self._tick) or (0 <= day < self._day)))
            # _pending_count(), inlined: this runs for every event.
            or self._pos - self._next_pos - len(self._done) >= self._max_pending
            or (self._raise_when_full and self._pos >= self._max_events)
        )

    def _refuse(self, seq: int, tick: int, day: int) -> None:
        """Raise the error that ``_full`` found."""
        if seq != 0:
            self._check_ingest_seq(seq)
        if self._monotonic and 0 <= tick < self._tick:
            raise ValueError(event_before_clock_message("tick", tick, self._tick))
        if self._monotonic and 0 <= day < self._day:
            raise ValueError(event_before_clock_message("day", day, self._day))
        if self._pending_count() >= self._max_pending:
            raise PendingOverflowError(pending_overflow_message(self._max_pending))
        if self._raise_when_full and self._pos >= self._max_events:
            raise RingFullError(ring_full_message(self._max_events))
        raise AssertionError("_refuse() found nothing to refuse")  # cannot happen

    def _prepare_slot(self, seq: int, tick: int, day: int) -> None:
        """Make the slot at ``_pos`` ready to be overwritten, or refuse the event.

        The event in the slot, if still pending, is kept in the spill. The
        stored events are immutable, so no view handed out needs a copy of
        its own (the compiled core's views do, and may run code meanwhile).
        """
        if self._full(seq, tick, day):
            self._refuse(seq, tick, day)
        if self._is_pending(self._pos - self._max_events):
            self._spill.append(self._slots[self._pos_slot])

    def _store(
        self,
        seq: int,
        tick: int,
        day: int,
        kind: str,
        polity_id: str | None,
        ward_id: str | None,
        actor_id: str | None,
        subject_id: str | None,
        tags: tuple[str, ...],
        payload_pairs: Payload,
        count: int,
    ) -> int:
        """Write one event into the slot at ``_pos`` and return its seq.

        ``seq`` 0 numbers the event next (publish); otherwise it is the
        event's own (ingest). ``tick``/``day`` -1 take the bus clock.
        ``payload_pairs`` holds the ``count`` pairs, already checked (the
        compiled core takes them as a C array of references and its length).
        """
        # Allocated before anything is decided: the allocation may run the
        # cyclic GC, and a finalizer that publishes must not take a seq (or
        # move the clock) in between.
        event = _new(WorldEvent)
        slots = self._slots
        slot = self._pos_slot
        if slot < len(slots) and self._pos - self._max_events >= self._next_pos:
            # A pending event in the way: the slow path.
            self._prepare_slot(seq, tick, day)
        elif self._full(seq, tick, day):
            self._refuse(seq, tick, day)
        if seq == 0:
            seq = self._seq + 1
        # The clock is read now, after any code that may have moved it; an
        # event later than the clock moves it forward.
        if tick < 0:
            tick = self._tick
        if day < 0:
            day = self._day
        _fill_event(
            event,
            seq,
            tick,
            day,
            kind,
            polity_id,
            ward_id,
            actor_id,
            subject_id,
            payload_pairs,
            tags,
        )
        # Twin only: readers in other threads see the slot and _pos change in
        # two steps, and read again if they looked in between (_reader_copy).
        self._storing = True
        if slot < len(slots):
            slots[slot] = event
            self._overwritten += 1
        else:
            slots.append(event)  # the ring grows to max_events, then wraps
        self._seq = seq
        if self._monotonic:
            self._tick = tick
            self._day = day
        self._pos += 1
        self._storing = False
        self._pos_slot = slot + 1 if slot + 1 < self._max_events else 0
        self._published += 1
        return seq

    def _event_at(self, position: int) -> WorldEvent | None:
        """The event at ``position``, or None if it is no longer retained.

        The compiled core builds an event with its own payload copy here;
        the twin's slot already holds the immutable event.
        """
        if position < self._oldest_pos() or position >= self._pos:
            return None
        return self._slots[position % self._max_events]

    def _view_at(self, position: int, slot: int) -> WorldEvent | None:
        """The event at ``position`` (in ``slot``) as drain hands it out, or None
        if it was overwritten meanwhile.

        The compiled core builds a view on the slot's payload (recycling the
        previous delivery's event when nobody else holds it); the twin's
        slot already holds the immutable event, which is its own view.
        """
        if position < self._pos - self._max_events:  # position < _oldest_pos()
            return None
        return self._slots[slot]

    # -- producers ------------------------------------------------------
    def producer(self, name: str) -> Producer:
        """The producer handle called ``name``: its ``publish`` may be called from any thread.

        A producer's events wait in its inbox and enter the ring at the start
        of the next :meth:`drain` on the owner thread, where they get their
        seqs: producers in the order they were made, each one's events in
        the order it published them. Asking again for a name returns the
        same handle.

        Raises
        ------
        TypeError
            ``name`` is not a non-empty str.
        ValueError
            The producer of that name was closed and its inbox is not empty yet.
        """
        if type(name) is not str or not name:
            raise TypeError(f"producer name must be a non-empty str, got {name!r}")
        self._check_owner("producer")
        for producer in self._producers:
            if producer._name == name:
                if producer._closed:
                    raise ValueError(
                        f"producer {name!r} is closed and its events have not entered "
                        "the bus yet: drain() first, then ask for it again"
                    )
                return producer
        producer = Producer._made(self, name)
        self._producers.append(producer)
        return producer

    def producers(self) -> list[Producer]:
        """The producers, in the order their inboxes enter the ring."""
        return list(self._producers)

    def close_producers(self) -> int:
        """Close every producer; return how many of their events are still in inboxes.

        A closed producer's ``publish`` raises
        :class:`~ringbus.ProducerClosedError`; what it published before still
        enters the ring at the next :meth:`drain` (and travels in a snapshot
        meanwhile), after which the bus forgets it.
        """
        self._check_owner("close_producers")
        waiting = 0
        for producer in self._producers:
            waiting += producer._close()
        self._producers = [p for p in self._producers if len(p)]
        return waiting

    def _inbox_entry(
        self,
        kind: str,
        tick: int | None,
        day: int | None,
        polity_id: str | None,
        ward_id: str | None,
        actor_id: str | None,
        subject_id: str | None,
        payload: object,
        tags: object,
        priority: str | None = None,
        rebuilding: bool = False,
    ) -> InboxEntry:
        """Check an event as :meth:`publish` does; return it as an inbox entry.

        ``rebuilding`` takes a payload already cut to ``max_payload_items``
        (one that ends with the truncation marker), as a snapshot holds it.
        """
        lane = NORMAL if priority is None else lane_of(priority)
        kind = check_kind(kind)
        tick_value = -1 if tick is None else check_non_negative("tick", tick)
        day_value = -1 if day is None else check_non_negative("day", day)
        polity_id = check_id("polity_id", polity_id)
        ward_id = check_id("ward_id", ward_id)
        actor_id = check_id("actor_id", actor_id)
        subject_id = check_id("subject_id", subject_id)
        pairs = normalise_payload(payload, None if rebuilding else self._max_payload_items)
        if len(pairs) > self._max_payload_items:
            raise ValueError(
                f"inbox event has {len(pairs)} payload items, "
                f"more than max_payload_items={self._max_payload_items}"
            )
        tag_tuple = normalise_tags(tags)
        return (
            kind,
            tick_value,
            day_value,
            polity_id,
            ward_id,
            actor_id,
            subject_id,
            pairs,
            tag_tuple,
            lane,
        )

    def _enter(self, entry: InboxEntry) -> int:
        """Store one inbox entry as the next event (as :meth:`publish` does)."""
        (
            kind,
            tick_value,
            day_value,
            polity_id,
            ward_id,
            actor_id,
            subject_id,
            pairs,
            tags,
            lane,
        ) = entry
        seq = self._store(
            0,
            tick_value,
            day_value,
            kind,
            polity_id,
            ward_id,
            actor_id,
            subject_id,
            tags,
            pairs,
            len(pairs),
        )
        if lane != NORMAL:
            self._mark(seq, lane, None)
        return seq

    def _enter_inboxes(self) -> None:
        """Move every inbox into the ring, producers in order (the start of a drain).

        When the pending queue fills up, what did not fit waits for the next
        drain. An event the bus refuses otherwise (before the clock, a full
        ring under ``"RAISE"``) is dropped from its inbox and its error
        raised, with a note; the events after it wait.
        """
        try:
            for producer in self._producers:
                batch = producer._take()
                for index, entry in enumerate(batch):
                    try:
                        self._enter(entry)
                    except PendingOverflowError:
                        producer._put_back(batch[index:])
                        return
                    except Exception as error:
                        producer._put_back(batch[index + 1 :])
                        error.add_note(inbox_refused_note(producer._name, entry[0]))
                        raise
                    except BaseException:
                        producer._put_back(batch[index:])
                        raise
        finally:
            if any(p._closed and not p._inbox for p in self._producers):
                self._producers = [p for p in self._producers if p._inbox or not p._closed]

    def _hold_inboxes(self, held: bool) -> None:
        """While held, :meth:`drain` leaves the inboxes for a later drain (drain_async's
        later rounds: inboxes enter once per drain, at its start)."""
        self._inboxes_held = bool(held)

    def _inboxes(self) -> list[tuple[str, list[InboxEntry]]]:
        """Each producer's name and a copy of its inbox (payloads as pairs), in order."""
        return [(p._name, p._entries()) for p in self._producers]

    def _load_inbox(self, name: str, entries: list[InboxEntry]) -> None:
        """Append ``entries`` (from :meth:`_inbox_entry`) to the inbox of producer ``name``."""
        self.producer(name)._put_back_last(entries)

    def _skip_to(self, seq: int) -> None:
        """Move the seq counter forward so the next event gets ``seq + 1``."""
        seq = check_non_negative("seq", seq)
        if seq < self._seq:
            raise ValueError(f"cannot move seq back from {self._seq} to {seq}")
        self._seq = seq

    # -- dispatch ------------------------------------------------------
    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` is running (a handler is being called)."""
        return self._draining

    def _invalidate_routes(self) -> None:
        """Forget every cached route: the subscriptions changed."""
        self._routes.clear()

    def _resolve_route(self, kind: str) -> Route:
        """Return the ``(handler, subscription)`` entries for ``kind``."""
        return ()

    def _on_handler_error(self, event: WorldEvent, subscription: object, error: Exception) -> bool:
        """Called when a handler raised; return True to raise it after the drain."""
        return True

    def _resolve_direct(self, destination: str, kind: str) -> Route:
        """Return the entries for an event sent to ``destination``."""
        return ()

    def _on_undeliverable(self, event: WorldEvent, destination: str) -> Exception | None:
        """Called for a direct event nobody takes.

        An exception returned is raised after the drain, with the handler errors.
        """
        return None

    def _oldest_pos(self) -> int:
        return self._pos - min(self._pos, self._max_events)

    def _route_for(self, kind: str, seq: int) -> Route:
        if self._destinations:
            destination = self._destinations.get(seq)
            if destination is not None:
                direct = self._resolve_direct(destination, kind)
                if type(direct) is not tuple:
                    raise TypeError("_resolve_direct() must return a tuple")
                return direct
        found = self._routes.get(kind)
        if found is not None:
            return found
        route = self._resolve_route(kind)
        if type(route) is not tuple:
            raise TypeError("_resolve_route() must return a tuple")
        if len(self._routes) >= ROUTE_CACHE_LIMIT:
            # Bounded: a run that keeps inventing kinds re-resolves them
            # instead of growing the cache; a kind seen before is one lookup.
            self._routes.clear()
        self._routes[kind] = route
        return route

    def _deliver(
        self, event: WorldEvent, seq: int, route: Route, errors: list[Exception] | None
    ) -> list[Exception] | None:
        """Hand ``event`` to every entry of ``route``; collect errors to raise."""
        self._dispatched += 1
        if self._destinations:
            destination = self._destinations.pop(seq, None)
            if destination is not None and not route:
                problem = self._on_undeliverable(event, destination)
                if problem is not None:
                    if errors is None:
                        errors = []
                    errors.append(problem)
        for handler, subscription in route:
            try:
                result = handler(event)
                if result is not None and isawaitable(result):
                    # A sync handler that made a coroutine: it never ran, so
                    # the event is a handler error, never a delivery.
                    refuse_awaitable(result, handler)
            except Exception as error:
                self._handler_errors += 1
                if self._on_handler_error(event, subscription, error):
                    if errors is None:
                        errors = []
                    errors.append(error)
            else:
                self._delivered += 1
        return errors

    def _unspill(self, event: WorldEvent) -> None:
        """Remove ``event`` itself from the spill (by identity: comparing
        events would run code)."""
        for index, other in enumerate(self._spill):
            if other is event:
                del self._spill[index]
                return
        raise AssertionError(f"spilled event seq {event.seq} is missing")

    def _spilled_event(self, seq: int) -> WorldEvent:
        for event in self._spill:
            if event.seq == seq:
                return event
        raise AssertionError(f"pending event seq {seq} is missing")  # cannot happen

    def _deliver_ahead(
        self, position: int, seq: int, lane: int, errors: list[Exception] | None
    ) -> list[Exception] | None:
        """Dispatch the pending event at ``position`` ahead of its turn, taking it
        out of its lane and marking it done."""
        spilled = position < self._oldest_pos()
        if spilled:
            kind = self._spilled_event(seq).kind
        else:
            kind = self._slots[position % self._max_events].kind
        route = self._route_for(kind, seq)  # may run code that publishes
        event = None if spilled else self._event_at(position)
        if event is None:  # spilled, or overwritten meanwhile (and so spilled)
            spilled = True
            event = self._spilled_event(seq)
        if lane == URGENT:
            self._urgent.popleft()  # the lane's first: it is in position order
        else:
            self._levels.pop(seq, None)
        if spilled:
            self._unspill(event)
        self._done.add(position)
        return self._deliver(event, seq, route, errors)

    def _dispatch_by_lane(
        self, end: int, errors: list[Exception] | None
    ) -> tuple[list[Exception] | None, int]:
        """Dispatch the round's events (positions before ``end``) highest lane
        first, in seq order within a lane, each marked done; return the errors
        and how many were dispatched."""
        order: list[tuple[int, int, int]] = []
        spilled = iter(self._spill)
        done = self._done
        # The walk allocates: no collection (and so no finalizer that publishes)
        # runs while it reads the ring.
        collecting = gc.isenabled()
        gc.disable()
        try:
            urgent = {entry_seq for _position, entry_seq in self._urgent}
            oldest = self._oldest_pos()
            position = self._next_pos
            while position < end:
                if not (done and position in done):
                    if position < oldest:
                        seq = next(spilled).seq
                    else:
                        seq = self._slots[position % self._max_events].seq
                    lane = URGENT if seq in urgent else self._levels.get(seq, NORMAL)
                    order.append((-lane, position, seq))
                position += 1
        finally:
            if collecting:
                gc.enable()
        order.sort()
        total = 0
        for negative_lane, position, seq in order:
            errors = self._deliver_ahead(position, seq, -negative_lane, errors)
            total += 1
        return errors, total

    def _count_deliveries(self, delivered: int, handler_errors: int) -> None:
        """Add to the delivery counters (deliveries made outside :meth:`drain`'s loop)."""
        self._delivered += delivered
        self._handler_errors += handler_errors

    def drain(self, max_rounds: int | None = None) -> int:
        """Dispatch the pending events, in seq order; return how many.

        Each event goes to each matching subscriber in subscription order.
        Events published by handlers wait for the next drain, or, when
        ``max_rounds`` (default: the configured ``cascade_rounds``) is above
        one, for the next round of this drain.

        Raises
        ------
        ExceptionGroup
            One or more handlers raised and the error policy says to raise:
            raised once every event has been delivered to every subscriber.
        CascadeLimitError
            Handlers were still publishing after ``max_rounds`` rounds; their
            events stay pending.
        RuntimeError
            ``drain()`` was called from inside a handler.
        """
        rounds = (
            self._cascade_rounds if max_rounds is None else check_positive("max_rounds", max_rounds)
        )
        capacity = self._max_events
        total = 0
        errors: list[Exception] | None = None
        if get_ident() != self._owner:
            self._check_owner("drain")
        if self._draining:
            raise RuntimeError(
                "drain() was called from inside a handler; events published by "
                "handlers are dispatched by the next drain (or round)"
            )
        if self._producers and not self._inboxes_held:
            self._enter_inboxes()
        self._draining = True
        slots = self._slots
        done = self._done
        try:
            for _ in range(rounds):
                end = self._pos
                if self._next_pos >= end:
                    break
                if self._levels:
                    # "high" or "low" events: order the whole round by lane.
                    errors, dispatched = self._dispatch_by_lane(end, errors)
                    total += dispatched
                # The urgent lane first: urgent events pending when the round began.
                while self._urgent:
                    position, seq = self._urgent[0]
                    if position >= end:
                        break
                    errors = self._deliver_ahead(position, seq, URGENT, errors)
                    total += 1
                while self._next_pos < end:
                    position = self._next_pos
                    slot = self._next_slot
                    if done and position in done:
                        done.discard(position)  # dispatched by the urgent lane
                        self._next_pos = position + 1
                        self._next_slot = slot + 1 if slot + 1 < capacity else 0
                        continue
                    # position < _oldest_pos(), inlined (positions are never
                    # negative): it is read twice for every event.
                    spilled = position < self._pos - capacity
                    event = self._spill[0] if spilled else slots[slot]
                    seq = event.seq
                    route = self._route_for(event.kind, seq)  # may run code that publishes
                    if not spilled and position < self._pos - capacity:
                        # Overwritten meanwhile, so spilled: it is the spill's first.
                        spilled = True
                        event = self._spill[0]
                    if spilled:
                        self._spill.popleft()
                    else:
                        view = self._view_at(position, slot)
                        # None only if overwritten since the check: no code ran since.
                        event = self._spill.popleft() if view is None else view
                    self._next_pos = position + 1
                    self._next_slot = slot + 1 if slot + 1 < capacity else 0
                    total += 1
                    errors = self._deliver(event, seq, route, errors)
        finally:
            self._draining = False
        left = self._pending_count()
        if rounds > 1 and left:
            cascade = CascadeLimitError(cascade_limit_message(rounds, left))
            if errors is None:
                raise cascade
            errors.append(cascade)
        if errors is not None:
            raise ExceptionGroup(handler_errors_message(len(errors)), errors)
        return total

    # -- reading -------------------------------------------------------
    def get_since(
        self, seq: int, kinds: Container[str] | None = None, limit: int | None = None
    ) -> list[WorldEvent]:
        """Return retained events with ``.seq > seq``, oldest first.

        Parameters
        ----------
        seq
            Return only events after this seq (0: everything retained).
        kinds
            If given, only events whose kind is ``in kinds``.
        limit
            At most this many events (the oldest of those that match).
        """
        since = check_non_negative("seq", seq)
        wanted = check_limit(limit)
        if get_ident() != self._owner:
            # Twin only: the owner thread may run between any two bytecodes
            # of this read, so another thread reads a consistent copy. (The
            # compiled core holds the GIL for the whole read.)
            return self._reader_copy().get_since(since, kinds, limit)
        # ``kinds`` is asked about each kind first, which may run code (and
        # that code may publish); the events are then read with no code
        # running, so what comes back is every match from the oldest event
        # still retained on: the ring overwrites its oldest events first.
        verdicts: dict[str, bool] = {}
        out: list[WorldEvent] = []
        position = self._first_after(since)
        end = self._pos  # only events accepted before the call
        while True:
            if kinds is not None:
                self._judge_kinds(position, end, kinds, wanted, verdicts)  # may run code
            # The first allocation, before the ring is read: a collection it
            # runs (and any finalizer that publishes) happens before the read.
            out = []
            collecting = gc.isenabled()
            gc.disable()  # the read allocates: no collection midway
            try:
                position = max(position, self._oldest_pos())
                while position < end:
                    if wanted is not None and len(out) >= wanted:
                        break
                    if kinds is not None:
                        verdict = verdicts.get(self._slots[position % self._max_events].kind)
                        if verdict is None:
                            break  # a kind not judged yet: judge from here, then read again
                        if verdict is False:
                            position += 1
                            continue
                    # never None: no code has run since the position was checked
                    out.append(self._event_at(position))  # type: ignore[arg-type]
                    position += 1
                else:
                    return out
                if wanted is not None and len(out) >= wanted:
                    return out
            finally:
                if collecting:
                    gc.enable()
            position = self._first_after(since)

    def _first_after(self, since: int) -> int:
        """Position of the oldest retained event with ``.seq > since`` (``_pos``
        if none): seqs grow with positions."""
        low = self._oldest_pos()
        high = self._pos
        while low < high:
            middle = (low + high) >> 1
            if self._slots[middle % self._max_events].seq > since:
                high = middle
            else:
                low = middle + 1
        return low

    def _judge_kinds(
        self,
        position: int,
        end: int,
        kinds: Container[str],
        wanted: int | None,
        verdicts: dict[str, bool],
    ) -> None:
        """Ask ``kinds`` about the kind of each event from ``position`` to
        ``end``, once per kind, until ``wanted`` of them match; the answers go
        into ``verdicts``. Asking may run code that publishes: events it
        overwrites are passed over."""
        matches = 0
        while position < end and (wanted is None or matches < wanted):
            if position < self._oldest_pos():
                position = self._oldest_pos()
                continue
            kind = self._slots[position % self._max_events].kind
            verdict = verdicts.get(kind)
            if verdict is None:
                verdict = verdicts[kind] = bool(kind in kinds)  # may run code
            if verdict is True:
                matches += 1
            position += 1

    def _reader_copy(self) -> RingCore:
        """Twin only: a copy of the ring for a reader in another thread.

        The owner thread stores an event in two steps (the slot, then
        ``_pos``); a copy taken between them, or while ``_pos`` moved, is
        taken again. Copying the slot list is one C call, so the owner
        thread cannot run in the middle of it.
        """
        copy = _new(RingCore)
        while True:
            position = self._pos
            slots = self._slots[:]
            if not self._storing and self._pos == position:
                break
        copy._slots = slots
        copy._pos = position
        copy._max_events = self._max_events
        copy._owner = get_ident()
        return copy

    def latest_seq(self) -> int:
        """Seq of the newest accepted event (``0`` before the first)."""
        return self._seq

    def oldest_seq(self) -> int:
        """Seq of the oldest retained event (``0`` when none is retained)."""
        while True:
            position = self._pos
            if position == 0:
                return 0
            seq = self._slots[self._oldest_pos() % self._max_events].seq
            # Twin only: a reader in another thread reads again if the owner
            # thread was storing meanwhile (see _reader_copy).
            if not self._storing and self._pos == position:
                return seq

    def pending_count(self) -> int:
        """Number of events waiting for :meth:`drain`."""
        return self._pending_count()

    def pending_events(self) -> list[WorldEvent]:
        """The events waiting for :meth:`drain`, in seq order."""
        # Allocated (and so any collection run) before the bus is looked at.
        out: list[WorldEvent] = []
        collecting = gc.isenabled()
        gc.disable()  # no collection while reading
        try:
            out.extend(self._spill)
            position = max(self._next_pos, self._oldest_pos())
            while position < self._pos:
                if not (self._done and position in self._done):
                    event = self._event_at(position)
                    if event is not None:  # no code runs meanwhile: never None
                        out.append(event)
                position += 1
        finally:
            if collecting:
                gc.enable()
        return out

    def __len__(self) -> int:
        return min(self._pos, self._max_events)

    def stats(self) -> dict[str, int]:
        """Counters of the bus.

        ``published``, ``dispatched`` (events drained), ``delivered`` (handler
        calls that returned), ``handler_errors``, ``overwritten``, ``pending``
        and ``retained``.
        """
        return {
            "published": self._published,
            "dispatched": self._dispatched,
            "delivered": self._delivered,
            "handler_errors": self._handler_errors,
            "overwritten": self._overwritten,
            "pending": self._pending_count(),
            "retained": min(self._pos, self._max_events),
        }


# -- journal lines -------------------------------------------------------------
# The journal's per-event work: the canonical JSON of an event record, the
# SHA-256 chain over it, the lines of a drain in one buffer, and a reader that
# accepts a line only when it is exactly what the writer lays out.


def _refuse_value(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
# allow_nan=False), with the encoder made once.
_json_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
if _json_encoder is not None:
    _json_encoder = _json_encoder(
        None,
        _refuse_value,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        True,
        False,
        False,
    )
else:  # pragma: no cover - CPython always has the C encoder
    _json_encoder = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).iterencode


_escape: Callable[[str], str] = json.encoder.encode_basestring_ascii


def encode_value(value: object) -> str:
    """Return the canonical JSON of a payload value.

    Exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True, allow_nan=False)``, with its errors.
    """
    return "".join(_json_encoder(value, 0))


def _value_text(value: object) -> str:
    kind = type(value)
    if kind is str:
        return _escape(value)  # type: ignore[arg-type]
    if kind is int:
        return int.__repr__(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return encode_value(value)


def _as_event(event: Any) -> WorldEvent:
    if type(event) is WorldEvent:
        return event
    return WorldEvent(
        event.seq,
        event.tick,
        event.day,
        event.kind,
        event.polity_id,
        event.ward_id,
        event.actor_id,
        event.subject_id,
        event.payload,
        event.tags,
    )


def encode_event(event: Any) -> str:
    """Return the canonical JSON of an event's record, as the journal writes it.

    Exactly ``json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"),
    ensure_ascii=True)``, without building the dict.
    """
    event = _as_event(event)
    payload = event.payload
    for key, _value in payload:
        if type(key) is not str:
            raise TypeError("payload keys must be str")
    body = ",".join(
        [_escape(key) + ":" + _value_text(value) for key, value in sorted(payload, key=_first)]
    )
    actor, polity, subject, ward = event.actor_id, event.polity_id, event.subject_id, event.ward_id
    return (
        f'{{"actor_id":{"null" if actor is None else _escape(actor)},"day":{event.day},'
        f'"kind":{_escape(event.kind)},"payload":{{{body}}},'
        f'"polity_id":{"null" if polity is None else _escape(polity)},"seq":{event.seq},'
        f'"subject_id":{"null" if subject is None else _escape(subject)},'
        f'"tags":[{",".join(map(_escape, event.tags))}],"tick":{event.tick},'
        f'"ward_id":{"null" if ward is None else _escape(ward)}}}'
    )


def _first(pair: tuple[str, object]) -> str:
    return pair[0]


def sha256_hex(data: bytes, portable: bool = False) -> str:
    """Return the SHA-256 of ``data`` (bytes) as 64 lowercase hex digits.

    ``portable`` uses the portable implementation even where the compiled
    core would use the CPU's SHA instructions (the twin always uses
    :mod:`hashlib`); both give the same digest.
    """
    if type(data) is not bytes:
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return _sha256(data).hexdigest()


class JournalChain:
    """The per-event work of a journal: encode, chain, buffer.

    :meth:`append` turns an event into its journal line (the canonical JSON
    of its record, then ``"hash"``: SHA-256 of the previous line's hash and
    those bytes) and adds it to a buffer that the journal writes with one
    ``write`` per drain; it keeps the chain head, the last seq, tick and day
    and the counts that place checkpoints.

    Parameters
    ----------
    chained
        Add a ``"hash"`` member to every line.
    checkpoint_every
        Call ``checkpoint`` once this many events follow the last mark
        (``0``: never).
    checkpoint_on_day
        Set :attr:`day_ended` when an event of kind ``day_kind`` or of
        another day than the last mark is appended.
    day_kind
        The kind that ends a day.
    checkpoint
        Called without arguments when a checkpoint is due; it adds the mark
        with :meth:`add_text`.
    """

    def __init__(
        self,
        chained: bool,
        checkpoint_every: int,
        checkpoint_on_day: bool,
        day_kind: str,
        checkpoint: Callable[[], object],
    ) -> None:
        if not callable(checkpoint):
            raise TypeError("checkpoint must be callable")
        self._chained = bool(chained)
        self.checkpoint_every = check_non_negative("checkpoint_every", checkpoint_every)
        self.checkpoint_on_day = bool(checkpoint_on_day)
        self._day_kind = check_kind(day_kind)
        self._checkpoint = checkpoint
        self._head = ""
        self._lines: list[str] = []
        self._size = 0
        self._last: tuple[int, int, int] | None = None
        self._mark_day: int | None = None
        self.events = 0
        self.appended = 0
        self.since_mark = 0
        self.day_ended = False
        self._saved: tuple[Any, ...] = ("", None, None, 0, 0, 0)

    @property
    def chained(self) -> bool:
        return self._chained

    @property
    def last_hash(self) -> str:
        """The chain head: the last line's hash (or the genesis), ``""`` if none."""
        return self._head

    @last_hash.setter
    def last_hash(self, value: str) -> None:
        if type(value) is not str or len(value) not in (0, 64) or not value.isascii():
            raise ValueError("a chain hash is 64 hex digits (or empty before the first line)")
        self._head = value

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event, or ``None``."""
        return None if self._last is None else self._last[0]

    @property
    def last_tick(self) -> int | None:
        """The tick of the last event, or ``None``."""
        return None if self._last is None else self._last[1]

    @property
    def last_day(self) -> int | None:
        """The day of the last event, or ``None``."""
        return None if self._last is None else self._last[2]

    def set_last(self, seq: int | None, tick: int | None, day: int | None) -> None:
        """Set the last event's seq, tick and day (all ``None``: no event yet)."""
        if seq is None:
            self._last = None
            return
        self._last = (
            check_non_negative("seq", seq),
            check_non_negative("tick", tick),
            check_non_negative("day", day),
        )

    @property
    def mark_day(self) -> int | None:
        """The day of the last mark (or first event after it), or ``None``."""
        return self._mark_day

    @mark_day.setter
    def mark_day(self, value: int | None) -> None:
        self._mark_day = None if value is None else check_non_negative("day", value)

    @property
    def pending_size(self) -> int:
        """Bytes of lines not yet taken."""
        return self._size

    def pending(self) -> bytes:
        """Return the lines not yet taken, as bytes (they stay until :meth:`clear`)."""
        return "".join(self._lines).encode("ascii")

    def clear(self) -> None:
        """Drop the lines not yet taken."""
        self._lines.clear()
        self._size = 0

    def _close_line(self, body: str) -> None:
        """Chain the record ``body`` (it ends with ``}``) and end its line."""
        if self._chained:
            digest = _sha256((self._head + body).encode("ascii")).hexdigest()
            line = f'{body[:-1]},"hash":"{digest}"}}\n'
            self._head = digest
        else:
            line = body + "\n"
        self._lines.append(line)
        self._size += len(line)

    def commit(self) -> None:
        """Drop the lines not yet taken (they were written) and remember the state."""
        self.clear()
        self._saved = (
            self._head,
            self._last,
            self._mark_day,
            self.events,
            self.since_mark,
            self.appended,
        )

    def rollback(self) -> None:
        """Drop the lines not yet taken and return to the state of the last :meth:`commit`."""
        self.clear()
        (
            self._head,
            self._last,
            self._mark_day,
            self.events,
            self.since_mark,
            self.appended,
        ) = self._saved
        self.day_ended = False

    def mark_text(self, mark: str) -> str:
        """Return the canonical JSON of a checkpoint or seal record (without a signature).

        ``{"day", "events", "head", "mark", "seq", "tick"}`` from the chain's
        state: the last event's day, seq and tick (``null`` before the
        first), the event count, and the head (``null`` if not chained).
        """
        if type(mark) is not str or not mark.isascii() or not mark.isalpha():
            raise ValueError(f"a mark is a plain word, got {mark!r}")
        last = self._last
        seq, tick, day = ("null", "null", "null") if last is None else map(str, last)
        head = f'"{self._head}"' if self._chained else "null"
        return (
            f'{{"day":{day},"events":{self.events},"head":{head},"mark":"{mark}",'
            f'"seq":{seq},"tick":{tick}}}'
        )

    def add_text(self, body: str) -> None:
        """Add a line whose record is ``body``: canonical JSON of an object, ASCII."""
        if type(body) is not str or not body.isascii() or not body.endswith("}"):
            raise ValueError("a journal record is the canonical JSON text of an object")
        self._close_line(body)

    def append(self, event: Any) -> None:
        """Add the line of ``event`` (its seq must follow the last one's).

        Raises
        ------
        ValueError
            The event's seq is not after the last appended one.
        """
        event = _as_event(event)
        seq = event.seq
        last = self._last
        if last is not None and seq <= last[0]:
            raise ValueError(
                f"event seq {seq} is not after the last journaled seq {last[0]}: "
                "a journal is appended in seq order"
            )
        self._close_line(encode_event(event))
        day = event.day
        self._last = (seq, event.tick, day)
        self.events += 1
        self.appended += 1
        self.since_mark += 1
        if self.checkpoint_on_day and (
            (self._mark_day is not None and day != self._mark_day) or event.kind == self._day_kind
        ):
            self.day_ended = True
        if self._mark_day is None:
            self._mark_day = day
        if self.checkpoint_every and self.since_mark >= self.checkpoint_every:
            self._checkpoint()

    __call__ = append


_LINE_KEYS = [*sorted(FIELDS), "hash"]
_MIN_INT = -(2**63)
_MAX_INT = 2**63 - 1


def _plain(text: str) -> bool:
    """Whether ``text`` is written in JSON without any escape."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def read_event_line(line: bytes, prev: str) -> tuple[int, int, int, str, str] | None:
    """Return ``(seq, tick, day, kind, hash)`` of an event line the writer laid out, else ``None``.

    ``line`` (without its newline) is accepted only when it is exactly the
    canonical JSON of an event record whose payload values are ``null``,
    booleans, 64-bit ints, finite floats or strings, whose kind and payload
    keys need no escapes, followed by the ``"hash"`` member, and that hash
    is SHA-256 of ``prev`` (64 ASCII characters) and the record's bytes.
    Anything else returns ``None`` and is for the caller to explain.
    """
    if type(line) is not bytes or type(prev) is not str:
        return None
    if len(prev) != 64 or not prev.isascii():
        return None
    if len(line) < 76 or line[-75:-66] != b',"hash":"' or line[-2:] != b'"}':
        return None
    if not line.isascii():
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if type(record) is not dict or list(record) != _LINE_KEYS:
        return None
    seq, tick, day, kind = record["seq"], record["tick"], record["day"], record["kind"]
    for number in (seq, tick, day):
        if type(number) is not int or not 0 <= number <= _MAX_INT:
            return None
    if type(kind) is not str or not kind or not _plain(kind):
        return None
    for name in ("polity_id", "ward_id", "actor_id", "subject_id"):
        if record[name] is not None and type(record[name]) is not str:
            return None
    payload = record["payload"]
    if type(payload) is not dict:
        return None
    for key, value in payload.items():
        if not _plain(key):
            return None
        kind_of = type(value)
        if kind_of is int:
            if not _MIN_INT <= value <= _MAX_INT:
                return None
        elif kind_of is float:
            if not isfinite(value):
                return None
        elif not (value is None or kind_of is bool or kind_of is str):
            return None
    tags = record["tags"]
    if type(tags) is not list or not all(type(tag) is str for tag in tags):
        return None
    stored = record.pop("hash")
    body = line[:-75] + b"}"
    if encode_value(record).encode("ascii") != body:
        return None
    digest = _sha256(prev.encode("ascii") + body).hexdigest()
    if digest != stored:
        return None
    return seq, tick, day, kind, digest
