"""What every transport shares: the transform step, the buffer, the batch per drain, retries."""

from __future__ import annotations

import abc
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Self

from .._normalise import check_option_count, event_dict_problems

__all__ = [
    "Record",
    "Reshape",
    "RetryingTransport",
    "Transform",
    "Transport",
    "dumps_record",
    "validate_event_dict",
]

logger = logging.getLogger("ringbus.transports")

#: The event schema (see :mod:`ringbus._normalise`): what every transport checks.
validate_event_dict = event_dict_problems


Record = dict[str, Any]
Reshape = Callable[[Record], Record | None]


class Transform:
    """What a transport does to each event before it is buffered.

    Parameters
    ----------
    validate
        Check the event's dict against :data:`EVENT_SCHEMA`; an invalid one is
        not sent and is counted in ``invalid`` (the last problems are kept).
    reshape
        ``reshape(record) -> record | None`` on the event's ``to_dict()``
        (a fresh dict it may change); ``None`` leaves the event out (counted
        in ``filtered``).
    kinds
        Kinds and fnmatch globs to send; ``None`` sends every kind. The
        transport subscribes with them, so the cost is paid at subscribe time.
    """

    __slots__ = ("kinds", "reshape", "validate")

    def __init__(
        self,
        *,
        validate: bool = True,
        reshape: Reshape | None = None,
        kinds: Iterable[str] | str | None = None,
    ) -> None:
        if reshape is not None and not callable(reshape):
            raise TypeError(f"reshape must be callable or None, got {type(reshape).__name__}")
        self.validate = bool(validate)
        self.reshape = reshape
        self.kinds: tuple[str, ...] | None
        if kinds is None:
            self.kinds = None
        elif isinstance(kinds, str):
            self.kinds = (kinds,)
        else:
            self.kinds = tuple(kinds)


class Transport(abc.ABC):
    """Base of the transports: buffer on delivery, send a batch per drain.

    Each record is serialised to compact JSON when it is buffered, so a
    record that cannot be (e.g. a reshape put a set in it) is counted in
    ``invalid`` right away instead of failing a whole batch later.
    Subclasses implement :meth:`_send`, which gets the batch (a list of
    ``(seq, json_text)`` pairs, oldest first), counts what it delivered in
    ``sent`` and returns how many records, from the front, are done with
    (delivered, or refused for good and counted); the rest stay buffered for
    the next drain.

    Parameters
    ----------
    transform
        The validate/reshape/select step; ``None`` validates only.
    max_buffer
        Largest number of records waiting to be sent; past it the oldest are
        dropped and counted in ``dropped``.
    name
        Label in :meth:`status` and health events (default: the class's).

    Attributes
    ----------
    received, sent
        Events delivered to the transport; records sent out.
    failed
        Failed send attempts (each one leaves its records buffered).
    dropped
        Records lost on purpose and counted: the buffer's bound was passed,
        or the receiver refused them for good.
    filtered, invalid
        Records the transform left out; events or records that failed
        validation or serialisation (``last_invalid`` says why).
    """

    def __init__(
        self,
        *,
        transform: Transform | None = None,
        max_buffer: int = 10_000,
        name: str | None = None,
    ) -> None:
        check_option_count("max_buffer", max_buffer)
        self.transform = transform if transform is not None else Transform()
        self.max_buffer = max_buffer
        self.name = name or type(self).__name__
        self._buffer: deque[tuple[int, str]] = deque()
        self._bus: Any = None
        self._sub_id: int | None = None
        self.received = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.filtered = 0
        self.invalid = 0
        self.last_error: str | None = None
        self.last_invalid: list[str] = []

    # -- wiring --------------------------------------------------------
    def attach(self, bus: Any) -> Self:
        """Subscribe to ``bus`` and send at the end of each of its drains; return self."""
        if self._bus is not None:
            raise RuntimeError(f"{self.name} is already attached to a bus; detach() it first")
        self._bus = bus
        self._sub_id = bus.subscribe(self, kinds=self.transform.kinds, name=self.name)
        bus.add_drain_listener(self.flush)
        return self

    def detach(self) -> None:
        """Send what is buffered (one attempt), then stop receiving events."""
        if self._bus is None:
            return
        try:
            self.flush()
        finally:
            self._bus.unsubscribe(self._sub_id)
            self._bus.remove_drain_listener(self.flush)
            self._bus = None
            self._sub_id = None

    @property
    def producer(self) -> str:
        """The identity of the bus this transport is attached to (its config name)."""
        if self._bus is None:
            return "unattached"
        return str(self._bus.config.name)

    # -- delivery ------------------------------------------------------
    def __call__(self, event: Any) -> None:
        self.received += 1
        record: Record | None = event.to_dict()
        transform = self.transform
        if transform.validate:
            problems = validate_event_dict(record)
            if problems:
                self.invalid += 1
                self.last_invalid = problems
                return
        if transform.reshape is not None:
            record = transform.reshape(record)  # type: ignore[arg-type]
            if record is None:
                self.filtered += 1
                return
        try:
            if not isinstance(record, dict):
                raise TypeError(f"reshape must return a dict or None, got {type(record).__name__}")
            text = dumps_record(record)
        except (TypeError, ValueError) as error:
            self.invalid += 1
            self.last_invalid = [f"seq {event.seq}: {error}"]
            return
        self._buffer.append((event.seq, text))
        if len(self._buffer) > self.max_buffer:
            self._buffer.popleft()
            self.dropped += 1

    def flush(self, *, force: bool = False) -> int:
        """Send what is buffered now; return how many records left the buffer.

        Runs at the end of each drain. While backing off after a failure it
        sends nothing, unless ``force`` (e.g. a final flush before exit).
        """
        if not self._buffer or not (force or self._ready()):
            return 0
        batch = list(self._buffer)
        done = self._send(batch)
        for _ in range(done):
            self._buffer.popleft()
        return done

    def _ready(self) -> bool:
        """Whether a send may be attempted now (backoff says no)."""
        return True

    @abc.abstractmethod
    def _send(self, batch: list[tuple[int, str]]) -> int:
        """Send ``batch``; return how many records, from the front, are done with."""

    @property
    def buffered(self) -> int:
        """Records waiting to be sent."""
        return len(self._buffer)

    def state(self) -> str:
        """``"ok"``, or why the transport is not sending (e.g. ``"backoff"``)."""
        return "ok"

    def status(self) -> dict[str, Any]:
        """The transport's counters and state, JSON-ready."""
        return {
            "name": self.name,
            "state": self.state(),
            "received": self.received,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "filtered": self.filtered,
            "invalid": self.invalid,
            "buffered": len(self._buffer),
            "last_error": self.last_error,
        }


def dumps_record(record: Record) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


class _Backoff:
    """Exponential backoff counted in ticks of an injectable clock."""

    def __init__(self, clock: Callable[[], int], base_ticks: int, max_ticks: int) -> None:
        if base_ticks < 0 or max_ticks < base_ticks:
            raise ValueError(
                f"backoff needs 0 <= base_ticks <= max_ticks, got {base_ticks}, {max_ticks}"
            )
        self.clock = clock
        self.base_ticks = base_ticks
        self.max_ticks = max_ticks
        self.failures = 0
        self.retry_at = 0

    def ready(self) -> bool:
        return self.failures == 0 or self.clock() >= self.retry_at

    def failed(self) -> None:
        self.failures += 1
        delay = min(self.max_ticks, self.base_ticks * 2 ** min(self.failures - 1, 30))
        self.retry_at = self.clock() + delay

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0


class RetryingTransport(Transport):
    """A transport whose sends can fail and are retried with a backoff in ticks.

    Ticks come from ``clock()`` when given, else from the attached bus's clock.
    """

    _clock: Callable[[], int] | None
    _backoff: _Backoff

    def _start_backoff(
        self, clock: Callable[[], int] | None, base_ticks: int, max_ticks: int
    ) -> None:
        self._clock = clock
        self._backoff = _Backoff(self._now, base_ticks, max_ticks)

    def _now(self) -> int:
        if self._clock is not None:
            return int(self._clock())
        return int(self._bus.tick) if self._bus is not None else 0

    def _ready(self) -> bool:
        return self._backoff.ready()
