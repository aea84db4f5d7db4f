"""Retries with backoff and the bounded dead-letter queue of an :class:`~ringbus.EventBus`.

A delivery whose handler raised under the ``"dead_letter"`` error policy is
retried on later drains, once the bus clock has reached its due tick: the
``n``-th retry is due ``retry_backoff_ticks * 2 ** (n - 1)`` ticks after the
failure before it. After ``max_retries`` failed retries the delivery becomes
a :class:`DeadLetter`, kept in a queue of at most ``dead_letter_limit``
entries; a full queue drops its oldest entry, counts it in
``stats()["dropped"]`` and logs a warning — never silently.

Everything here is deterministic: backoff is counted in ticks, due
deliveries run in ``(due tick, seq, subscription id)`` order.
"""

from __future__ import annotations

import builtins
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

__all__ = ["DeadLetter", "DeadLetterQueue", "PendingRetry"]

logger = logging.getLogger("ringbus")

#: Looks up a live subscription by id and name (``None``: it is gone).
SubscriptionLookup = Callable[[int, "str | None"], Any]
#: Builds an event of the bus's core from ``WorldEvent.to_dict()`` output.
EventFactory = Callable[[dict[str, Any]], Any]


def _describe_error(error: BaseException) -> tuple[str, str]:
    return type(error).__name__, str(error)


def _entry_dict(entry: Any) -> dict[str, Any]:
    """A retry or dead letter as JSON-ready data: every field in order, the event
    as its ``to_dict()``, the exception object left out."""
    data = {item.name: getattr(entry, item.name) for item in fields(entry) if item.name != "error"}
    data["event"] = entry.event.to_dict()
    return data


@dataclass
class PendingRetry:
    """A failed delivery waiting for its next attempt.

    Attributes
    ----------
    event
        The event that failed to be delivered.
    sub_id, subscriber
        The subscription id and a readable description of the subscriber.
    name
        The subscription's name (``None`` if it had none).
    attempts
        Deliveries tried so far (the first one included).
    due_tick
        The bus tick from which the next attempt runs.
    first_tick, last_tick
        Bus ticks of the first and the latest failure.
    error
        The latest exception (``None`` after a restore from a snapshot).
    error_type, error_message
        The latest exception's type name and message.
    """

    event: Any
    sub_id: int
    subscriber: str
    name: str | None
    attempts: int
    due_tick: int
    first_tick: int
    last_tick: int
    error_type: str
    error_message: str
    error: BaseException | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as JSON-ready data (the exception object is not kept)."""
        return _entry_dict(self)


@dataclass
class DeadLetter:
    """A delivery that failed ``1 + max_retries`` times and is no longer retried.

    Attributes
    ----------
    event
        The event that could not be delivered.
    sub_id, subscriber, name
        Which subscription it was for (id, description, name).
    attempts
        How many deliveries were tried.
    first_tick, last_tick
        Bus ticks of the first and the last failure.
    error
        The last exception (``None`` after a restore from a snapshot).
    error_type, error_message
        The last exception's type name and message.
    reason
        ``"retries exhausted"``, ``"subscription removed"`` or
        ``"manual retry failed"``.
    """

    event: Any
    sub_id: int
    subscriber: str
    name: str | None
    attempts: int
    first_tick: int
    last_tick: int
    error_type: str
    error_message: str
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the dead letter as JSON-ready data (the exception object is not kept)."""
        return _entry_dict(self)


class DeadLetterQueue:
    """Pending retries and dead letters of one bus; reach it as ``bus.dead_letters``.

    Parameters
    ----------
    max_retries
        Retries after the first failure before a delivery becomes a dead letter.
    retry_backoff_ticks
        Ticks before the first retry; each further retry waits twice as long.
    limit
        Most dead letters kept; one more drops the oldest (counted, logged).
    lookup
        Finds a live subscription by ``(sub_id, name)``.
    """

    def __init__(
        self, max_retries: int, retry_backoff_ticks: int, limit: int, lookup: SubscriptionLookup
    ) -> None:
        self.max_retries = max_retries
        self.retry_backoff_ticks = retry_backoff_ticks
        self.limit = limit
        self._lookup = lookup
        #: Read by the bus's drain(): empty means retries cost nothing.
        self.retries: list[PendingRetry] = []
        self._dead: deque[DeadLetter] = deque()
        self._dropped = 0
        self._recovered = 0
        self._failures = 0
        self._running = False
        # Set by drain_async while drain listeners run: it awaits the retries itself.
        self.hold_retries = False
        #: Set once the bus calls drain_started/drain_ended around its drains.
        self.listening = False
        self._depth = 0

    # -- recording -----------------------------------------------------
    def _backoff(self, attempts: int) -> int:
        return self.retry_backoff_ticks << (attempts - 1)

    def record_failure(self, event: Any, subscription: Any, error: Exception, tick: int) -> None:
        """Record the first failed delivery of ``event`` to ``subscription`` at ``tick``."""
        self._failures += 1
        error_type, message = _describe_error(error)
        entry = PendingRetry(
            event=event,
            sub_id=subscription.sub_id,
            subscriber=repr(subscription),
            name=subscription.name,
            attempts=1,
            due_tick=tick + self._backoff(1),
            first_tick=tick,
            last_tick=tick,
            error_type=error_type,
            error_message=message,
            error=error,
        )
        if self.max_retries == 0:
            self._bury(entry, "retries exhausted")
        else:
            self.retries.append(entry)

    def record_undeliverable(
        self, event: Any, destination: str, error: Exception, tick: int
    ) -> None:
        """Keep a direct event whose destination no subscriber takes."""
        entry = PendingRetry(
            event=event,
            sub_id=0,
            subscriber=f"destination {destination!r}",
            name=destination,
            attempts=0,
            due_tick=tick,
            first_tick=tick,
            last_tick=tick,
            error_type=type(error).__name__,
            error_message=str(error),
            error=error,
        )
        self._failures += 1
        self._bury(entry, "unknown destination")

    def _bury(self, entry: PendingRetry, reason: str) -> None:
        if len(self._dead) >= self.limit:
            lost = self._dead.popleft()
            self._dropped += 1
            logger.warning(
                "dead-letter queue is full (dead_letter_limit=%d): dropped the oldest dead "
                "letter (seq=%d kind=%s for %s); %d dropped so far. Purge or retry dead "
                "letters more often, or raise EventBusConfig.dead_letter_limit.",
                self.limit,
                lost.event.seq,
                lost.event.kind,
                lost.subscriber,
                self._dropped,
            )
        self._dead.append(
            DeadLetter(
                event=entry.event,
                sub_id=entry.sub_id,
                subscriber=entry.subscriber,
                name=entry.name,
                attempts=entry.attempts,
                first_tick=entry.first_tick,
                last_tick=entry.last_tick,
                error_type=entry.error_type,
                error_message=entry.error_message,
                reason=reason,
                error=entry.error,
            )
        )
        logger.warning(
            "dead letter: seq=%d kind=%s for %s after %d attempt(s) (%s): %s: %s",
            entry.event.seq,
            entry.event.kind,
            entry.subscriber,
            entry.attempts,
            reason,
            entry.error_type,
            entry.error_message,
        )

    # -- retrying ------------------------------------------------------
    def drain_started(self) -> None:
        """Called by the bus before each drain."""
        self._depth += 1

    def drain_ended(self, tick: int) -> None:
        """Called by the bus after each drain: runs the retries due at ``tick``.

        Nothing runs at the end of a drain nested in a handler (the core
        refuses those), and nothing costs more than a check when no
        retries are waiting.
        """
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self.retries and not self.hold_retries:
            self.run_due(tick)

    def run_due(self, tick: int) -> int:
        """Retry every delivery due at ``tick``; return how many succeeded."""
        steps = self._retry_due(tick)
        try:
            target = next(steps)
            while True:
                subscription, event = target
                try:
                    subscription.handler(event)
                except Exception as error:
                    target = steps.send(error)
                else:
                    target = steps.send(None)
        except StopIteration as stop:
            return int(stop.value)
        finally:
            steps.close()

    async def run_due_async(
        self, tick: int, call: Callable[[Callable[[Any], object], Any], Awaitable[object]]
    ) -> int:
        """:meth:`run_due`, awaiting each retry through ``call(handler, event)`` (drain_async)."""
        steps = self._retry_due(tick)
        try:
            target = next(steps)
            while True:
                subscription, event = target
                try:
                    await call(subscription.handler, event)
                except Exception as error:
                    target = steps.send(error)
                else:
                    target = steps.send(None)
        except StopIteration as stop:
            return int(stop.value)
        finally:
            steps.close()

    def _retry_due(self, tick: int) -> Generator[tuple[Any, Any], Exception | None, int]:
        """The retries due at ``tick``, in order: yields ``(subscription, event)`` to
        call and takes back the error it raised (or ``None``); returns how many
        succeeded."""
        if self._running:
            return 0
        due = [entry for entry in self.retries if entry.due_tick <= tick]
        if not due:
            return 0
        self.retries = [entry for entry in self.retries if entry.due_tick > tick]
        due.sort(key=lambda entry: (entry.due_tick, entry.event.seq, entry.sub_id))
        delivered = 0
        self._running = True
        try:
            for entry in due:
                subscription = self._lookup(entry.sub_id, entry.name)
                if subscription is None:
                    self._bury(entry, "subscription removed")
                    continue
                error = yield subscription, entry.event
                if error is not None:
                    error.add_note(
                        f"ringbus: retry {entry.attempts} of seq={entry.event.seq} "
                        f"kind={entry.event.kind!r} to {entry.subscriber} failed"
                    )
                    entry.attempts += 1
                    entry.last_tick = tick
                    entry.error = error
                    entry.error_type, entry.error_message = _describe_error(error)
                    if entry.attempts > self.max_retries:
                        self._bury(entry, "retries exhausted")
                    else:
                        entry.due_tick = tick + self._backoff(entry.attempts)
                        self.retries.append(entry)
                else:
                    delivered += 1
                    self._recovered += 1
        finally:
            self._running = False
        return delivered

    # -- the public queue ----------------------------------------------
    def list(self, *, sub_id: int | None = None) -> list[DeadLetter]:
        """The dead letters, oldest first (only ``sub_id``'s if given)."""
        return [d for d in self._dead if sub_id is None or d.sub_id == sub_id]

    def pending_retries(self, *, sub_id: int | None = None) -> builtins.list[PendingRetry]:
        """Failed deliveries still waiting for a retry, in due order."""
        entries = [e for e in self.retries if sub_id is None or e.sub_id == sub_id]
        return sorted(entries, key=lambda e: (e.due_tick, e.event.seq, e.sub_id))

    def retry(self, *, sub_id: int | None = None) -> int:
        """Deliver dead letters again, now; return how many succeeded.

        A dead letter whose delivery succeeds leaves the queue. One that
        fails again stays, with its attempt count and error updated; one
        whose subscription is gone stays untouched. Only ``sub_id``'s
        dead letters if given.
        """
        kept: deque[DeadLetter] = deque()
        delivered = 0
        for letter in list(self._dead):
            if sub_id is not None and letter.sub_id != sub_id:
                kept.append(letter)
                continue
            subscription = self._lookup(letter.sub_id, letter.name)
            if subscription is None:
                kept.append(letter)
                continue
            try:
                subscription.handler(letter.event)
            except Exception as error:
                letter.attempts += 1
                letter.error = error
                letter.error_type, letter.error_message = _describe_error(error)
                letter.reason = "manual retry failed"
                kept.append(letter)
            else:
                delivered += 1
                self._recovered += 1
        self._dead = kept
        return delivered

    def purge(self, *, sub_id: int | None = None) -> int:
        """Forget dead letters (only ``sub_id``'s if given); return how many."""
        before = len(self._dead)
        self._dead = deque(d for d in self._dead if sub_id is not None and d.sub_id != sub_id)
        return before - len(self._dead)

    def stats(self) -> dict[str, int]:
        """Counters: failures, retrying, dead, dropped, recovered, limit."""
        return {
            "failures": self._failures,
            "retrying": len(self.retries),
            "dead": len(self._dead),
            "dropped": self._dropped,
            "recovered": self._recovered,
            "limit": self.limit,
        }

    def __len__(self) -> int:
        return len(self._dead)

    def __repr__(self) -> str:
        stats = self.stats()
        return (
            f"<DeadLetterQueue dead={stats['dead']}/{self.limit} retrying={stats['retrying']} "
            f"dropped={stats['dropped']}>"
        )

    # -- snapshots -----------------------------------------------------
    def has_state(self) -> bool:
        """Whether there is anything a snapshot must carry."""
        return bool(
            self.retries or self._dead or self._dropped or self._recovered or self._failures
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the state as JSON-ready data."""
        return {
            "retrying": [entry.to_dict() for entry in self.retries],
            "dead": [letter.to_dict() for letter in self._dead],
            "dropped": self._dropped,
            "recovered": self._recovered,
            "failures": self._failures,
        }

    def load(self, data: object, make_event: EventFactory) -> None:
        """Restore the state :meth:`to_dict` returned (all of it, or nothing on error)."""
        self.prepare_load(data, make_event)()

    def prepare_load(self, data: object, make_event: EventFactory) -> Callable[[], None]:
        """Check the state :meth:`to_dict` returned and return what loads it.

        Nothing changes until the returned function is called, and that
        function cannot fail: a snapshot is checked whole before any part
        of a bus is restored.

        Raises
        ------
        ValueError
            The state is malformed.
        """
        if not isinstance(data, dict):
            raise ValueError("snapshot 'dead_letters' must be a dict")
        try:
            retries = [
                _entry_from_dict(PendingRetry, item, make_event) for item in data["retrying"]
            ]
            dead = deque(_entry_from_dict(DeadLetter, item, make_event) for item in data["dead"])
            dropped, recovered, failures = (
                _count(data, "dropped"),
                _count(data, "recovered"),
                _count(data, "failures"),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"snapshot 'dead_letters' is malformed: {error}") from error

        def commit() -> None:
            self.retries = retries
            self._dead = dead
            self._dropped, self._recovered, self._failures = dropped, recovered, failures

        return commit


def _count(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"snapshot 'dead_letters' has a bad {key!r} count: {value!r}")
    return value


_Entry = TypeVar("_Entry", PendingRetry, DeadLetter)


def _entry_from_dict(cls: type[_Entry], item: object, make_event: EventFactory) -> _Entry:
    """A retry or dead letter from :func:`_entry_dict` output, its fields' types checked."""
    if not isinstance(item, dict):
        raise ValueError(f"snapshot 'dead_letters' entry must be a dict, got {item!r}")
    entry = cls(**{**item, "event": make_event(item["event"])})
    for name in ("sub_id", "attempts", "due_tick", "first_tick", "last_tick"):
        value = getattr(entry, name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"snapshot 'dead_letters' entry has a bad {name!r}: {value!r}")
    for name in ("subscriber", "error_type", "error_message", "reason", "name"):
        value = getattr(entry, name, "")
        if not isinstance(value, str) and not (name == "name" and value is None):
            raise ValueError(f"snapshot 'dead_letters' entry has a bad {name!r}: {value!r}")
    return entry
