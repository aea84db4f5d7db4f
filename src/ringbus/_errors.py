"""Exceptions raised by ringbus, shared by both cores and the facade."""

from __future__ import annotations

__all__ = [
    "CascadeLimitError",
    "PendingOverflowError",
    "ProducerClosedError",
    "UnknownDestinationError",
    "RingFullError",
    "RingbusError",
    "WrongThreadError",
    "async_handler_message",
    "cascade_limit_message",
    "refuse_awaitable",
    "clock_back_message",
    "event_before_clock_message",
    "handler_errors_message",
    "inbox_refused_note",
    "pending_overflow_message",
    "producer_closed_message",
    "ring_full_message",
    "wrong_thread_message",
]


class RingbusError(Exception):
    """Base class of every error ringbus raises on its own account."""


class PendingOverflowError(RingbusError):
    """The pending queue is full: the event was refused, nothing accepted was lost."""


class RingFullError(RingbusError):
    """The ring is full and ``drop_policy="RAISE"`` forbids overwriting it."""


class UnknownDestinationError(RingbusError):
    """A direct event named a destination that no subscriber takes."""


class WrongThreadError(RingbusError, RuntimeError):
    """A bus was used from a thread other than the one it belongs to."""


class ProducerClosedError(RingbusError, RuntimeError):
    """A closed producer was asked to publish."""


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


def wrong_thread_message(what: str, owner: int, current: int) -> str:
    return (
        f"{what}() was called from thread {current}, but this bus belongs to thread "
        f"{owner} (bus.owner_thread): publish from other threads through "
        "bus.producer(name), or hand the bus over with bus.transfer_to_current_thread() "
        "called from the thread that takes it"
    )


def producer_closed_message(name: str) -> str:
    return (
        f"producer {name!r} is closed (bus.close_producers() or producer.close()); "
        "the events it published before still enter the bus at the next drain"
    )


def inbox_refused_note(name: str, kind: str) -> str:
    return (
        f"ringbus: producer {name!r}'s event of kind {kind!r} was refused as it entered "
        "the bus at the start of drain() and is dropped; the events after it wait"
    )


def async_handler_message(handler: object) -> str:
    return (
        f"handler {handler!r} is a coroutine function (or returned an awaitable): "
        "drain() cannot await it, so it would never run; subscribe it with "
        "bus.subscribe_async() and drain with bus.drain_async()"
    )


def refuse_awaitable(result: object, handler: object) -> None:
    """Close the awaitable a sync handler returned and raise the ``TypeError`` saying so.

    Its event is then a handler error, never a delivery.
    """
    close = getattr(result, "close", None)
    if callable(close):
        close()  # never awaited: no "was never awaited" warning later
    raise TypeError(async_handler_message(handler))
