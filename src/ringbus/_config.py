"""Configuration of an :class:`~ringbus.EventBus`."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Literal

from ._limits import check_ring_size
from ._normalise import CLOCK_POLICIES, DROP_POLICIES, MAX_PAYLOAD_ITEMS_LIMIT, check_positive

__all__ = [
    "CLOCK_POLICIES",
    "ClockPolicy",
    "DropPolicy",
    "ErrorPolicy",
    "UnknownDestinationPolicy",
    "DROP_POLICIES",
    "ERROR_POLICIES",
    "UNKNOWN_DESTINATION_POLICIES",
    "EventBusConfig",
]

DropPolicy = Literal["DROP_OLDEST", "RAISE"]
ErrorPolicy = Literal["raise", "log", "dead_letter"]
UnknownDestinationPolicy = Literal["raise", "log", "dead_letter"]
ClockPolicy = Literal["monotonic", "free"]

UNKNOWN_DESTINATION_POLICIES = ("raise", "log", "dead_letter")
ERROR_POLICIES = ("raise", "log", "dead_letter")


def _positive(name: str, value: object, maximum: int = sys.maxsize) -> None:
    check_positive(f"EventBusConfig.{name}", value, maximum)


@dataclass(frozen=True, slots=True)
class EventBusConfig:
    """How an :class:`~ringbus.EventBus` behaves.

    Parameters
    ----------
    enabled
        ``False`` makes :meth:`~ringbus.EventBus.publish` a cheap no-op that
        returns 0 and stores nothing.
    max_events
        Slots in the ring (preallocated); publishing past it overwrites the
        oldest event. The ring, ``max_events x (88 + 16 x max_payload_items)``
        bytes, may take at most 64 GiB (``ringbus.MAX_RING_BYTES``).
    max_payload_items
        Largest number of payload pairs kept per event (1 to 64); a longer
        payload is cut and ends with ``("__truncated__", True)``.
    drop_policy
        ``"DROP_OLDEST"`` overwrites the oldest event when the ring is full;
        ``"RAISE"`` refuses the new event with :class:`~ringbus.RingFullError`.
    max_pending
        Largest number of events waiting for :meth:`~ringbus.EventBus.drain`;
        one more raises :class:`~ringbus.PendingOverflowError`.
    cascade_rounds
        Rounds one ``drain()`` may run: 1 leaves events that handlers publish
        for the next drain; more dispatches them breadth-first in the same
        call and raises :class:`~ringbus.CascadeLimitError` past the bound.
    error_policy
        What a raising handler leads to: ``"raise"`` (all errors raised
        together as an ``ExceptionGroup`` after the drain), ``"log"``
        (logged on the ``ringbus`` logger) or ``"dead_letter"`` (retried on
        later drains, then kept in ``bus.dead_letters``). A subscription may
        override it: ``subscribe(..., error_policy=...)``.
    max_retries
        ``"dead_letter"``: retries after the first failure (0 to 64) before
        a delivery becomes a dead letter.
    retry_backoff_ticks
        ``"dead_letter"``: ticks before the first retry; each further retry
        waits twice as long (deterministic, counted on the bus clock).
    dead_letter_limit
        ``"dead_letter"``: most dead letters kept; one more drops the oldest,
        counted in ``bus.dead_letters.stats()["dropped"]`` and logged.
    unknown_destination
        What an event sent with :meth:`~ringbus.EventBus.send` to a name no
        subscriber takes leads to: ``"raise"`` (an
        :class:`~ringbus.UnknownDestinationError` among the errors raised after
        the drain), ``"log"``, or ``"dead_letter"`` (kept in
        ``bus.dead_letters`` with reason ``"unknown destination"``).
    clock_policy
        ``"monotonic"`` (the default): time never goes backwards.
        :meth:`~ringbus.EventBus.set_clock` refuses a tick or day before
        the clock's, so does ``publish`` for an event's own tick or day, and
        an event later than the clock moves it forward; every stream (and
        journal) is then in time order. ``"free"`` accepts any tick and day
        and never moves the clock: for a bus that merges several runs, such
        as a :class:`~ringbus.transports.redis_streams.RedisSource`'s. A journal needs a
        monotonic bus.
    snapshot_debug_events
        How many recent events ``snapshot(debug_events=True)`` carries.
    name
        The bus's identity, carried by transports and bridges.
    """

    enabled: bool = True
    max_events: int = 50_000
    max_payload_items: int = 12
    drop_policy: DropPolicy = "DROP_OLDEST"
    max_pending: int = 1_000_000
    cascade_rounds: int = 1
    error_policy: ErrorPolicy = "raise"
    max_retries: int = 3
    retry_backoff_ticks: int = 1
    dead_letter_limit: int = 1_000
    unknown_destination: UnknownDestinationPolicy = "raise"
    snapshot_debug_events: int = 100
    name: str = "bus"
    clock_policy: ClockPolicy = "monotonic"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError(
                f"EventBusConfig.enabled must be a bool, got {type(self.enabled).__name__}"
            )
        for name in (
            "max_events",
            "max_pending",
            "cascade_rounds",
            "retry_backoff_ticks",
            "dead_letter_limit",
        ):
            _positive(name, getattr(self, name))
        _positive("max_payload_items", self.max_payload_items, MAX_PAYLOAD_ITEMS_LIMIT)
        check_ring_size(self.max_events, self.max_payload_items, "EventBusConfig.")
        if self.drop_policy not in DROP_POLICIES:
            raise ValueError(
                f"EventBusConfig.drop_policy must be one of {', '.join(DROP_POLICIES)}, "
                f"got {self.drop_policy!r}"
            )
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError(
                f"EventBusConfig.max_retries must be an int, got {type(self.max_retries).__name__}"
            )
        if not 0 <= self.max_retries <= 64:
            raise ValueError(f"EventBusConfig.max_retries must be 0 to 64, got {self.max_retries}")
        if self.error_policy not in ERROR_POLICIES:
            raise ValueError(
                f"EventBusConfig.error_policy must be one of {', '.join(ERROR_POLICIES)}, "
                f"got {self.error_policy!r}"
            )
        if (
            isinstance(self.snapshot_debug_events, bool)
            or not isinstance(self.snapshot_debug_events, int)
            or self.snapshot_debug_events < 0
        ):
            raise ValueError(
                "EventBusConfig.snapshot_debug_events must be an int >= 0, "
                f"got {self.snapshot_debug_events!r}"
            )
        if self.unknown_destination not in UNKNOWN_DESTINATION_POLICIES:
            raise ValueError(
                "EventBusConfig.unknown_destination must be one of "
                f"{', '.join(UNKNOWN_DESTINATION_POLICIES)}, got {self.unknown_destination!r}"
            )
        if self.clock_policy not in CLOCK_POLICIES:
            raise ValueError(
                f"EventBusConfig.clock_policy must be one of {', '.join(CLOCK_POLICIES)}, "
                f"got {self.clock_policy!r}"
            )
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"EventBusConfig.name must be a non-empty str, got {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> EventBusConfig:
        """Build a configuration from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"config must be a dict, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ValueError(f"unknown EventBusConfig options: {', '.join(unknown)}")
        return cls(**data)
