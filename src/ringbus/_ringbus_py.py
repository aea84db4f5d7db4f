"""Pure-Python twin of the compiled core ``ringbus._ringbus``.

This module is the readable reference: the extension matches it name for
name, result for result, exception for exception and message for message.
It is used when the extension is not built or ``RINGBUS_NO_EXTENSIONS`` is
set, and it is what type checkers see.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container
from typing import Any

from ._errors import (
    CascadeLimitError,
    PendingOverflowError,
    RingFullError,
    cascade_limit_message,
    clock_back_message,
    event_before_clock_message,
    handler_errors_message,
    pending_overflow_message,
    ring_full_message,
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

__all__ = ["FIELDS", "DROP_POLICIES", "ROUTE_CACHE_LIMIT", "RingCore", "WorldEvent"]


Payload = tuple[tuple[str, Any], ...]
Route = tuple[tuple[Callable[[Any], object], object], ...]

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

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(f"{type(self).__name__} cannot be pickled: use snapshot()")

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
        if lane == URGENT:
            self._urgent.append(self._pending[-1])
        elif lane != NORMAL:
            self._levels[seq] = lane
        if destination is not None:
            self._destinations[seq] = destination

    def pending_routing(self) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
        """``(seq, lane)`` of pending events not in the normal lane, in seq order, and
        ``(seq, destination)`` of pending direct ones."""
        lanes = [(event.seq, URGENT) for event in self._urgent]
        lanes += self._levels.items()
        return sorted(lanes), sorted(self._destinations.items())

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
                handler(event)
            except Exception as error:
                self._handler_errors += 1
                if self._on_handler_error(event, subscription, error):
                    errors.append(error)
            else:
                self._delivered += 1

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
        if self._draining:
            raise RuntimeError(
                "drain() was called from inside a handler; events published by "
                "handlers are dispatched by the next drain (or round)"
            )
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
                if self._levels:
                    # "high" or "low" events: order the whole round by lane.
                    total += self._dispatch_by_lane(last, errors)
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

    def _dispatch_by_lane(self, last: int, errors: list[Exception]) -> int:
        """Dispatch the round's events (seqs up to ``last``) highest lane first,
        in seq order within a lane, marking each done; return how many."""
        done = self._done
        levels = self._levels
        urgent = {event.seq for event in self._urgent}
        order: list[tuple[int, int, WorldEvent]] = []
        for event in self._pending:
            seq = event.seq
            if seq > last:
                break
            if seq not in done:
                lane = URGENT if seq in urgent else levels.get(seq, NORMAL)
                order.append((-lane, seq, event))
        order.sort(key=_lane_order)
        for negative_lane, seq, event in order:
            route = self._route_of(event)
            if negative_lane == -URGENT:
                self._urgent.popleft()  # the lane's first: it is in seq order
            else:
                levels.pop(seq, None)
            done.add(seq)
            self._deliver(event, route, errors)
        return len(order)

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


def _lane_order(entry: tuple[int, int, WorldEvent]) -> tuple[int, int]:
    return entry[0], entry[1]
