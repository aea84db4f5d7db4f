"""Exceptions raised by ringbus, shared by both cores and the facade."""

from __future__ import annotations

__all__ = [
    "CascadeLimitError",
    "PendingOverflowError",
    "UnknownDestinationError",
    "RingFullError",
    "RingbusError",
    "cascade_limit_message",
    "clock_back_message",
    "event_before_clock_message",
    "handler_errors_message",
    "pending_overflow_message",
    "ring_full_message",
]


class RingbusError(Exception):
    """Base class of every error ringbus raises on its own account."""


class PendingOverflowError(RingbusError):
    """The pending queue is full: the event was refused, nothing accepted was lost."""


class RingFullError(RingbusError):
    """The ring is full and ``drop_policy="RAISE"`` forbids overwriting it."""


class UnknownDestinationError(RingbusError):
    """A direct event named a destination that no subscriber takes."""


class CascadeLimitError(RingbusError):
    """Handlers kept publishing past the configured number of drain rounds."""


def pending_overflow_message(max_pending: int) -> str:
    return (
        f"pending queue is full: {max_pending} events are waiting for drain(); "
        "this event was refused and nothing already accepted was lost. "
        "Call drain() more often or raise EventBusConfig.max_pending."
    )


def ring_full_message(max_events: int) -> str:
    return (
        f"ring is full: it holds max_events={max_events} events and "
        'drop_policy="RAISE" forbids overwriting the oldest; '
        'raise max_events or use drop_policy="DROP_OLDEST".'
    )


def cascade_limit_message(rounds: int, pending: int) -> str:
    return (
        f"cascade did not settle within {rounds} drain rounds: {pending} events "
        "published by handlers are still pending (they are kept); "
        "drain again or raise cascade_rounds."
    )


def handler_errors_message(count: int) -> str:
    return f"{count} handler error(s) during drain"


def clock_back_message(field: str, clock: int, value: int) -> str:
    return (
        f"set_clock() cannot move the {field} back from {clock} to {value}: "
        "time on a bus never goes backwards (use a new bus for a new run)"
    )


def event_before_clock_message(field: str, value: int, clock: int) -> str:
    return (
        f"event {field} {value} is before the bus clock's {field} {clock}: "
        "time on a bus never goes backwards; publish with the current clock "
        "and keep the original time in the payload"
    )
