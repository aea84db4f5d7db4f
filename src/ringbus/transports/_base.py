"""What every transport shares: the transform step, the buffer, the batch per drain, retries."""

from __future__ import annotations

import abc
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Self

from .._errors import RingbusError
from .._normalise import check_option_count, event_dict_problems

__all__ = [
    "OVERFLOW_POLICIES",
    "encode_json",
    "BackgroundTransport",
    "Record",
    "SendFailed",
    "SendRefused",
    "TransportOverflowError",
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
        return {**_counters(self), "last_error": self.last_error}


def dumps_record(record: Record) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _compact_encoder() -> Callable[[object], str]:
    """Compact JSON, NaN refused, with the C encoder built once (not once per call)."""
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

    def refuse(value: object) -> object:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    encode = make(None, refuse, json.encoder.encode_basestring_ascii, None, ":", ",",
                  False, False, False)  # fmt: skip

    def encode_text(value: object) -> str:
        return "".join(encode(value, 0))

    return encode_text


#: ``dumps_record`` for whole batches: one call encodes a list of records.
encode_json: Callable[[object], str] = _compact_encoder()


def _counters(transport: Transport | BackgroundTransport) -> dict[str, Any]:
    """The counters every transport's ``status()`` starts with, in this order."""
    return {
        "name": transport.name,
        "state": transport.state(),
        "received": transport.received,
        "sent": transport.sent,
        "failed": transport.failed,
        "dropped": transport.dropped,
        "filtered": transport.filtered,
        "invalid": transport.invalid,
        "buffered": transport.buffered,
    }


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


# -- sending in the background -------------------------------------------------

#: What a background transport does when its queue is full (see :class:`BackgroundTransport`).
OVERFLOW_POLICIES = ("drop_oldest", "block", "raise")

#: Most seq ranges one loss report names; the rest are summed in its counts.
MAX_REPORTED_RANGES = 32


class TransportOverflowError(RingbusError):
    """A background transport's queue was full under ``overflow="raise"``.

    The events that did not fit were dropped, counted and reported like any
    other drop; the error tells the loop at once.
    """


class SendFailed(Exception):
    """A send that may succeed later: the batch is kept and retried after a backoff."""


class SendRefused(Exception):
    """The receiver will never take this batch: it is dropped, counted and reported."""


class SecondsBackoff:
    """Exponential backoff in seconds of ``clock`` (monotonic by default)."""

    def __init__(
        self, base: float, maximum: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 < base <= maximum:
            raise ValueError(
                f"backoff needs 0 < retry_base <= retry_max seconds, got {base!r}, {maximum!r}"
            )
        self.base = float(base)
        self.maximum = float(maximum)
        self.clock = clock
        self.failures = 0
        self.retry_at = 0.0

    def wait(self) -> float:
        """Seconds until the next attempt may be made (0: now)."""
        return max(0.0, self.retry_at - self.clock()) if self.failures else 0.0

    def failed(self) -> None:
        self.failures += 1
        self.retry_at = self.clock() + min(
            self.maximum, self.base * 2 ** min(self.failures - 1, 30)
        )

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0


class SeqRanges:
    """Seqs collected as ``[first, last]`` runs (a run: seqs next to each other in a batch)."""

    __slots__ = ("events", "ranges")

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []
        self.events = 0

    def add_run(self, first: int, last: int, count: int) -> None:
        """Add ``count`` events whose seqs go from ``first`` to ``last``."""
        self.events += count
        if self.ranges and self.ranges[-1][1] + 1 >= first > self.ranges[-1][0]:
            self.ranges[-1][1] = max(self.ranges[-1][1], last)
        else:
            self.ranges.append([first, last])

    def add(self, seqs: Iterable[int]) -> None:
        """Add events by their seqs (ascending)."""
        for seq in seqs:
            self.add_run(seq, seq, 1)

    def take(self) -> tuple[list[list[int]], int]:
        """The ranges and event count so far; start again empty."""
        ranges, events = self.ranges, self.events
        self.ranges, self.events = [], 0
        return ranges, events

    def __bool__(self) -> bool:
        return self.events > 0


def describe_ranges(ranges: list[list[int]]) -> str:
    """``"1-5, 9, 12-20"`` (at most :data:`MAX_REPORTED_RANGES`, then ``"..."``)."""
    parts = [f"{a}-{b}" if a != b else f"{a}" for a, b in ranges[:MAX_REPORTED_RANGES]]
    if len(ranges) > MAX_REPORTED_RANGES:
        parts.append(f"... ({len(ranges) - MAX_REPORTED_RANGES} more ranges)")
    return ", ".join(parts)


class BackgroundTransport(abc.ABC):
    """A transport whose network work runs on a sender thread: ``drain()`` never waits on it.

    Its handler only keeps a reference to each event it is given (events are
    immutable). When a drain ends, the events it delivered go to a bounded
    queue in one step, and a background thread transforms, serialises and
    sends them in batches, retrying a failed batch with exponential backoff
    in seconds. The loop pays for the hand-off, never for the network.

    Overflow policy, when the queue holds ``max_buffer`` events:

    - ``"drop_oldest"`` (default): the oldest queued events are dropped;
    - ``"block"``: the drain end waits up to ``block_timeout`` seconds for
      room, then drops the oldest; after such a timeout it does not wait
      again until a send succeeds, so an outage cannot stall every drain;
    - ``"raise"``: the events that do not fit are dropped and the drain end
      raises :class:`TransportOverflowError`.

    Nothing is dropped silently: every drop is counted in ``dropped``, logged
    (warning, with the seq ranges; at most one line per ``report_every``
    seconds, the rest summed into the next) and published on the bus as a
    ``DATA_LOSS`` event (:func:`ringbus.sim.health.loss_payload`) at the end
    of a drain. :meth:`state` is ``"ok"`` only while nothing is failing or
    being lost: ``"backoff"`` (sends fail, events are queued), ``"dropping"``
    (events were dropped in the current outage or backlog, or in the last
    ``report_every`` seconds), ``"recovering"`` (sends succeed again, the
    backlog is being sent).

    :meth:`flush` and :meth:`close` are bounded in time by their ``timeout``.

    Parameters
    ----------
    transform
        The reshape/validate/select step (run on the sender thread: a
        ``reshape`` must not touch the sim's state). Validation checks what
        ``reshape`` returns; an event straight from the bus satisfies the
        schema by construction.
    max_buffer
        Largest number of events queued or being sent.
    batch_size
        Largest number of events sent in one request or entry.
    overflow, block_timeout
        The overflow policy (above).
    retry_base, retry_max
        The backoff after a failed send: ``retry_base * 2**(failures - 1)``
        seconds, at most ``retry_max``.
    report_every
        Seconds between two loss reports (log lines and ``DATA_LOSS`` events).
    name
        Label in :meth:`status`, logs and health events.
    """

    def __init__(
        self,
        *,
        transform: Transform | None = None,
        max_buffer: int = 100_000,
        batch_size: int = 1_000,
        overflow: str = "drop_oldest",
        block_timeout: float = 1.0,
        retry_base: float = 0.05,
        retry_max: float = 2.0,
        report_every: float = 1.0,
        name: str | None = None,
    ) -> None:
        check_option_count("max_buffer", max_buffer)
        check_option_count("batch_size", batch_size)
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if not block_timeout >= 0 or not report_every >= 0:
            raise ValueError("block_timeout and report_every must be >= 0 seconds")
        self.transform = transform if transform is not None else Transform()
        self.max_buffer = max_buffer
        self.batch_size = min(batch_size, max_buffer)
        self.overflow = overflow
        self.block_timeout = float(block_timeout)
        self.report_every = float(report_every)
        self.name = name or type(self).__name__
        if not hasattr(self, "_logger"):
            self._logger = logger
        self._backoff = SecondsBackoff(retry_base, retry_max)
        self._incoming: list[Any] = []
        self._queue: deque[Any] = deque()
        self._inflight: list[Any] = []
        self._records: list[tuple[int, Record]] | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._hurry = False
        self._bus: Any = None
        self._sub_id: int | None = None
        self._producer = "unattached"
        self._lost = SeqRanges()
        self._lost_reasons: list[str] = []
        self._last_report = -float("inf")
        self._last_drop = -float("inf")
        self._episode = False  # a failure or a drop happened; over once the queue is empty
        self._episode_dropped = False
        self._block_spent = False
        self.received = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.filtered = 0
        self.invalid = 0
        self.outages = 0
        self.loss_reports = 0
        self.last_error: str | None = None
        self.last_invalid: list[str] = []
        self.last_loss: str | None = None

    # -- wiring --------------------------------------------------------
    def attach(self, bus: Any) -> Self:
        """Subscribe to ``bus``, hand each drain's events to the sender; return self."""
        if self._bus is not None:
            raise RuntimeError(f"{self.name} is already attached to a bus; detach() it first")
        self._bus = bus
        self._producer = str(bus.config.name)
        self._sub_id = bus.subscribe(
            self._incoming.append, kinds=self.transform.kinds, name=self.name
        )
        bus.add_drain_listener(self._drain_ended)
        self._closing = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name=f"ringbus-{self.name}-sender", daemon=True
            )
            self._thread.start()
        return self

    def detach(self, timeout: float = 5.0) -> bool:
        """:meth:`close` (kept for the transports' common interface)."""
        return self.close(timeout)

    @property
    def producer(self) -> str:
        """The identity of the bus this transport is attached to (its config name)."""
        return self._producer

    # -- the loop's side -----------------------------------------------
    def _drain_ended(self) -> None:
        incoming = self._incoming
        if incoming:
            events = incoming[:]
            incoming.clear()
            self.received += len(events)
            try:
                self._enqueue(events)
            finally:
                self._report_loss()
        elif self._lost:
            self._report_loss()

    def _enqueue(self, events: list[Any]) -> None:
        refused = False
        with self._cond:
            queue = self._queue
            if self.overflow == "block" and not self._block_spent:
                deadline = time.monotonic() + self.block_timeout
                while len(queue) + len(self._inflight) + len(events) > self.max_buffer:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None or not self._thread.is_alive():
                        self._block_spent = True
                        break
                    self._hurry = True
                    self._cond.notify_all()
                    self._cond.wait(left)
            queue.extend(events)
            excess = len(queue) + len(self._inflight) - self.max_buffer
            if excess > 0:
                excess = min(excess, len(queue))
                if self.overflow == "raise":
                    dropped = [queue.pop() for _ in range(excess)][::-1]
                    refused = True
                    reason = "the queue was full (overflow='raise')"
                else:
                    dropped = [queue.popleft() for _ in range(excess)]
                    reason = "the queue was full; the oldest queued events were dropped"
                self._drop([event.seq for event in dropped], reason)
            self._cond.notify_all()
        if refused:
            raise TransportOverflowError(
                f"{self.name}: the send queue holds max_buffer={self.max_buffer} events; "
                f"{excess} events of this drain were dropped (see status() and DATA_LOSS)"
            )

    def _drop(self, seqs: list[int], reason: str) -> None:
        """Count and remember lost events (call with the lock held)."""
        if not seqs:
            return
        self.dropped += len(seqs)
        self._lost.add(seqs)
        if reason not in self._lost_reasons:
            self._lost_reasons.append(reason)
        self._last_drop = time.monotonic()
        self._episode = True
        self._episode_dropped = True

    def _report_loss(self, *, now: bool = False) -> None:
        """Log and publish what was lost since the last report (the loop's thread)."""
        clock = time.monotonic()
        with self._cond:
            if not self._lost or (not now and clock - self._last_report < self.report_every):
                return
            ranges, events = self._lost.take()
            reasons, self._lost_reasons = self._lost_reasons, []
            self._last_report = clock
            self.loss_reports += 1
        reason = "; ".join(reasons)
        text = describe_ranges(ranges)
        self.last_loss = f"{events} events, seqs {text}: {reason}"
        self._logger.warning("%s: lost %d events (seqs %s): %s", self.name, events, text, reason)
        if self._bus is not None:
            from ..sim.health import publish_loss

            publish_loss(
                self._bus,
                reporter=self.name,
                producer=self._producer,
                reason=reason,
                events=events,
                ranges=ranges,
                total=self.dropped,
            )

    # -- the sender's side ---------------------------------------------
    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._inflight:
                        wait = 0.0 if self._hurry or self._closing else self._backoff.wait()
                        if wait <= 0:
                            break
                        cond.wait(wait)
                        continue
                    if self._queue:
                        take = min(self.batch_size, len(self._queue))
                        self._inflight = [self._queue.popleft() for _ in range(take)]
                        self._records = None
                        break
                    if self._episode and not self._backoff.failures:
                        self._episode = self._episode_dropped = False
                        self._block_spent = False
                    cond.notify_all()  # flush() waits for an empty queue
                    if self._closing:
                        return
                    cond.wait()
                self._hurry = False
                batch = self._inflight
            try:
                self._send_inflight(batch)
            except Exception as error:  # a bug in a subclass must not kill the sender
                self._logger.exception("%s: the sender failed", self.name)
                with cond:
                    self.last_error = f"{type(error).__name__}: {error}"
                    self._drop([event.seq for event in batch], f"the sender failed: {error}")
                    self._inflight = []
                    cond.notify_all()

    def _prepare(self, batch: list[Any]) -> list[tuple[int, Record]]:
        transform = self.transform
        reshape = transform.reshape
        records: list[tuple[int, Record]] = []
        for event in batch:
            record: Record | None = event.to_dict()
            if reshape is not None:
                try:
                    record = reshape(record)  # type: ignore[arg-type]
                except Exception as error:
                    self.invalid += 1
                    self.last_invalid = [f"seq {event.seq}: reshape raised {error!r}"]
                    continue
                if record is None:
                    self.filtered += 1
                    continue
                if not isinstance(record, dict):
                    self.invalid += 1
                    self.last_invalid = [
                        f"seq {event.seq}: reshape must return a dict or None, "
                        f"got {type(record).__name__}"
                    ]
                    continue
                if transform.validate:
                    problems = validate_event_dict(record)
                    if problems:
                        self.invalid += 1
                        self.last_invalid = problems
                        continue
            records.append((event.seq, record))  # type: ignore[arg-type]
        return records

    def _send_inflight(self, batch: list[Any]) -> None:
        if self._records is None:
            self._records = self._prepare(batch)
        records = self._records
        error: Exception | None = None
        delivered = 0
        try:
            if records:
                delivered = self._send(records)
        except SendFailed as failure:
            error = failure
        except SendRefused as refusal:
            with self._cond:
                self.failed += 1
                self.last_error = str(refusal)
                self._drop([seq for seq, _record in records], str(refusal))
                self._inflight = []
                self._records = None
                self._cond.notify_all()
            return
        with self._cond:
            if error is None:
                if self._backoff.failures:
                    self._logger.warning("%s: sending again after %d failed attempts", self.name,
                                   self._backoff.failures)  # fmt: skip
                self._backoff.succeeded()
                self.sent += delivered
                self._inflight = []
                self._records = None
            else:
                self.failed += 1
                self.last_error = str(error)
                if not self._backoff.failures:
                    self.outages += 1
                    self._episode = True
                    self._logger.warning(
                        "%s: cannot send (%s); queueing up to %d events, retrying with backoff",
                        self.name,
                        error,
                        self.max_buffer,
                    )
                self._backoff.failed()
            self._cond.notify_all()

    @abc.abstractmethod
    def _send(self, records: list[tuple[int, Record]]) -> int:
        """Send ``records`` (``(seq, record)`` pairs, oldest first) on the sender thread.

        Return how many were delivered (the others could not be serialised
        and are counted in ``invalid``). Raise :class:`SendFailed` to retry
        the same records later, or :class:`SendRefused` when the receiver
        will never take them.
        """

    # -- flushing and closing ------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Hand over what the bus delivered and wait until it is sent, at most ``timeout`` s.

        A pending retry is tried at once. Returns whether nothing is left
        to send. Call it from the loop's thread, outside ``drain()``.
        """
        if self._incoming:
            self._drain_ended()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._hurry = True
            self._cond.notify_all()
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._cond.wait(left)
            return not (self._queue or self._inflight)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for at most ``timeout`` s, stop the sender and detach from the bus.

        What is still unsent then is dropped, counted and reported (a warning
        and a ``DATA_LOSS`` event on the bus). Returns whether everything was
        sent.
        """
        complete = self.flush(timeout)
        with self._cond:
            if not complete:
                left = list(self._queue) + list(self._inflight)
                self._queue.clear()
                self._drop(
                    [event.seq for event in left],
                    f"closed with {len(left)} events unsent after {timeout} s",
                )
            self._inflight = [] if not complete else self._inflight
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(0.1, timeout))
        self._report_loss(now=True)
        if self._bus is not None:
            self._bus.unsubscribe(self._sub_id)
            self._bus.remove_drain_listener(self._drain_ended)
            self._bus = None
            self._sub_id = None
        return complete

    # -- reporting -----------------------------------------------------
    @property
    def buffered(self) -> int:
        """Events waiting to be sent (not yet handed over, queued, or being sent)."""
        return len(self._incoming) + len(self._queue) + len(self._inflight)

    def state(self) -> str:
        """``"ok"``, ``"backoff"``, ``"dropping"`` or ``"recovering"`` (see the class)."""
        recent = time.monotonic() - self._last_drop < self.report_every
        if recent or (self._episode_dropped and self._backoff.failures):
            return "dropping"
        if self._backoff.failures:
            return "backoff"
        if self._episode:
            return "recovering"
        return "ok"

    def status(self) -> dict[str, Any]:
        """The transport's counters and state, JSON-ready."""
        wait = self._backoff.wait()
        return {
            **_counters(self),
            "outages": self.outages,
            "loss_reports": self.loss_reports,
            "retry_in": round(wait, 3) if self._backoff.failures else None,
            "last_error": self.last_error,
            "last_loss": self.last_loss,
        }
