"""What every subscriber class has in common: ``attach(bus)`` and ``detach()``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, Self, runtime_checkable

__all__ = ["SnapshotSubscriber", "Subscriber"]


@runtime_checkable
class Subscriber(Protocol):
    """A component that follows a bus: KPIs, evidence, incidents, health, transports, journal.

    ``attach(bus)`` starts following ``bus`` and returns the subscriber itself
    (so ``kpi = KpiSubscriber().attach(bus)`` reads naturally); ``detach()``
    stops, and is safe to call when not attached.
    """

    def attach(self, bus: Any) -> Self: ...

    def detach(self) -> None: ...


class SnapshotSubscriber:
    """Base of the subscribers whose state travels in the bus's snapshots.

    ``attach`` subscribes :meth:`handle` to :meth:`subscribed_kinds` and
    registers ``save_state``/``load_state`` as the snapshot hook
    ``snapshot_name``; ``detach`` undoes both.
    """

    #: Default name of the snapshot hook (and of the subscription).
    snapshot_name = "subscriber"

    _attached: tuple[Any, int, str] | None = None

    def subscribed_kinds(self) -> Iterable[str] | None:
        """The kinds :meth:`handle` is subscribed to (``None``: every kind)."""
        raise NotImplementedError

    def handle(self, event: Any) -> None:
        raise NotImplementedError

    def save_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: Any) -> None:
        raise NotImplementedError

    @property
    def bus(self) -> Any:
        """The bus this subscriber is attached to, or ``None``."""
        return None if self._attached is None else self._attached[0]

    def attach(self, bus: Any, *, snapshot_name: str | None = None) -> Self:
        """Subscribe to ``bus`` and register the snapshot hook; return self.

        Parameters
        ----------
        bus
            The :class:`~ringbus.EventBus` to follow.
        snapshot_name
            Name of the snapshot hook (default :attr:`snapshot_name`); two
            subscribers of one class on one bus need different names.

        Raises
        ------
        RuntimeError
            Already attached: :meth:`detach` first.
        ValueError
            A snapshot hook of that name is already registered on ``bus``.
        """
        if self._attached is not None:
            raise RuntimeError(
                f"this {type(self).__name__} is already attached to a bus; detach() it first"
            )
        name = self.snapshot_name if snapshot_name is None else snapshot_name
        sub_id = bus.subscribe(self.handle, kinds=self.subscribed_kinds(), name=name)
        try:
            bus.add_snapshot_hook(name, self.save_state, self.load_state)
        except BaseException:
            bus.unsubscribe(sub_id)
            raise
        self._attached = (bus, sub_id, name)
        return self

    def detach(self) -> None:
        """Unsubscribe and remove the snapshot hook (nothing when not attached)."""
        if self._attached is None:
            return
        bus, sub_id, name = self._attached
        self._attached = None
        bus.unsubscribe(sub_id)
        bus.remove_snapshot_hook(name)
