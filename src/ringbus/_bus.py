"""The :class:`EventBus` facade: subscriptions, error policy, snapshots.

``EventBus`` subclasses the active core (:class:`ringbus._backend.RingCore`),
so ``publish`` and ``drain`` are the core's own methods: with the compiled
core, the hot path never runs a line of Python.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import _backend
from ._backend import RingCore, WorldEvent
from ._config import ERROR_POLICIES, EventBusConfig
from ._deadletter import DeadLetterQueue
from ._deliveries import DeliveryRecord, DeliveryTracker
from ._errors import UnknownDestinationError
from ._normalise import check_clock
from ._registry import Handler, KindSelector, Registry, Subscription, member_of
from ._schedule import SCHEDULE_FIELDS, Schedule

__all__ = ["SNAPSHOT_FORMAT", "SNAPSHOT_VERSION", "EventBus", "bus_class_for"]

logger = logging.getLogger("ringbus")

SNAPSHOT_FORMAT = "ringbus-snapshot"
SNAPSHOT_VERSION = 1

SaveHook = Callable[[], Any]
LoadHook = Callable[[Any], object]


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
        self._snapshot_hooks: dict[str, tuple[SaveHook, LoadHook]] = {}
        self._schedule = Schedule()
        self._drain_starts: list[Callable[[], object]] = []
        self._drain_ends: list[Callable[[], object]] = []
        self._error_policies: dict[int, str] = {}
        self._dead_letters = DeadLetterQueue(
            config.max_retries,
            config.retry_backoff_ticks,
            config.dead_letter_limit,
            self._live_subscription,
        )
        if config.error_policy == "dead_letter":
            self._listen_for_retries()

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
        error_policy: str | None = None,
    ) -> int:
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

        Returns
        -------
        int
            The subscription id, for :meth:`unsubscribe`.
        """
        if error_policy is not None and error_policy not in ERROR_POLICIES:
            raise ValueError(
                f"error_policy must be one of {', '.join(ERROR_POLICIES)} or None, "
                f"got {error_policy!r}"
            )
        subscription = self._registry.add(handler, kinds, name, priority, group, group_key)
        self._routes.clear()
        if error_policy is not None:
            self._error_policies[subscription.sub_id] = error_policy
            if error_policy == "dead_letter":
                self._listen_for_retries()
        return subscription.sub_id

    def unsubscribe(self, sub_id: int) -> None:
        """Stop a subscription from the next event on.

        Raises
        ------
        KeyError
            No subscription has this id (or it was already removed).
        """
        self._registry.remove(sub_id)
        self._routes.clear()
        self._error_policies.pop(sub_id, None)

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
        self._routes.clear()

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
        return self._registry.route(kind)

    # -- lanes and destinations ---------------------------------------
    def publish_urgent(
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
        """Publish into the urgent lane: dispatched before normal events.

        Within one drain round, the urgent events pending when the round
        began go first, in seq order, then the normal ones, in seq order.
        The event is stored and numbered like any other (``get_since`` and
        the ring stay in seq order). Arguments and result as :meth:`publish`.
        """
        return self._publish_routed(
            True, None, kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags
        )

    def send(
        self,
        destination: str,
        kind: str,
        tick: int | None = None,
        day: int | None = None,
        *,
        urgent: bool = False,
        polity_id: str | None = None,
        ward_id: str | None = None,
        actor_id: str | None = None,
        subject_id: str | None = None,
        payload: object = None,
        tags: object = (),
    ) -> int:
        """Publish an event for one recipient: the subscription named ``destination``.

        Only subscriptions with that ``name`` (or the group with that name,
        which picks one member) whose ``kinds`` match receive it, at drain
        time. When none does, ``EventBusConfig.unknown_destination`` decides:
        raise :class:`~ringbus.UnknownDestinationError` after the drain (the
        default), log it, or keep it as a dead letter — never a silent drop.
        ``urgent=True`` also puts it in the urgent lane.
        """
        return self._publish_routed(
            urgent,
            destination,
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

    def _resolve_direct(self, destination: str, kind: str) -> tuple[tuple[Handler, Any], ...]:
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
        if not self._drain_ends and not self._drain_starts:
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
        if not isinstance(name, str) or not name:
            raise TypeError(f"snapshot hook name must be a non-empty str, got {name!r}")
        if not callable(save) or not callable(load):
            raise TypeError("snapshot hook save and load must be callable")
        if name in self._snapshot_hooks:
            raise ValueError(f"a snapshot hook named {name!r} is already registered")
        self._snapshot_hooks[name] = (save, load)

    def remove_snapshot_hook(self, name: str) -> None:
        """Forget a snapshot hook.

        Raises
        ------
        KeyError
            No hook has this name.
        """
        try:
            del self._snapshot_hooks[name]
        except KeyError:
            raise KeyError(f"no snapshot hook named {name!r}") from None

    def _saved_hook_states(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Each snapshot hook's state (or those of ``names``), as JSON-ready copies."""
        hooks: dict[str, Any] = {}
        for name in self._snapshot_hooks if names is None else names:
            save = self._snapshot_hooks[name][0]
            try:
                hooks[name] = json.loads(json.dumps(save(), allow_nan=False))
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"snapshot hook {name!r} returned state that is not JSON-serialisable: {error}"
                ) from error
        return hooks

    def snapshot(self, *, debug_events: bool | int = False) -> dict[str, Any]:
        """Return the bus state as a JSON-serialisable dict.

        It holds the seq counter, the clock, the configuration, the events
        still pending (so nothing accepted is lost) and each snapshot hook's
        state — not the ring, unless ``debug_events`` asks for the last
        ``snapshot_debug_events`` (``True``) or N (an int) retained events.
        """
        hooks = self._saved_hook_states()
        state: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "seq": self.latest_seq(),
            "tick": self.tick,
            "day": self.day,
            "config": self._config.to_dict(),
            "pending": [event.to_dict() for event in self.pending_events()],
            "hooks": hooks,
        }
        if self._schedule:
            state["scheduled"] = self._schedule.to_state()
        if self._dead_letters.has_state():
            state["dead_letters"] = self._dead_letters.to_dict()
        urgent, destinations = self.pending_routing()
        if urgent or destinations:
            state["lanes"] = {
                "urgent": urgent,
                "destinations": [[seq, name] for seq, name in destinations],
            }
        routing = self._registry.to_state()
        if routing:
            state["routing"] = routing
        if self._registry.tracker is not None:
            state["deliveries"] = self._registry.tracker.to_state()
        if debug_events is not False:
            count = (
                self._config.snapshot_debug_events
                if debug_events is True
                else check_clock("debug_events", debug_events)
            )
            recent = self.get_since(max(0, self.latest_seq() - count)) if count else []
            state["debug_events"] = [event.to_dict() for event in recent[-count:] if count]
        return state

    def _is_fresh(self) -> bool:
        return not (self.latest_seq() or self.pending_count() or len(self) or self._schedule)

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
        if not self._is_fresh():
            raise ValueError("restore() needs a fresh bus: this one has already accepted events")
        commit, hooks = self._prepare_restore(snapshot)
        self._load_hooks(hooks)
        commit()

    def _prepare_restore(self, snapshot: object) -> tuple[Callable[[], None], dict[str, Any]]:
        """Check the whole snapshot; return what applies it (cannot fail) and the hooks' states."""
        if not isinstance(snapshot, dict):
            raise TypeError(f"snapshot must be a dict, got {type(snapshot).__name__}")
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not a ringbus snapshot (format={snapshot.get('format')!r})")
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(
                f"unsupported snapshot version {snapshot.get('version')!r}; "
                f"this ringbus reads version {SNAPSHOT_VERSION}"
            )
        for key in ("seq", "tick", "day", "pending", "hooks"):
            if key not in snapshot:
                raise ValueError(f"snapshot is missing {key!r}")
        seq = check_clock("seq", snapshot["seq"])
        tick = check_clock("tick", snapshot["tick"])
        day = None if snapshot["day"] is None else check_clock("day", snapshot["day"])
        hooks = snapshot["hooks"]
        if not isinstance(hooks, dict):
            raise ValueError("snapshot 'hooks' must be a dict")
        unknown = sorted(set(hooks) - set(self._snapshot_hooks))
        if unknown:
            raise ValueError(
                f"snapshot carries state for hooks {', '.join(map(repr, unknown))} that are "
                "not registered on this bus: attach those subscribers before restore()"
            )
        pending = self._checked_pending(snapshot["pending"], seq, tick, day)
        urgent, directed = self._checked_lanes(snapshot.get("lanes"), pending)
        steps: list[Callable[[], None]] = []
        if "scheduled" in snapshot:
            schedule = Schedule()
            schedule.prepare_load(snapshot["scheduled"])()
            for at_tick, _order, kind, fields in schedule.entries():
                self._scheduled_fields(at_tick, kind, fields)
            steps.append(lambda: setattr(self, "_schedule", schedule))
        if "dead_letters" in snapshot:
            steps.append(
                self._dead_letters.prepare_load(snapshot["dead_letters"], self.event_from_dict)
            )
        if "routing" in snapshot:
            steps.append(self._registry.prepare_load(snapshot["routing"]))
        if "deliveries" in snapshot:
            tracker = DeliveryTracker.from_state(snapshot["deliveries"])
            steps.append(lambda: setattr(self._registry, "tracker", tracker))

        def commit() -> None:
            # Everything below was checked: none of it can fail.
            if pending:
                self._skip_to(pending[0].seq - 1)
                for event in pending:
                    self._ingest_routed(event, event.seq in urgent, directed.get(event.seq))
            self._skip_to(seq)
            # After the pending events, which move the clock up to their own times.
            self.set_clock(tick, day)
            for step in steps:
                step()
            if self._dead_letters.retries:
                self._listen_for_retries()
            self._routes.clear()

        return commit, hooks

    def _checked_pending(
        self, items: object, seq: int, tick: int, day: int | None
    ) -> list[WorldEvent]:
        """The snapshot's pending events, checked to be ingestible in order."""
        if not isinstance(items, list):
            raise ValueError("snapshot 'pending' must be a list")
        pending = [self.event_from_dict(item) for item in items]
        previous = 0
        last = (0, 0)
        monotonic = self.clock_policy == "monotonic"
        for event in pending:
            if event.seq <= previous:
                raise ValueError(
                    f"snapshot pending events must be in increasing seq order from 1, "
                    f"got seq {event.seq} after {previous}"
                )
            if monotonic and (event.tick < last[0] or event.day < last[1]):
                raise ValueError(
                    f"snapshot pending event seq {event.seq} at tick {event.tick}, day "
                    f"{event.day} is before the event ahead of it (tick {last[0]}, day "
                    f"{last[1]}): time never goes backwards"
                )
            if monotonic and (event.tick > tick or (day is not None and event.day > day)):
                raise ValueError(
                    f"snapshot pending event seq {event.seq} is later than the snapshot's "
                    f"clock (tick {tick}, day {day})"
                )
            last = (event.tick, event.day)
            if len(event.payload) > self.max_payload_items:
                raise ValueError(
                    f"snapshot pending event seq {event.seq} has {len(event.payload)} payload "
                    f"items, more than max_payload_items={self.max_payload_items}"
                )
            previous = event.seq
        if pending and pending[-1].seq > seq:
            raise ValueError("snapshot has pending events after its seq")
        if self.enabled and len(pending) > self.max_pending:
            raise ValueError(
                f"snapshot has {len(pending)} pending events, more than "
                f"max_pending={self.max_pending}"
            )
        if self.enabled and self._config.drop_policy == "RAISE" and len(pending) > self.max_events:
            raise ValueError(
                f"snapshot has {len(pending)} pending events, more than "
                f"max_events={self.max_events} with drop_policy='RAISE'"
            )
        return pending

    def _checked_lanes(
        self, lanes: object, pending: list[WorldEvent]
    ) -> tuple[set[int], dict[int, str]]:
        """The snapshot's urgent seqs and destinations, each naming a pending event."""
        if lanes is None:
            return set(), {}
        if not isinstance(lanes, dict):
            raise ValueError("snapshot 'lanes' must be a dict")
        seqs = {event.seq for event in pending}
        urgent = lanes.get("urgent", [])
        destinations = lanes.get("destinations", [])
        if not isinstance(urgent, list) or not isinstance(destinations, list):
            raise ValueError("snapshot 'lanes' must hold 'urgent' and 'destinations' lists")
        for seq in urgent:
            if isinstance(seq, bool) or not isinstance(seq, int) or seq not in seqs:
                raise ValueError(f"snapshot urgent lane names {seq!r}, not a pending event's seq")
        directed: dict[int, str] = {}
        for item in destinations:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise ValueError(f"snapshot destination must be a [seq, name] pair, got {item!r}")
            seq, name = item
            if isinstance(seq, bool) or not isinstance(seq, int) or seq not in seqs:
                raise ValueError(f"snapshot destination names {seq!r}, not a pending event's seq")
            if not isinstance(name, str) or not name:
                raise ValueError(f"snapshot destination name must be a non-empty str, got {name!r}")
            directed[seq] = name
        return set(urgent), directed

    def _load_hooks(self, hooks: dict[str, Any]) -> None:
        """Run each hook's ``load``; on an error put the ones already loaded back."""
        before = self._saved_hook_states(hooks)
        loaded: list[str] = []
        try:
            for name, state in hooks.items():
                try:
                    self._snapshot_hooks[name][1](state)
                except BaseException as error:
                    error.add_note(
                        f"ringbus: snapshot hook {name!r} failed to load its state; restore() "
                        "left the bus unchanged and put the hooks loaded before it back"
                    )
                    raise
                loaded.append(name)
            if not self._is_fresh():
                raise RuntimeError(
                    "a snapshot hook's load() published or scheduled events during restore(); "
                    "loads must only set their subscriber's state"
                )
        except BaseException as error:
            for done in reversed(loaded):
                try:
                    self._snapshot_hooks[done][1](before[done])
                except Exception as undo_error:
                    error.add_note(
                        f"ringbus: snapshot hook {done!r} could not get its previous state "
                        f"back: {undo_error!r}"
                    )
            raise

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], config: EventBusConfig | None = None) -> Any:
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
    def schedule(self, at_tick: int, kind: str, **fields: Any) -> int:
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
        at_tick = check_clock("at_tick", at_tick)
        if at_tick <= self.tick:
            raise ValueError(
                f"schedule() needs a tick after the current tick {self.tick}, got {at_tick}; "
                "publish() the event now instead"
            )
        kind, kept = self._scheduled_fields(at_tick, kind, fields)
        if not self.enabled:
            return 0
        return self._schedule.add(at_tick, kind, kept)

    def _scheduled_fields(
        self, at_tick: int, kind: str, fields: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Check a scheduled event as publishing it will; return its kind and JSON-ready fields."""
        at_tick = check_clock("at_tick", at_tick)
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
        tick = check_clock("tick", tick)
        day = self.day if day is None else check_clock("day", day)
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
