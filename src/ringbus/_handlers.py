"""What ``subscribe`` wraps around a handler: field filters, ``once``, weak references.

A subscription that uses none of these keeps its handler as given: its route
entry calls the handler directly, so the options cost nothing to the
subscribers that do not use them. One that uses any gets one
:class:`FilteredHandler`, which checks the filters in a fixed order (the
event's fields, then ``tags_any``, then ``where``), then calls the handler.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["FILTER_FIELDS", "FilteredHandler", "check_filters"]

#: The event fields a subscription may filter on (``subscribe(polity_id=...)``).
FILTER_FIELDS = ("polity_id", "ward_id", "actor_id", "subject_id")

Handler = Callable[[Any], object]


def check_filters(
    fields: dict[str, object], tags_any: Iterable[str] | str | None, where: object
) -> tuple[tuple[tuple[str, str], ...], frozenset[str] | None]:
    """Check the filter options of ``subscribe``; return ``(field checks, tags)``.

    Raises
    ------
    TypeError
        A field value or a tag is not a str, ``tags_any`` is a bare str, or
        ``where`` is not callable.
    ValueError
        ``tags_any`` is empty (it would match nothing).
    """
    checks = []
    for field in FILTER_FIELDS:
        value = fields.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{field} filter must be a str or None, got {type(value).__name__}")
        checks.append((field, value))
    tags: frozenset[str] | None = None
    if tags_any is not None:
        if isinstance(tags_any, str):
            raise TypeError("tags_any must be an iterable of str (a bare str is one tag: [tag])")
        tags = frozenset(tags_any)
        if not tags:
            raise ValueError("tags_any must name at least one tag (an empty set matches nothing)")
        for tag in tags:
            if not isinstance(tag, str):
                raise TypeError(f"tags_any must hold str, got {type(tag).__name__}")
    if where is not None and not callable(where):
        raise TypeError(f"where must be callable (event -> bool), got {type(where).__name__}")
    return tuple(checks), tags


class FilteredHandler:
    """A handler behind a subscription's filters, ``once`` and weak reference.

    Parameters
    ----------
    handler
        The subscriber's callable.
    checks
        ``(field, value)`` pairs the event must match.
    tags_any
        The event must carry at least one of these tags (``None``: no check).
    where
        ``where(event)`` must be true (``None``: no check).
    once
        Call ``handler`` for the first event that passes, never again; then
        ``on_fired()`` ends the subscription.
    weak
        Hold ``handler`` by a weak reference; when it is collected,
        ``on_collected()`` ends the subscription and nothing more is called.
    """

    __slots__ = ("_checks", "_fired", "_handler", "_once", "_tags", "_weak", "_where", "on_fired")

    def __init__(
        self,
        handler: Handler,
        *,
        checks: tuple[tuple[str, str], ...] = (),
        tags_any: frozenset[str] | None = None,
        where: Callable[[Any], object] | None = None,
        once: bool = False,
        weak: bool = False,
        on_collected: Callable[[], None] | None = None,
    ) -> None:
        self._checks = checks
        self._tags = tags_any
        self._where = where
        self._once = once
        self._fired = False
        #: Called when a ``once`` subscription has taken its event.
        self.on_fired: Callable[[], None] | None = None
        self._weak = weak
        if weak:
            self._handler: Any = _weak_reference(handler, on_collected)
        else:
            self._handler = handler

    @property
    def handler(self) -> Handler | None:
        """The subscriber's callable (``None`` once a weakly held one was collected)."""
        return self._handler() if self._weak else self._handler  # type: ignore[no-any-return]

    @property
    def once(self) -> bool:
        """Whether it delivers one event at most."""
        return self._once

    @property
    def fired(self) -> bool:
        """Whether a ``once`` subscription has taken its event."""
        return self._fired

    def __call__(self, event: Any) -> object:
        for field, value in self._checks:
            if getattr(event, field) != value:
                return None
        tags = self._tags
        if tags is not None and tags.isdisjoint(event.tags):
            return None
        where = self._where
        if where is not None and not where(event):
            return None
        handler = self._handler() if self._weak else self._handler
        if handler is None:  # collected: the subscription ends at the next drain
            return None
        if self._once:
            if self._fired:
                return None
            self._fired = True
            if self.on_fired is not None:
                self.on_fired()
        return handler(event)

    def __repr__(self) -> str:
        return f"<filtered {self.handler!r}>"


def _weak_reference(
    handler: Handler, on_collected: Callable[[], None] | None
) -> Callable[[], Handler | None]:
    def collected(_reference: object) -> None:
        if on_collected is not None:
            on_collected()

    try:
        if hasattr(handler, "__func__") and hasattr(handler, "__self__"):
            return weakref.WeakMethod(handler, collected)
        bound_to = getattr(handler, "__self__", None)
        if bound_to is not None and not isinstance(bound_to, types.ModuleType):
            # A built-in method: made anew on each access, so a weak reference
            # to it would die at once, and its object may not allow one.
            raise TypeError
        return weakref.ref(handler, collected)
    except TypeError:
        raise TypeError(
            "weak=True needs a handler that can be weakly referenced (a function, or a "
            f"method of an object that allows weak references), got {handler!r}"
        ) from None
