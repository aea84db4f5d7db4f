"""Subscriptions, priorities and groups, resolved into per-kind routes.

Selectors are matched when a kind is first routed (at subscribe time for
the kinds already seen), never per event: the core caches each kind's
route and the bus clears that cache whenever subscriptions change.

A route is a tuple of ``(handler, subscription)`` entries. Its order is
the delivery order for that kind, and it depends only on the subscriptions,
never on which selector form matched:

1. higher ``priority`` first;
2. equal priorities in subscription order.

A subscriber matched by several of its patterns is in the route once. A
load-balanced group is one entry (see :mod:`ringbus._groups`) whose second
element is the :class:`~ringbus._groups.Group`; ``member_of`` turns it
into the member that was being called. When no subscription has a priority
or a group and delivery tracking is off, the route is exactly
``tuple((sub.handler, sub) for sub in subscriptions if sub.matches(kind))``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from ._deliveries import DeliveryTracker, TrackedHandler
from ._errors import async_handler_message
from ._groups import Group, GroupDispatch, GroupKey, check_group_key
from ._handlers import FilteredHandler
from ._selectors import KindSelector
from ._state import SnapshotPart

if TYPE_CHECKING:
    from ._backend import WorldEvent

__all__ = [
    "KindSelector",
    "Registry",
    "Subscription",
    "async_handler_message",
    "is_async_callable",
    "member_of",
]

#: What ``subscribe`` takes: called with each matching event; its result is ignored.
Handler = Callable[["WorldEvent"], object]


class Subscription:
    """One subscriber: its handler, the kinds it wants, and its id.

    :meth:`~ringbus.EventBus.subscribe` returns it as the subscription's
    handle: ``sub.cancel()`` ends it (as ``bus.unsubscribe(sub)`` does), and
    ``with bus.subscribe(...) as sub:`` ends it when the block ends. It
    stands for its id where an int is expected (``int(sub)``, ``sub == 3``,
    ``{sub: ...}``).

    Attributes
    ----------
    sub_id
        The subscription's id (also ``id``), unique on its bus.
    handler
        The callable that receives each matching event.
    kinds
        The selector, or ``None`` for every kind.
    name
        An optional name, used in error notes and reports.
    priority
        Higher priorities receive each event first (default 0).
    group
        The load-balanced group it belongs to, or ``None``.
    """

    __slots__ = ("_owner", "group", "handler", "kinds", "name", "priority", "sub_id")

    def __init__(
        self,
        sub_id: int,
        handler: Handler,
        kinds: KindSelector | None,
        name: str | None,
        priority: int = 0,
        group: str | None = None,
    ) -> None:
        self.sub_id = sub_id
        self.handler = handler
        self.kinds = kinds
        self.name = name
        self.priority = priority
        self.group = group
        #: The bus it is live on (a weak reference), ``None`` once it ended.
        self._owner: Callable[[], Any] | None = None

    @property
    def id(self) -> int:
        """The subscription's id (same as ``sub_id``)."""
        return self.sub_id

    @property
    def active(self) -> bool:
        """Whether it still receives events (not cancelled, its bus still alive)."""
        return self._owner is not None and self._owner() is not None

    def cancel(self) -> None:
        """End the subscription from the next event on (``bus.unsubscribe(self)``).

        Raises
        ------
        KeyError
            It has already ended (cancelled, unsubscribed, or its bus is gone).
        """
        bus = None if self._owner is None else self._owner()
        if bus is None:
            raise KeyError(f"{self!r} has already ended: it was cancelled or unsubscribed")
        bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.active:
            self.cancel()

    def __index__(self) -> int:
        return self.sub_id

    __int__ = __index__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Subscription):
            return self.sub_id == other.sub_id  # as their ids compare
        if isinstance(other, int) and not isinstance(other, bool):
            return self.sub_id == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.sub_id)

    def matches(self, kind: str) -> bool:
        """Whether this subscription receives events of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def with_handler(self, handler: Handler) -> Subscription:
        """A copy of this subscription calling ``handler`` instead."""
        copy = Subscription(self.sub_id, handler, self.kinds, self.name, self.priority, self.group)
        copy._owner = self._owner
        return copy

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        kinds = "all kinds" if self.kinds is None else ", ".join(self.kinds.selectors)
        extra = ""
        if self.priority:
            extra += f" priority={self.priority}"
        if self.group is not None:
            extra += f" in group {self.group!r}"
        return f"<Subscription {self.sub_id}{label} for {kinds}{extra}>"


def is_async_callable(handler: object) -> bool:
    """Whether calling ``handler`` makes a coroutine (``async def``, also behind a partial)."""
    while isinstance(handler, partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    # An object whose __call__ is an async def.
    if inspect.isfunction(handler) or inspect.ismethod(handler):
        return False
    call = inspect.getattr_static(type(handler), "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def member_of(subscription: object) -> object:
    """The subscription behind a route entry's second element.

    For a group entry, the member the group was delivering to; otherwise
    ``subscription`` itself.
    """
    if type(subscription) is Group and subscription.current is not None:
        return subscription.current
    return subscription


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}")
    return priority


class Registry(SnapshotPart):
    """Subscriptions in subscription order, and the routes they make."""

    def __init__(self) -> None:
        self._subscriptions: dict[int, Subscription] = {}
        self._next_id = 1
        self._prioritised = 0
        self._groups: dict[str, Group] = {}
        self._grouped = 0
        self.tracker: DeliveryTracker | None = None
        #: Names of ``once`` subscriptions that took their event (they travel
        #: in snapshots, so a restored run does not deliver to them again).
        self.once_fired: set[str] = set()

    def add(
        self,
        handler: Handler,
        kinds: Iterable[str] | str | None,
        name: str | None,
        priority: int = 0,
        group: str | None = None,
        group_key: GroupKey = None,
    ) -> Subscription:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        priority = _check_priority(priority)
        selector = None if kinds is None else KindSelector(kinds)
        target: Group | None = None
        if group is None:
            if group_key is not None:
                raise ValueError("group_key needs group=: name the group the subscriber joins")
        else:
            if not isinstance(group, str) or not group:
                raise TypeError(f"group must be a non-empty str or None, got {group!r}")
            group_key = check_group_key(group_key)
            target = self._groups.get(group)
            if target is None:
                target = self._groups[group] = Group(group, group_key)
            elif target.size == 0:
                target.key = group_key
            elif target.key != group_key:
                raise ValueError(
                    f"group {group!r} routes by {target.key!r}; every member must pass the "
                    f"same group_key (got {group_key!r})"
                )
        subscription = Subscription(self._next_id, handler, selector, name, priority, group)
        self._subscriptions[subscription.sub_id] = subscription
        self._next_id += 1
        if priority:
            self._prioritised += 1
        if target is not None:
            target.size += 1
            self._grouped += 1
        return subscription

    def get(self, sub_id: int) -> Subscription | None:
        """The live subscription with this id, if any."""
        return self._subscriptions.get(sub_id)

    def remove(self, sub_id: int) -> Subscription:
        try:
            subscription = self._subscriptions.pop(sub_id)
        except (KeyError, TypeError):
            raise KeyError(f"no subscription with id {sub_id!r}") from None
        subscription._owner = None
        if subscription.priority:
            self._prioritised -= 1
        if subscription.group is not None:
            self._groups[subscription.group].size -= 1
            self._grouped -= 1
        return subscription

    def __iter__(self) -> Iterator[Subscription]:
        return iter(tuple(self._subscriptions.values()))

    def __len__(self) -> int:
        return len(self._subscriptions)

    def group(self, name: str) -> Group | None:
        """The group called ``name``, if any subscription ever joined it."""
        return self._groups.get(name)

    def route(self, kind: str) -> tuple[tuple[Handler, Any], ...]:
        """The ``(handler, subscription)`` entries for ``kind``, in delivery order."""
        if not (self._prioritised or self._grouped or self.tracker is not None):
            return tuple(
                (sub.handler, sub) for sub in self._subscriptions.values() if sub.matches(kind)
            )
        tracker = self.tracker
        order: list[Subscription | list[Subscription]] = []
        members_of: dict[str, list[Subscription]] = {}
        for sub in self._subscriptions.values():
            if not sub.matches(kind):
                continue
            if sub.group is None:
                order.append(sub)
                continue
            members = members_of.get(sub.group)
            if members is None:
                members = members_of[sub.group] = []
                order.append(members)
            members.append(sub)
        entries: list[tuple[int, Handler, Any]] = []
        for item in order:
            if isinstance(item, Subscription):
                handler = item.handler
                if tracker is not None:
                    handler = TrackedHandler(tracker, item, handler)
                entries.append((item.priority, handler, item))
            else:
                group = self._groups[item[0].group]  # type: ignore[index]
                dispatch = GroupDispatch(group, tuple(item), tracker)
                entries.append((max(m.priority for m in item), dispatch, group))
        if self._prioritised:
            entries.sort(key=lambda entry: -entry[0])  # stable: ties keep subscription order
        return tuple((handler, target) for _priority, handler, target in entries)

    def targets(self, kind: str) -> list[Subscription | Group]:
        """Who would receive an event of ``kind`` now (groups as one target)."""
        return [target for _handler, target in self.route(kind)]

    def tracked(self, subscription: Subscription) -> Subscription:
        """``subscription``, with its handler reporting to the tracker when tracking is on."""
        tracker = self.tracker
        if tracker is None:
            return subscription
        return subscription.with_handler(partial(tracker.call, subscription, subscription.handler))

    # -- snapshot state -------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Group rotation state (JSON-ready), empty when there is none."""
        turns = {name: group.turn for name, group in sorted(self._groups.items()) if group.turn}
        state: dict[str, Any] = {"group_turns": turns} if turns else {}
        if self.once_fired:
            state["once_fired"] = sorted(self.once_fired)
        return state

    def prepare_load(self, state: Any) -> Callable[[], None]:
        """Check what :meth:`to_state` returned; return what loads it (cannot fail)."""
        turns = state.get("group_turns", {}) if isinstance(state, dict) else None
        if not isinstance(turns, dict):
            raise ValueError("snapshot 'routing' must be a dict with a 'group_turns' dict")
        for name, turn in turns.items():
            if not isinstance(name, str):
                raise ValueError(f"snapshot group name must be a str, got {name!r}")
            if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
                raise ValueError(f"snapshot group turn for {name!r} must be an int >= 0")
        fired = state.get("once_fired", [])
        if not isinstance(fired, list) or not all(isinstance(name, str) for name in fired):
            raise ValueError("snapshot 'routing' 'once_fired' must be a list of str")

        def commit() -> None:
            self.once_fired = set(fired)
            for subscription in tuple(self._subscriptions.values()):
                handler = subscription.handler
                # A once subscription attached before restore that took its event already.
                if (
                    subscription.name in self.once_fired
                    and isinstance(handler, FilteredHandler)
                    and handler.once
                ):
                    self.remove(subscription.sub_id)
            for name, turn in turns.items():
                group = self._groups.get(name)
                if group is None:
                    group = self._groups[name] = Group(name)
                group.turn = turn

        return commit
