"""The :class:`EventBus` facade: subscriptions, error policy, snapshots.

``EventBus`` subclasses the active core (:class:`ringbus._backend.RingCore`),
so ``publish`` and ``drain`` are the core's own methods: with the compiled
core, the hot path never runs a line of Python.
"""

from __future__ import annotations

import json
import logging
import operator
import threading
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self, TypeVar, Unpack

from . import _backend
from ._aio import (
    AsyncEntry,
    AsyncHandler,
    AsyncTier,
    EventStream,
    Overflow,
    check_overflow,
)
from ._backend import RingCore, WorldEvent
from ._config import ERROR_POLICIES, ErrorPolicy, EventBusConfig
from ._deadletter import DeadLetterQueue
from ._deliveries import DeliveryRecord, DeliveryTracker
from ._errors import (
    CascadeLimitError,
    UnknownDestinationError,
    cascade_limit_message,
    handler_errors_message,
)
from ._handlers import FilteredHandler, check_filters
from ._normalise import (
    NORMAL,
    URGENT,
    EventFields,
    check_non_negative,
    check_positive,
    event_field_args,
)
from ._registry import (
    Handler,
    KindSelector,
    Registry,
    Subscription,
    async_handler_message,
    is_async_callable,
    member_of,
)
from ._schedule import SCHEDULE_FIELDS, Schedule
from ._snapshot import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    LoadHook,
    SaveHook,
    SnapshotHooks,
    prepare_restore,
    take_snapshot,
)

__all__ = ["SNAPSHOT_FORMAT", "SNAPSHOT_VERSION", "EventBus", "bus_class_for"]

logger = logging.getLogger("ringbus")
_TIER_LOCK = threading.Lock()

#: A handler type that ``EventBus.on`` gives back unchanged.
_H = TypeVar("_H", bound=Callable[..., object])


if TYPE_CHECKING:
    _Core = RingCore
else:
    _Core = object


class EventBusBase(_Core):
    """A deterministic, in-process event bus for simulation loops.

    Parameters
    ----------
    config
        How the bus behaves; ``None`` takes :class:`EventBusConfig` defaults.

    Examples
    --------
    >>> from ringbus import EventBus, kinds
    >>> bus = EventBus()
    >>> seen = []
    >>> sub = bus.subscribe(seen.append, kinds={kinds.DEPOT_BUILT})
    >>> bus.set_clock(tick=5, day=1)
    >>> bus.publish(kinds.DEPOT_BUILT, subject_id="depot-7", payload={"cost": 40})
    1
    >>> bus.drain()
    1
    >>> seen[0].subject_id, seen[0].tick, seen[0].payload
    ('depot-7', 5, (('cost', 40),))
    """

    _world_event: type[WorldEvent]

    def __init__(self, config: EventBusConfig | None = None) -> None:
        if config is None:
            config = EventBusConfig()
        elif not isinstance(config, EventBusConfig):
            raise TypeError(f"config must be an EventBusConfig, got {type(config).__name__}")
        super().__init__(
            max_events=config.max_events,
            max_payload_items=config.max_payload_items,
            max_pending=config.max_pending,
            enabled=config.enabled,
            drop_policy=config.drop_policy,
            cascade_rounds=config.cascade_rounds,
            clock_policy=config.clock_policy,
        )
        self._config = config
        self._registry = Registry()
        self._snapshot_hooks = SnapshotHooks()
        self._schedule = Schedule()
        self._drain_starts: list[Callable[[], object]] = []
        self._drain_ends: list[Callable[[], object]] = []
        self._error_policies: dict[int, ErrorPolicy] = {}
        self._weak_subscriptions: dict[int, Subscription] = {}
        self._collected = 0
        self._collected_pending = False
        self._dead_letters = DeadLetterQueue(
            config.max_retries,
            config.retry_backoff_ticks,
            config.dead_letter_limit,
            self._live_subscription,
        )
        # Made when the async tier is first used: a bus that never uses it
        # pays one attribute check per drain.
        self._tier: AsyncTier | None = None
        if config.error_policy == "dead_letter":
            self._listen_for_retries()

    def _async_tier(self) -> AsyncTier:
        tier = self._tier
        if tier is None:
            with _TIER_LOCK:  # a stream may be made in another thread
                tier = self._tier
                if tier is None:
                    tier = self._tier = AsyncTier(self)
        return tier

    @property
    def config(self) -> EventBusConfig:
        """The configuration this bus was made with."""
        return self._config

    # -- subscriptions -------------------------------------------------
    def subscribe(
        self,
        handler: Handler,
        *,
        kinds: Iterable[str] | str | None = None,
        name: str | None = None,
        priority: int = 0,
        group: str | None = None,
        group_key: str | Callable[[Any], object] | None = None,
        error_policy: ErrorPolicy | None = None,
        once: bool = False,
        weak: bool = False,
        polity_id: str | None = None,
        ward_id: str | None = None,
        actor_id: str | None = None,
        subject_id: str | None = None,
        tags_any: Iterable[str] | None = None,
        where: Callable[[WorldEvent], object] | None = None,
    ) -> Subscription:
        """Call ``handler(event)`` for every matching event from the next one on.

        Parameters
        ----------
        handler
            A callable taking one :class:`WorldEvent`.
        kinds
            Selectors of the kinds to receive; ``None`` receives every kind.
            Exact kinds, fnmatch globs (``"DELIVERY_*"``), prefixes ending in
            ``/`` (``"cognition/"``) and colon segment globs
            (``"data:*:created"``, ``"agent:**"``), mixed freely.
        name
            Optional label used in error notes (and, in a group, to place
            keys).
        priority
            Higher priorities receive each event first; equal ones in
            subscription order.
        group
            Join this load-balanced group: each event goes to exactly one
            member (round-robin, or by ``group_key``).
        group_key
            With ``group``: an event field name (``"subject_id"``) or a
            callable taking the event; events with the same key go to the
            same member. Every member of a group passes the same one.
        error_policy
            ``"raise"``, ``"log"`` or ``"dead_letter"`` for this subscription's
            errors; ``None`` follows :attr:`EventBusConfig.error_policy`.
        once
            Deliver one event at most, then end the subscription. With a
            ``name``, a ``once`` subscription that took its event stays ended
            across :meth:`snapshot`/:meth:`restore`.
        weak
            Hold ``handler`` by a weak reference (default ``False``: the bus
            keeps it alive): when its object is collected, the subscription
            ends at the next drain and ``stats()["subscriptions_collected"]``
            counts it. Use it for bound methods of objects the bus should
            not keep alive.
        polity_id, ward_id, actor_id, subject_id
            Field filters: only events whose field equals the value.
        tags_any
            Only events carrying at least one of these tags.
        where
            Only events for which ``where(event)`` is true (checked after the
            field and tag filters). A subscription without filters pays
            nothing for them; a filtered-out event counts as routed to the
            subscription in ``stats()["delivered"]``, and its handler is not
            called.

        Returns
        -------
        Subscription
            The handle: ``.id``, ``.cancel()``, a context manager; accepted
            by :meth:`unsubscribe`, and equal to its id.

        Raises
        ------
        TypeError
            ``handler`` is an ``async def`` callable: ``drain()`` could never
            await it; use :meth:`subscribe_async`. (A plain handler that
            returns an awaitable is a handler error at delivery, never a
            delivery.)
        WrongThreadError
            Called from a thread other than the bus's owner.
        """
        self._check_owner("subscribe")
        if is_async_callable(handler):
            raise TypeError(async_handler_message(handler))
        return self._add_subscription(
            handler,
            kinds,
            name,
            priority,
            group,
            group_key,
            error_policy,
            once=once,
            weak=weak,
            fields={
                "polity_id": polity_id,
                "ward_id": ward_id,
                "actor_id": actor_id,
                "subject_id": subject_id,
            },
            tags_any=tags_any,
            where=where,
        )

    def _add_subscription(
        self,
        handler: Handler,
        kinds: Iterable[str] | str | None,
        name: str | None,
        priority: int,
        group: str | None,
        group_key: str | Callable[[Any], object] | None,
        error_policy: ErrorPolicy | None,
        *,
        once: bool = False,
        weak: bool = False,
        fields: dict[str, object] | None = None,
        tags_any: Iterable[str] | None = None,
        where: Callable[[WorldEvent], object] | None = None,
    ) -> Subscription:
        if error_policy is not None and error_policy not in ERROR_POLICIES:
            raise ValueError(
                f"error_policy must be one of {', '.join(ERROR_POLICIES)} or None, "
                f"got {error_policy!r}"
            )
        checks, tags = check_filters(fields or {}, tags_any, where)
        wrapped: FilteredHandler | None = None
        if checks or tags is not None or where is not None or once or weak:
            if group is not None and (checks or tags is not None or where is not None):
                raise ValueError(
                    "filters cannot be combined with group=: a group member takes every "
                    "event the group routes to it"
                )
            if not callable(handler):
                raise TypeError(f"handler must be callable, got {type(handler).__name__}")
            wrapped = FilteredHandler(
                handler,
                checks=checks,
                tags_any=tags,
                where=where,
                once=once,
                weak=weak,
                on_collected=self._weak_collector() if weak else None,
            )
        subscription = self._registry.add(
            handler if wrapped is None else wrapped, kinds, name, priority, group, group_key
        )
        subscription._owner = weakref.ref(self)
        if wrapped is not None:
            if once:
                wrapped.on_fired = partial(self._once_fired, subscription)
                if name is not None and name in self._registry.once_fired:
                    # It took its event before the snapshot this bus was restored from.
                    self._registry.remove(subscription.sub_id)
                    return subscription
            if weak:
                self._weak_subscriptions[subscription.sub_id] = subscription
        self._invalidate_routes()
        if error_policy is not None:
            self._error_policies[subscription.sub_id] = error_policy
            if error_policy == "dead_letter":
                self._listen_for_retries()
        return subscription

    def on(
        self,
        kinds: Iterable[str] | str | None = None,
        **options: Any,
    ) -> Callable[[_H], _H]:
        """Subscribe the decorated function; it is returned unchanged.

        ``@bus.on(kinds="DEPOT_BUILT", priority=5)`` is
        ``bus.subscribe(function, kinds="DEPOT_BUILT", priority=5)``; the
        options are :meth:`subscribe`'s. Use :meth:`subscriptions` or the
        function's name (``name=``) to find the subscription later.
        """

        def decorate(handler: _H) -> _H:
            self.subscribe(handler, kinds=kinds, **options)
            return handler

        return decorate

    def unsubscribe(self, subscription: Subscription | int) -> None:
        """Stop a subscription from the next event on.

        Parameters
        ----------
        subscription
            What :meth:`subscribe` returned, or its id.

        Raises
        ------
        KeyError
            No live subscription on this bus is this one (it already ended,
            or another bus made it); the message names it.
        """
        self._check_owner("unsubscribe")
        sub_id = operator.index(subscription) if not isinstance(subscription, bool) else None
        live = None if sub_id is None else self._registry.get(sub_id)
        if live is None or (isinstance(subscription, Subscription) and live is not subscription):
            raise KeyError(
                f"no live subscription {subscription!r} on this bus: it already ended "
                "(cancelled or unsubscribed), or another bus made it"
            )
        self._registry.remove(live.sub_id)
        self._invalidate_routes()
        self._error_policies.pop(live.sub_id, None)
        self._weak_subscriptions.pop(live.sub_id, None)
        if self._tier is not None:
            self._tier.async_subs.discard(live.sub_id)

    def _once_fired(self, subscription: Subscription) -> None:
        if subscription.name is not None:
            self._registry.once_fired.add(subscription.name)
        if subscription.active:
            self.unsubscribe(subscription)

    def _weak_collector(self) -> Callable[[], None]:
        """What a weak subscription's reference calls when its handler is collected.

        It may run at any allocation, in any thread: it only notes the loss;
        the next drain (or :meth:`stats`) ends those subscriptions.
        """
        owner = weakref.ref(self)

        def collected() -> None:
            bus = owner()
            if bus is not None:
                bus._collected_pending = True

        return collected

    def _end_collected(self) -> None:
        self._collected_pending = False
        for sub_id, subscription in tuple(self._weak_subscriptions.items()):
            handler = subscription.handler
            if isinstance(handler, FilteredHandler) and handler.handler is None:
                self._collected += 1
                if subscription.active:
                    self.unsubscribe(subscription)
                self._weak_subscriptions.pop(sub_id, None)

    def stats(self) -> dict[str, Any]:
        """The core's counters, plus ``subscriptions_collected`` (weak handlers gone)."""
        if self._collected_pending and threading.get_ident() == self.owner_thread:
            self._end_collected()  # only the owner thread changes subscriptions
        stats: dict[str, Any] = super().stats()
        stats["subscriptions_collected"] = self._collected
        return stats

    def subscribe_async(
        self,
        handler: AsyncHandler,
        *,
        kinds: Iterable[str] | str | None = None,
        name: str | None = None,
        priority: int = 0,
        group: str | None = None,
        group_key: str | Callable[[Any], object] | None = None,
        error_policy: ErrorPolicy | None = None,
    ) -> Subscription:
        """Await ``handler(event)`` for every matching event, from :meth:`drain_async`.

        Selectors, priorities, groups and error policies are those of
        :meth:`subscribe`; :meth:`drain_async` awaits each call before the
        next handler is called, so the order is that of :meth:`drain`.
        While such a subscription has deliveries waiting, :meth:`drain`
        refuses (it cannot await).

        Parameters
        ----------
        handler
            An ``async def`` callable taking one :class:`WorldEvent`.
        kinds, name, priority, group, group_key, error_policy
            As for :meth:`subscribe`.

        Returns
        -------
        Subscription
            The handle, as :meth:`subscribe` returns it.

        Raises
        ------
        TypeError
            ``handler`` is not an ``async def`` callable (use :meth:`subscribe`).
        """
        self._check_owner("subscribe_async")
        if not is_async_callable(handler):
            raise TypeError(
                f"subscribe_async() takes an async def handler, got {handler!r}; "
                "subscribe plain callables with bus.subscribe()"
            )
        tier = self._async_tier()
        entry = AsyncEntry(tier, handler)
        subscription = self._add_subscription(
            entry, kinds, name, priority, group, group_key, error_policy
        )
        tier.async_subs.add(subscription.sub_id)
        return subscription

    async def drain_async(self, max_rounds: int | None = None) -> int:
        """Dispatch the pending events as :meth:`drain` does, awaiting async handlers.

        Every handler, sync or async, is called in the order :meth:`drain`
        would call it, and an async handler is awaited before the next one
        is called: the stream, the seqs and each subscriber's view are those
        of a sync run. Cascades, lanes, groups, error policies and dead
        letters behave as in :meth:`drain`; drain listeners run around it.
        With no async subscription it is :meth:`drain`.

        Raises
        ------
        ExceptionGroup, CascadeLimitError, RuntimeError
            As :meth:`drain`.
        """
        self._check_owner("drain_async")
        rounds = (
            self._config.cascade_rounds
            if max_rounds is None
            else check_positive("max_rounds", max_rounds)
        )
        tier = self._tier
        if tier is not None:
            tier.before_drain(True)
        if tier is None or not (tier.async_subs or tier.carry):
            return self.drain(max_rounds)
        if self.draining:
            raise RuntimeError(
                "drain_async() was called from inside a handler; events published by "
                "handlers are dispatched by the next drain (or round)"
            )
        for listener in tuple(self._drain_starts):
            listener()
        dead_letters = self._dead_letters
        try:
            total, errors = await tier.drain(rounds, super().drain)
        finally:
            # Retries due now are awaited after the listeners, not run by them.
            dead_letters.hold_retries = True
            try:
                for listener in tuple(self._drain_ends):
                    listener()
            finally:
                dead_letters.hold_retries = False
        if dead_letters.listening and dead_letters.retries:
            tier.running = True
            try:
                await dead_letters.run_due_async(self.tick, tier.call)
            finally:
                tier.running = False
        left = self.pending_count()
        if rounds > 1 and left:
            cascade = CascadeLimitError(cascade_limit_message(rounds, left))
            if not errors:
                raise cascade
            errors.append(cascade)
        if errors:
            raise ExceptionGroup(handler_errors_message(len(errors)), errors)
        return total

    def stream(
        self,
        kinds: Iterable[str] | str | None = None,
        *,
        since: int | None = None,
        maxsize: int = 10_000,
        overflow: Overflow = "drop_oldest",
    ) -> EventStream:
        """An async iterator over the events drains deliver: ``async for event in bus.stream()``.

        It may be made and read in another thread than the bus's (a drain
        hands events over to the reader's event loop); made there, it starts
        at the start of the owner thread's next drain.

        Parameters
        ----------
        kinds
            Selectors of the kinds to receive, as for :meth:`subscribe`.
        since
            Start with the retained events after this seq, then go on with
            live ones: no gap and no duplicate at the seam (see
            :attr:`EventStream.gap` for what the ring no longer held).
        maxsize
            Events buffered for the reader at most.
        overflow
            When the buffer is full: ``"drop_oldest"`` drops the oldest
            unread event (counted in :attr:`EventStream.dropped`), ``"raise"``
            raises :class:`~ringbus.StreamOverflowError` in the drain and
            ends the stream, ``"block"`` makes :meth:`drain_async` wait for the
            reader (the stream is then an async subscription).

        Raises
        ------
        ValueError
            ``overflow`` or ``maxsize`` is not valid.
        """
        check_overflow(overflow, maxsize)
        if since is not None:
            since = check_non_negative("since", since)
        return EventStream(self, kinds, since, maxsize, overflow)

    def subscriptions(self) -> list[Subscription]:
        """The live subscriptions, in subscription order."""
        return list(self._registry)

    def track_deliveries(self, limit: int | None) -> None:
        """Record delivery states for debugging, keeping at most ``limit``; ``None`` stops.

        Off by default: nothing is wrapped and nothing recorded. On, each
        delivery is recorded as ``processing`` while its handler runs, then
        ``completed`` or ``failed`` (with attempts, retries included); see
        :meth:`delivery_states`. Records travel in :meth:`snapshot`. Each
        call starts a fresh record.
        """
        self._registry.tracker = None if limit is None else DeliveryTracker(limit)
        self._invalidate_routes()

    def delivery_states(
        self, seq: int | None = None, subscription: int | None = None
    ) -> list[dict[str, Any]]:
        """Delivery states, oldest first, then the pending ones in seq order.

        Needs :meth:`track_deliveries`. Each item is a dict with ``seq``,
        ``kind``, ``sub_id``, ``name``, ``group``, ``state`` (``"pending"``,
        ``"processing"``, ``"completed"``, ``"failed"``), ``attempts`` and
        ``error``. Pending entries are the events waiting for a drain and
        who would receive them now (one entry per group, ``sub_id`` ``None``).

        Parameters
        ----------
        seq
            Only this event's deliveries.
        subscription
            Only this subscription id's deliveries (pending group entries
            are included for its group).

        Raises
        ------
        RuntimeError
            Delivery tracking is off.
        """
        tracker = self._registry.tracker
        if tracker is None:
            raise RuntimeError("delivery tracking is off: call bus.track_deliveries(limit) first")
        group_of = None
        if subscription is not None:
            live = [s for s in self._registry if s.sub_id == subscription]
            group_of = live[0].group if live else None
        states = [
            record.to_dict()
            for record in tracker.records.values()
            if (seq is None or record.seq == seq)
            and (subscription is None or record.sub_id == subscription)
        ]
        targets: dict[str, list[Any]] = {}
        for event in self.pending_events():
            if seq is not None and event.seq != seq:
                continue
            if event.kind not in targets:
                targets[event.kind] = self._registry.targets(event.kind)
            for target in targets[event.kind]:
                if isinstance(target, Subscription):
                    if subscription is not None and target.sub_id != subscription:
                        continue
                    sub_id, name, group = target.sub_id, target.name, target.group
                else:
                    if subscription is not None and target.name != group_of:
                        continue
                    sub_id, name, group = None, None, target.name
                states.append(
                    DeliveryRecord(event.seq, event.kind, sub_id, name, group, "pending").to_dict()
                )
        return states

    def _resolve_route(self, kind: str) -> tuple[tuple[Handler, Subscription], ...]:
        tier = self._tier
        if tier is not None and tier.collecting:
            return ((tier.collect, None),)  # type: ignore[return-value]
        return self._registry.route(kind)

    # -- lanes and destinations ---------------------------------------
    def publish_urgent(
        self,
        kind: str,
        tick: int | None = None,
        day: int | None = None,
        **fields: Unpack[EventFields],
    ) -> int:
        """Publish into the urgent lane: ``publish(..., priority="urgent")``.

        Within one drain round, the urgent events pending when the round
        began go first, in seq order, then the other lanes. The event is
        stored and numbered like any other (``get_since`` and the ring stay
        in seq order). Arguments (the fields of :class:`EventFields`) and
        result as :meth:`publish`.
        """
        return self._publish_routed(
            URGENT, None, kind, tick, day, *event_field_args("publish_urgent", dict(fields))
        )

    def send(
        self,
        destination: str,
        kind: str,
        tick: int | None = None,
        day: int | None = None,
        *,
        urgent: bool = False,
        **fields: Unpack[EventFields],
    ) -> int:
        """Publish an event for one recipient: the subscription named ``destination``.

        Only subscriptions with that ``name`` (or the group with that name,
        which picks one member) whose ``kinds`` match receive it, at drain
        time. When none does, ``EventBusConfig.unknown_destination`` decides:
        raise :class:`~ringbus.UnknownDestinationError` after the drain (the
        default), log it, or keep it as a dead letter — never a silent drop.
        ``urgent=True`` also puts it in the urgent lane. The other arguments
        (the fields of :class:`EventFields`) are :meth:`publish`'s.
        """
        lane = URGENT if urgent else NORMAL  # user code (__bool__): before anything is stored
        return self._publish_routed(
            lane, destination, kind, tick, day, *event_field_args("send", dict(fields))
        )

    def _resolve_direct(self, destination: str, kind: str) -> tuple[tuple[Handler, Any], ...]:
        tier = self._tier
        if tier is not None and tier.collecting:
            return ((tier.collect_direct(destination), None),)
        return tuple(
            entry
            for entry in self._resolve_route(kind)
            if getattr(entry[1], "name", None) == destination
        )

    def _on_undeliverable(self, event: WorldEvent, destination: str) -> Exception | None:
        error = UnknownDestinationError(
            f"no subscription named {destination!r} takes kind {event.kind!r} "
            f"(seq={event.seq} was sent to it); subscribe one with name={destination!r}"
        )
        policy = self._config.unknown_destination
        if policy == "raise":
            return error
        if policy == "dead_letter":
            self._dead_letters.record_undeliverable(event, destination, error, self.tick)
        else:
            logger.error("%s", error)
        return None

    def _on_handler_error(self, event: WorldEvent, subscription: object, error: Exception) -> bool:
        subscription = member_of(subscription)
        error.add_note(
            f"ringbus: raised while delivering seq={event.seq} kind={event.kind!r} "
            f"to {subscription!r}"
        )
        policy = self._config.error_policy
        if self._error_policies:
            policy = self._error_policies.get(getattr(subscription, "sub_id", 0), policy)
        if policy == "dead_letter":
            self._dead_letters.record_failure(event, subscription, error, self.tick)
            return False
        if policy == "log":
            logger.error(
                "handler %r failed on seq=%d kind=%s",
                subscription,
                event.seq,
                event.kind,
                exc_info=error,
            )
            return False
        return True

    # -- dead letters --------------------------------------------------
    @property
    def dead_letters(self) -> DeadLetterQueue:
        """Failed deliveries under the ``"dead_letter"`` policy: retries and dead letters.

        ``bus.dead_letters.list()``, ``.retry()``, ``.purge()``, ``.stats()``,
        ``.pending_retries()``; see :class:`ringbus.DeadLetterQueue`.
        """
        return self._dead_letters

    def _live_subscription(self, sub_id: int, name: str | None) -> Subscription | None:
        subscription: Subscription
        for subscription in self._registry:
            if subscription.sub_id == sub_id and subscription.name == name:
                return self._registry.tracked(subscription)
        return None

    def _listen_for_retries(self) -> None:
        dead_letters = self._dead_letters
        if not dead_letters.listening:
            dead_letters.listening = True
            self.add_drain_listener(
                lambda: dead_letters.drain_ended(self.tick), on_start=dead_letters.drain_started
            )

    # -- drain boundaries ----------------------------------------------
    def drain(self, max_rounds: int | None = None) -> int:
        """Dispatch the pending events, in seq order; return how many.

        Same as the core's ``drain``; drain listeners (see
        :meth:`add_drain_listener`) run around it, the end ones even when the
        drain raises.
        """
        if self._tier is not None:
            self._check_owner("drain")
            self._tier.before_drain(False)
        if self._collected_pending and not self.draining:
            self._end_collected()
        if self.draining or not (self._drain_ends or self._drain_starts):
            # A nested drain() is refused by the core: no listener runs for it.
            return super().drain(max_rounds)
        for listener in tuple(self._drain_starts):
            listener()
        try:
            return super().drain(max_rounds)
        finally:
            for listener in tuple(self._drain_ends):
                listener()

    def add_drain_listener(
        self,
        on_end: Callable[[], object],
        *,
        on_start: Callable[[], object] | None = None,
    ) -> None:
        """Call ``on_end()`` after every :meth:`drain` (and ``on_start()`` before).

        Transports use this to send what a drain delivered as one batch.
        Listeners run in the order they were added.
        """
        if not callable(on_end) or (on_start is not None and not callable(on_start)):
            raise TypeError("drain listeners must be callable and take no arguments")
        self._drain_ends.append(on_end)
        if on_start is not None:
            self._drain_starts.append(on_start)

    def remove_drain_listener(
        self, on_end: Callable[[], object], *, on_start: Callable[[], object] | None = None
    ) -> None:
        """Forget listeners added with :meth:`add_drain_listener`.

        Raises
        ------
        ValueError
            The listener was not added.
        """
        if on_end not in self._drain_ends or (
            on_start is not None and on_start not in self._drain_starts
        ):
            raise ValueError("this drain listener was not added to the bus")
        self._drain_ends.remove(on_end)
        if on_start is not None:
            self._drain_starts.remove(on_start)

    # -- reading -------------------------------------------------------
    def get_since(  # type: ignore[override]
        self,
        seq: int,
        *,
        kinds: Iterable[str] | str | None = None,
        limit: int | None = None,
    ) -> list[WorldEvent]:
        """Retained events with ``.seq > seq``, oldest first.

        Parameters
        ----------
        seq
            A cursor: the last seq the reader has seen (0 for everything).
            If it has been overwritten, what is still retained comes back;
            compare with :meth:`oldest_seq` to see the gap.
        kinds
            Only these kinds (exact or fnmatch globs).
        limit
            At most this many events, oldest first.
        """
        selector = None if kinds is None else KindSelector(kinds)
        return super().get_since(seq, selector, limit)

    def event_from_dict(self, data: dict[str, Any]) -> WorldEvent:
        """Build an event of this bus's core from :meth:`WorldEvent.to_dict` output."""
        return self._world_event.from_dict(data)

    # -- snapshots -----------------------------------------------------
    def add_snapshot_hook(self, name: str, save: SaveHook, load: LoadHook) -> None:
        """Let a subscriber's state travel in :meth:`snapshot`.

        Parameters
        ----------
        name
            Unique key of the state in the snapshot.
        save
            Returns the state as JSON-ready data.
        load
            Takes what ``save`` returned and restores the state.
        """
        self._snapshot_hooks.add(name, save, load)

    def remove_snapshot_hook(self, name: str) -> None:
        """Forget a snapshot hook.

        Raises
        ------
        KeyError
            No hook has this name.
        """
        self._snapshot_hooks.remove(name)

    def snapshot(self, *, debug_events: bool | int = False) -> dict[str, Any]:
        """Return the bus state as a JSON-serialisable dict.

        It holds the seq counter, the clock, the configuration, the events
        still pending (so nothing accepted is lost) and each snapshot hook's
        state — not the ring, unless ``debug_events`` asks for the last
        ``snapshot_debug_events`` (``True``) or N (an int) retained events.
        """
        return take_snapshot(self, debug_events)

    def _is_fresh(self) -> bool:
        return not (
            self.latest_seq()
            or self.pending_count()
            or len(self)
            or self._schedule
            or any(len(producer) for producer in self.producers())
        )

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue from ``snapshot`` on this fresh bus: all of it, or nothing.

        Register the snapshot hooks first (attach the subscribers), then
        restore: the seq counter, the clock and the pending events come
        back, and each hook's ``load`` gets its state. The run continues with
        the same seqs as the uninterrupted one.

        The whole snapshot is checked before anything changes, so a refused
        snapshot leaves the bus as it was (still fresh: a correct snapshot
        can be restored next). The hooks' ``load`` callables run after that
        check and before the bus takes the snapshot's seq and events (a
        ``load`` must not publish). If one raises, the hooks that had
        already loaded get back the state their ``save`` returned just
        before, the bus is left unchanged, and the error propagates with a
        note naming the hook.

        Raises
        ------
        ValueError
            The bus has already accepted events, the snapshot is malformed, or
            it carries state for a hook that is not registered.
        TypeError
            ``snapshot`` is not a dict, or the ``save`` of a hook the snapshot
            has state for returns state that is not JSON-serialisable.
        RuntimeError
            A hook's ``load`` published or scheduled events.
        Exception
            Whatever a hook's ``load`` raised (the bus is left unchanged).
        """
        self._check_owner("restore")
        if not self._is_fresh():
            raise ValueError("restore() needs a fresh bus: this one has already accepted events")
        commit, hooks = prepare_restore(self, snapshot)
        self._snapshot_hooks.load(hooks, self._is_fresh)
        commit()

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], config: EventBusConfig | None = None) -> Self:
        """A new bus continuing from ``snapshot`` (its own config unless given).

        For snapshots that carry subscriber state, make the bus, attach the
        subscribers, then call :meth:`restore` instead.
        """
        if config is None:
            if not isinstance(snapshot, dict) or "config" not in snapshot:
                raise ValueError("snapshot has no 'config'; pass config=")
            config = EventBusConfig.from_dict(snapshot["config"])
        bus = cls(config)
        bus.restore(snapshot)
        return bus

    # -- scheduled events ----------------------------------------------
    def schedule(self, at_tick: int, kind: str, **fields: Unpack[EventFields]) -> int:
        """Publish an event when the bus clock reaches ``at_tick``.

        The event is released by :meth:`set_clock` once the clock's tick is
        ``at_tick`` or later, before anything the loop publishes at that tick,
        and gets its seq then. Events due at the same tick are released in
        the order they were scheduled. The queue travels in :meth:`snapshot`.

        Parameters
        ----------
        at_tick
            The tick to release the event at (it becomes the event's tick);
            must be after the current :attr:`tick`.
        kind
            The event kind.
        **fields
            ``polity_id``, ``ward_id``, ``actor_id``, ``subject_id``,
            ``payload`` (JSON-ready values) and ``tags``, as for
            :meth:`publish`. The event's day is the clock's day at release.

        Returns
        -------
        int
            The scheduling order number, counting from 0 (a disabled bus
            keeps nothing and returns 0).

        Raises
        ------
        ValueError, TypeError
            ``at_tick`` is not in the future, a field is unknown or invalid.
        """
        at_tick = check_non_negative("at_tick", at_tick)
        if at_tick <= self.tick:
            raise ValueError(
                f"schedule() needs a tick after the current tick {self.tick}, got {at_tick}; "
                "publish() the event now instead"
            )
        kind, kept = self._scheduled_fields(at_tick, kind, dict(fields))
        if not self.enabled:
            return 0
        return self._schedule.add(at_tick, kind, kept)

    def _scheduled_fields(
        self, at_tick: int, kind: str, fields: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Check a scheduled event as publishing it will; return its kind and JSON-ready fields."""
        at_tick = check_non_negative("at_tick", at_tick)
        unknown = sorted(set(fields) - set(SCHEDULE_FIELDS))
        if unknown:
            raise TypeError(
                f"schedule() got unknown fields {', '.join(unknown)}; "
                f"accepted: {', '.join(SCHEDULE_FIELDS)}"
            )
        blank = dict.fromkeys(("polity_id", "ward_id", "actor_id", "subject_id", "payload"))
        probe = self.event_from_dict(
            {"seq": 1, "tick": at_tick, "day": 0, "kind": kind, "tags": (), **blank, **fields}
        ).to_dict()
        kept = {name: probe[name] for name in SCHEDULE_FIELDS if name in fields}
        json.dumps(kept, allow_nan=False)
        return probe["kind"], kept

    def scheduled(self) -> list[dict[str, Any]]:
        """The events waiting for their tick, in release order (JSON-ready copies)."""
        return list(self._schedule.to_state()["entries"])

    def set_clock(self, tick: int, day: int | None = None) -> None:
        """Set the bus clock (once per tick) and release the scheduled events now due.

        Time never goes backwards: ``tick`` and ``day`` may not be lower than
        the clock's. Each due event is released at its own tick (or at the
        clock's, if an event published with a later tick moved the clock
        past it) and the new day, in the order scheduled.

        Parameters
        ----------
        tick
            The current tick.
        day
            The current day; ``None`` keeps the current one.

        Raises
        ------
        ValueError
            ``tick`` or ``day`` is before the clock's; nothing is released.
        """
        tick = check_non_negative("tick", tick)
        day = self.day if day is None else check_non_negative("day", day)
        if tick < self.tick or day < self.day:
            super().set_clock(tick, day)  # refuses, naming what went back
        queue = self._schedule
        try:
            while queue and queue.first()[0] <= tick:
                at_tick, _order, kind, fields = queue.first()
                super().set_clock(max(at_tick, self.tick), day)
                self.publish(kind, **fields)  # if this raises, the entry stays queued
                queue.pop_first()
        finally:
            super().set_clock(tick, day)

    def __repr__(self) -> str:
        return (
            f"<EventBus {self._config.name!r} seq={self.latest_seq()} "
            f"retained={len(self)} pending={self.pending_count()} "
            f"subscriptions={len(self._registry)}>"
        )


class EventBus(EventBusBase, RingCore):
    __doc__ = EventBusBase.__doc__
    _world_event = WorldEvent


_variants: dict[str, type[EventBus]] = {_backend.RingCore.__module__: EventBus}


def bus_class_for(core: ModuleType) -> type[EventBus]:
    """Return the :class:`EventBus` class built on ``core`` (a core module).

    ``ringbus.EventBus`` is built on the active core; the test suite uses
    this to run the same facade and subscribers on both cores.
    """
    cls = _variants.get(core.__name__)
    if cls is None:
        cls = type(
            "EventBus",
            (EventBusBase, core.RingCore),
            {
                "__doc__": EventBusBase.__doc__,
                "_world_event": core.WorldEvent,
                "__module__": __name__,
            },
        )
        _variants[core.__name__] = cls
    return cls
