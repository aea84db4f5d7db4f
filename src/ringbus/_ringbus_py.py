"""Pure-Python twin of the compiled core ``ringbus._ringbus``.

This module is the readable reference: the extension matches it name for
name, result for result, exception for exception and message for message.
It is used when the extension is not built or ``RINGBUS_NO_EXTENSIONS`` is
set, and it is what type checkers see.
"""

from __future__ import annotations

import threading
from _thread import get_ident
from collections import deque
from collections.abc import Callable, Container
from inspect import isawaitable
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
    check_id,
    check_kind,
    check_limit,
    check_non_negative,
    check_positive,
    event_args_from_dict,
    jsonify,
    normalise_payload,
    normalise_tags,
)

__all__ = ["FIELDS", "DROP_POLICIES", "ROUTE_CACHE_LIMIT", "Producer", "RingCore", "WorldEvent"]


Payload = tuple[tuple[str, Any], ...]
Route = tuple[tuple[Callable[[Any], object], object], ...]
# A producer's inbox entry: kind, tick, day (-1: the bus clock when it enters
# the ring), the four ids, the payload pairs and the tags, all validated.
InboxEntry = tuple[
    str, int, int, str | None, str | None, str | None, str | None, Payload, tuple[str, ...]
]

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
        """Return the payload as a new dict; the event is untouched."""
        return dict(self.payload)

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
    _set(event, "seq", seq)
    _set(event, "tick", tick)
    _set(event, "day", day)
    _set(event, "kind", kind)
    _set(event, "polity_id", polity_id)
    _set(event, "ward_id", ward_id)
    _set(event, "actor_id", actor_id)
    _set(event, "subject_id", subject_id)
    _set(event, "payload", payload)
    _set(event, "tags", tags)


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
            kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags
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
        self._ring: deque[WorldEvent] = deque(maxlen=self._max_events)
        self._pending: deque[WorldEvent] = deque()
        # Urgent lane: pending urgent events (also in _pending, in seq order);
        # _done holds the seqs of those already dispatched ahead of their turn.
        self._urgent: deque[WorldEvent] = deque()
        self._done: set[int] = set()
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
        if get_ident() != self._owner:
            self._check_owner("publish")
        kind = check_kind(kind)
        # -1: the bus clock, read when the event is stored.
        tick_value = -1 if tick is None else check_non_negative("tick", tick)
        day_value = -1 if day is None else check_non_negative("day", day)
        polity_id = check_id("polity_id", polity_id)
        ward_id = check_id("ward_id", ward_id)
        actor_id = check_id("actor_id", actor_id)
        subject_id = check_id("subject_id", subject_id)
        pairs = normalise_payload(payload, self._max_payload_items)
        tag_tuple = normalise_tags(tags)
        # Allocated before anything is decided: the allocation may run the
        # cyclic GC, and a finalizer that publishes must not take a seq (or
        # move the clock) in between.
        event = _new(WorldEvent)
        self._admit(tick_value, day_value)
        self._seq += 1
        _fill_event(
            event,
            self._seq,
            self._tick if tick_value < 0 else tick_value,
            self._day if day_value < 0 else day_value,
            kind,
            polity_id,
            ward_id,
            actor_id,
            subject_id,
            pairs,
            tag_tuple,
        )
        self._store(event)
        return self._seq

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
        if event.seq <= self._seq:
            raise ValueError(
                f"event seq {event.seq} is not after latest_seq {self._seq}: "
                "ingested seqs must increase"
            )
        if len(event.payload) > self._max_payload_items:
            raise ValueError(
                f"event seq {event.seq} has {len(event.payload)} payload items, "
                f"more than max_payload_items={self._max_payload_items}"
            )
        self._admit(event.tick, event.day)
        self._seq = event.seq
        self._store(event)
        return self._seq

    def _publish_routed(
        self,
        urgent: bool,
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
        """Publish into the urgent lane and/or to one destination (see EventBus)."""
        if destination is not None and (type(destination) is not str or not destination):
            raise TypeError(f"destination must be a non-empty str, got {destination!r}")
        lane = bool(urgent)  # user code: before the event is stored
        seq = self.publish(
            kind,
            tick,
            day,
            polity_id=polity_id,
            ward_id=ward_id,
            actor_id=actor_id,
            subject_id=subject_id,
            payload=payload,
            tags=tags,
        )
        if seq:
            self._mark(seq, lane, destination)
        return seq

    def _ingest_routed(self, event: WorldEvent, urgent: bool, destination: str | None) -> int:
        """``ingest`` into the urgent lane and/or to one destination (restore)."""
        if destination is not None and (type(destination) is not str or not destination):
            raise TypeError(f"destination must be a non-empty str, got {destination!r}")
        lane = bool(urgent)  # user code: before the event is stored
        seq = self.ingest(event)
        if seq:
            self._mark(seq, lane, destination)
        return seq

    def _mark(self, seq: int, urgent: bool, destination: str | None) -> None:
        if urgent:
            self._urgent.append(self._pending[-1])
        if destination is not None:
            self._destinations[seq] = destination

    def pending_routing(self) -> tuple[list[int], list[tuple[int, str]]]:
        """Seqs of pending urgent events, and ``(seq, destination)`` of pending direct ones."""
        return (
            [event.seq for event in self._urgent],
            sorted(self._destinations.items()),
        )

    def _admit(self, tick: int, day: int) -> None:
        """Refuse an event at ``tick`` and ``day`` (-1: the clock's) if it may not be stored."""
        if self._monotonic and 0 <= tick < self._tick:
            raise ValueError(event_before_clock_message("tick", tick, self._tick))
        if self._monotonic and 0 <= day < self._day:
            raise ValueError(event_before_clock_message("day", day, self._day))
        if len(self._pending) - len(self._done) >= self._max_pending:
            raise PendingOverflowError(pending_overflow_message(self._max_pending))
        if self._raise_when_full and len(self._ring) >= self._max_events:
            raise RingFullError(ring_full_message(self._max_events))

    def _store(self, event: WorldEvent) -> None:
        if self._monotonic:  # an event later than the clock moves it forward
            self._tick = event.tick
            self._day = event.day
        if len(self._ring) == self._max_events:
            self._overwritten += 1
        self._ring.append(event)
        self._pending.append(event)
        self._published += 1

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
        rebuilding: bool = False,
    ) -> InboxEntry:
        """Check an event as :meth:`publish` does; return it as an inbox entry.

        ``rebuilding`` takes a payload already cut to ``max_payload_items``
        (one that ends with the truncation marker), as a snapshot holds it.
        """
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
        )

    def _enter(self, entry: InboxEntry) -> int:
        """Store one inbox entry as the next event (as :meth:`publish` does)."""
        kind, tick_value, day_value, polity_id, ward_id, actor_id, subject_id, pairs, tags = entry
        event = _new(WorldEvent)
        self._admit(tick_value, day_value)
        self._seq += 1
        _fill_event(
            event,
            self._seq,
            self._tick if tick_value < 0 else tick_value,
            self._day if day_value < 0 else day_value,
            kind,
            polity_id,
            ward_id,
            actor_id,
            subject_id,
            pairs,
            tags,
        )
        self._store(event)
        return self._seq

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

    def _route_of(self, event: WorldEvent) -> Route:
        destinations = self._destinations
        destination = destinations.get(event.seq) if destinations else None
        if destination is not None:
            direct = self._resolve_direct(destination, event.kind)
            if type(direct) is not tuple:
                raise TypeError("_resolve_direct() must return a tuple")
            return direct
        cached = self._routes.get(event.kind)
        if cached is not None:
            return cached
        route = self._resolve_route(event.kind)
        if type(route) is not tuple:
            raise TypeError("_resolve_route() must return a tuple")
        if len(self._routes) >= ROUTE_CACHE_LIMIT:
            # Bounded: a run that keeps inventing kinds re-resolves them
            # instead of growing the cache; a kind seen before is one lookup.
            self._routes.clear()
        self._routes[event.kind] = route
        return route

    def _deliver(self, event: WorldEvent, route: Route, errors: list[Exception]) -> None:
        self._dispatched += 1
        destination = self._destinations.pop(event.seq, None) if self._destinations else None
        if destination is not None and not route:
            error = self._on_undeliverable(event, destination)
            if error is not None:
                errors.append(error)
        for handler, subscription in route:
            try:
                result = handler(event)
                if result is not None and isawaitable(result):
                    refuse_awaitable(result, handler)  # never counted as delivered
            except Exception as error:
                self._handler_errors += 1
                if self._on_handler_error(event, subscription, error):
                    errors.append(error)
            else:
                self._delivered += 1

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
        errors: list[Exception] = []
        total = 0
        pending = self._pending
        urgent = self._urgent
        done = self._done
        try:
            for _ in range(rounds):
                count = len(pending)
                if count == len(done):
                    break
                last = pending[-1].seq
                # The urgent lane first: urgent events pending when the round began.
                while urgent and urgent[0].seq <= last:
                    event = urgent[0]
                    route = self._route_of(event)
                    urgent.popleft()
                    done.add(event.seq)
                    total += 1
                    self._deliver(event, route, errors)
                for _ in range(count):
                    event = pending[0]
                    if done and event.seq in done:
                        pending.popleft()
                        done.discard(event.seq)
                        continue
                    route = self._route_of(event)
                    pending.popleft()
                    total += 1
                    self._deliver(event, route, errors)
        finally:
            self._draining = False
        left = len(pending) - len(done)
        if rounds > 1 and left:
            cascade = CascadeLimitError(cascade_limit_message(rounds, left))
            if not errors:
                raise cascade
            errors.append(cascade)
        if errors:
            raise ExceptionGroup(handler_errors_message(len(errors)), errors)
        return total

    # -- reading -------------------------------------------------------
    def _retained(self) -> tuple[WorldEvent, ...]:
        # Another thread may append while we copy; copy again until clean.
        while True:
            try:
                return tuple(self._ring)
            except RuntimeError:
                continue

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
        seq = check_non_negative("seq", seq)
        limit = check_limit(limit)
        retained = self._retained()
        start = len(retained)
        while start and retained[start - 1].seq > seq:
            start -= 1
        out: list[WorldEvent] = []
        for event in retained[start:]:
            if limit is not None and len(out) >= limit:
                break
            if kinds is not None and event.kind not in kinds:
                continue
            out.append(event)
        return out

    def latest_seq(self) -> int:
        """Seq of the newest accepted event (``0`` before the first)."""
        return self._seq

    def oldest_seq(self) -> int:
        """Seq of the oldest retained event (``0`` when none is retained)."""
        retained = self._retained()
        return retained[0].seq if retained else 0

    def pending_count(self) -> int:
        """Number of events waiting for :meth:`drain`."""
        return len(self._pending) - len(self._done)

    def pending_events(self) -> list[WorldEvent]:
        """The events waiting for :meth:`drain`, in seq order."""
        done = self._done
        return [event for event in self._pending if not done or event.seq not in done]

    def __len__(self) -> int:
        return len(self._ring)

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
            "pending": len(self._pending) - len(self._done),
            "retained": len(self._ring),
        }
