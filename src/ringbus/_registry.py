"""Subscriptions and kind selectors, resolved into per-kind routes.

Selectors are matched when a kind is first routed (at subscribe time for
the kinds already seen), never per event: the core caches each kind's
route and the registry clears that cache whenever subscriptions change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any

__all__ = ["KindSelector", "Registry", "Subscription"]

Handler = Callable[[Any], object]
_GLOB_CHARS = frozenset("*?[")


class KindSelector:
    """A set of kinds and fnmatch globs; ``kind in selector`` tests a kind.

    Parameters
    ----------
    kinds
        An iterable of kinds or globs (``"DELIVERY_*"``), or a single string.
    """

    __slots__ = ("_cache", "exact", "globs", "selectors")

    def __init__(self, kinds: Iterable[str] | str) -> None:
        items = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        for item in items:
            if not isinstance(item, str) or not item:
                raise TypeError(f"kind selectors must be non-empty str, got {item!r}")
        self.selectors: tuple[str, ...] = tuple(dict.fromkeys(items))
        self.exact = frozenset(s for s in self.selectors if not _GLOB_CHARS & set(s))
        self.globs = tuple(s for s in self.selectors if _GLOB_CHARS & set(s))
        self._cache: dict[str, bool] = {}

    def __contains__(self, kind: object) -> bool:
        if kind in self.exact:
            return True
        if not self.globs or not isinstance(kind, str):
            return False
        hit = self._cache.get(kind)
        if hit is None:
            if len(self._cache) > 4096:  # many distinct kinds: keep memory bounded
                self._cache.clear()
            hit = any(fnmatchcase(kind, glob) for glob in self.globs)
            self._cache[kind] = hit
        return hit

    def __repr__(self) -> str:
        return f"KindSelector({list(self.selectors)!r})"


class Subscription:
    """One subscriber: its handler, the kinds it wants, and its id.

    Attributes
    ----------
    sub_id
        The id :meth:`~ringbus.EventBus.subscribe` returned.
    handler
        The callable that receives each matching event.
    kinds
        The selector, or ``None`` for every kind.
    name
        An optional name, used in error notes and reports.
    """

    __slots__ = ("handler", "kinds", "name", "sub_id")

    def __init__(
        self, sub_id: int, handler: Handler, kinds: KindSelector | None, name: str | None
    ) -> None:
        self.sub_id = sub_id
        self.handler = handler
        self.kinds = kinds
        self.name = name

    def matches(self, kind: str) -> bool:
        """Whether this subscription receives events of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        kinds = "all kinds" if self.kinds is None else ", ".join(self.kinds.selectors)
        return f"<Subscription {self.sub_id}{label} for {kinds}>"


class Registry:
    """Subscriptions in subscription order, and the routes they make."""

    def __init__(self) -> None:
        self._subscriptions: dict[int, Subscription] = {}
        self._next_id = 1

    def add(
        self, handler: Handler, kinds: Iterable[str] | str | None, name: str | None
    ) -> Subscription:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        selector = None if kinds is None else KindSelector(kinds)
        subscription = Subscription(self._next_id, handler, selector, name)
        self._subscriptions[subscription.sub_id] = subscription
        self._next_id += 1
        return subscription

    def remove(self, sub_id: int) -> Subscription:
        try:
            return self._subscriptions.pop(sub_id)
        except (KeyError, TypeError):
            raise KeyError(f"no subscription with id {sub_id!r}") from None

    def __iter__(self) -> Any:
        return iter(tuple(self._subscriptions.values()))

    def __len__(self) -> int:
        return len(self._subscriptions)

    def route(self, kind: str) -> tuple[tuple[Handler, Subscription], ...]:
        """The ``(handler, subscription)`` entries for ``kind``, in subscription order."""
        return tuple(
            (sub.handler, sub) for sub in self._subscriptions.values() if sub.matches(kind)
        )
