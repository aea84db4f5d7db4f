"""The asyncio tier: async subscriptions, ``drain_async`` and event streams.

``drain_async`` keeps the order of ``drain()`` exactly. Each round, the core
hands the events of that round (the urgent lane first, then the normal
events, in seq order; events published by handlers wait for the next round)
to one collecting entry instead of to the subscribers, so the core decides
the order as it always does. The tier then calls each event's route in
delivery order, awaiting an async handler before the next handler is called.
Routes are resolved when each event's turn comes, so a subscription made by
a handler receives the events after it, as in ``drain()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from ._errors import RingbusError, refuse_awaitable

if TYPE_CHECKING:
    from ._backend import WorldEvent
    from ._bus import EventBusBase

__all__ = [
    "OVERFLOW_POLICIES",
    "AsyncHandler",
    "AsyncTier",
    "EventStream",
    "StreamOverflowError",
    "drain_async_needed_message",
]

#: What ``subscribe_async`` takes: an ``async def`` taking one event.
AsyncHandler = Callable[["WorldEvent"], Awaitable[object]]
Overflow = Literal["drop_oldest", "raise", "block"]
OVERFLOW_POLICIES: tuple[str, ...] = ("drop_oldest", "raise", "block")


class StreamOverflowError(RingbusError):
    """A stream with ``overflow="raise"`` had ``maxsize`` events its consumer had not read."""


def drain_async_needed_message(what: str) -> str:
    return (
        f"{what}: this bus has async subscriptions with deliveries waiting, and drain() "
        "cannot await them; call `await bus.drain_async()` instead"
    )


class AsyncEntry:
    """The route entry handler of an async subscription.

    Called by ``drain_async``'s dispatch, it starts the handler's coroutine
    and leaves it for the dispatch to await before the next handler runs.
    Called by ``drain()`` (a cascade reaching it), it refuses: the event is
    counted as a handler error, never as delivered.
    """

    __slots__ = ("handler", "tier")

    def __init__(self, tier: AsyncTier, handler: AsyncHandler) -> None:
        self.tier = tier
        self.handler = handler

    def __call__(self, event: Any) -> None:
        tier = self.tier
        if not tier.dispatching:
            raise RuntimeError(drain_async_needed_message("drain() reached an async handler"))
        tier.awaiting.append(self.handler(event))

    def __repr__(self) -> str:
        return repr(self.handler)


class AsyncTier:
    """The state one bus keeps for its async subscriptions, drains and streams."""

    def __init__(self, bus: EventBusBase) -> None:
        self.bus = bus
        self.async_subs: set[int] = set()
        # Events a round has collected and not yet dispatched: (event, destination).
        self.carry: deque[tuple[Any, str | None]] = deque()
        self.awaiting: list[Any] = []
        self.collecting = False
        self.dispatching = False
        self.running = False
        # Work asked for from other threads, done on the owner thread at the
        # start of its next drain (stream registrations, unsubscriptions).
        self.deferred: deque[Callable[[], object]] = deque()

    # -- before every drain --------------------------------------------
    def before_drain(self, asynchronous: bool) -> None:
        """Run deferred work; from ``drain()``, refuse what only ``drain_async`` can do."""
        deferred = self.deferred
        while deferred:
            deferred.popleft()()
        if self.running:
            raise RuntimeError(
                "drain() was called from inside a handler run by drain_async(); events "
                "published by handlers are dispatched by the next round or drain"
            )
        if not asynchronous and (self.carry or self.async_pending()):
            raise RuntimeError(drain_async_needed_message("drain() refused"))

    def async_pending(self) -> bool:
        """Whether a pending or inboxed event would go to an async subscription."""
        if not self.async_subs:
            return False
        subs = [s for s in self.bus._registry if s.sub_id in self.async_subs]
        kinds = {event.kind for event in self.bus.pending_events()}
        for _name, entries in self.bus._inboxes():
            kinds.update(entry[0] for entry in entries)
        return any(sub.matches(kind) for kind in kinds for sub in subs)

    # -- the collecting routes -----------------------------------------
    def collect(self, event: Any) -> None:
        self.carry.append((event, None))

    def collect_direct(self, destination: str) -> Callable[[Any], None]:
        def collect(event: Any) -> None:
            self.carry.append((event, destination))

        return collect

    # -- drain_async ---------------------------------------------------
    async def drain(
        self, rounds: int, core_drain: Callable[[int], int]
    ) -> tuple[int, list[Exception]]:
        """Run ``rounds`` rounds; return how many events and the errors to raise."""
        bus = self.bus
        errors: list[Exception] = []
        total = 0
        self.running = True
        try:
            # Events a cancelled drain_async had collected and not dispatched go first.
            await self.dispatch(errors)
            for round_index in range(rounds):
                first = round_index == 0
                if not bus.pending_count() and not (first and any(map(len, bus.producers()))):
                    break
                self.collecting = True
                bus._invalidate_routes()
                # Inboxes enter once, at the start of the drain, as in drain().
                bus._hold_inboxes(not first)
                before = len(self.carry)
                try:
                    total += core_drain(1)
                finally:
                    bus._hold_inboxes(False)
                    self.collecting = False
                    bus._invalidate_routes()
                # The collecting entries were counted as deliveries: take them back.
                bus._count_deliveries(before - len(self.carry), 0)
                await self.dispatch(errors)
        finally:
            self.running = False
        return total, errors

    async def dispatch(self, errors: list[Exception]) -> None:
        """Deliver the collected events in order, awaiting async handlers in turn."""
        bus = self.bus
        carry = self.carry
        while carry:
            event, destination = carry.popleft()
            if destination is not None:
                route = bus._resolve_direct(destination, event.kind)
                if not route:
                    problem = bus._on_undeliverable(event, destination)
                    if problem is not None:
                        errors.append(problem)
            else:
                route = bus._resolve_route(event.kind)
            delivered = failed = 0
            try:
                for handler, target in route:
                    try:
                        await self.call(handler, event)
                    except Exception as error:
                        failed += 1
                        if bus._on_handler_error(event, target, error):
                            errors.append(error)
                    else:
                        delivered += 1
            finally:
                bus._count_deliveries(delivered, failed)

    async def call(self, handler: Callable[[Any], object], event: Any) -> None:
        """Call one route entry; await the coroutine an async handler started."""
        awaiting = self.awaiting
        self.dispatching = True
        try:
            result = handler(event)
            if result is not None and inspect.isawaitable(result):
                refuse_awaitable(result, handler)
        except BaseException:
            self.drop_awaiting()
            raise
        finally:
            self.dispatching = False
        try:
            while awaiting:
                await awaiting.pop(0)
        finally:
            self.drop_awaiting()

    def drop_awaiting(self) -> None:
        for left in self.awaiting:
            left.close()
        self.awaiting.clear()

    # -- streams -------------------------------------------------------
    def on_owner_thread(self, work: Callable[[], object]) -> None:
        """Run ``work`` now on the owner thread, or at the start of its next drain."""
        if threading.get_ident() == self.bus.owner_thread:
            work()
        else:
            self.deferred.append(work)


class _StreamState:
    """What a stream's subscription holds: the buffer and the consumer's wake-up.

    The subscription holds this, not the :class:`EventStream`, so dropping
    the stream (``break``, a cancelled task) lets it be collected, which
    closes it and ends the subscription.
    """

    def __init__(self, maxsize: int, overflow: str) -> None:
        self.maxsize = maxsize
        self.overflow = overflow
        self.buffer: deque[Any] = deque()
        self.lock = threading.Lock()
        self.cursor = -1  # live events up to this seq came with the catch-up: skipped
        self.dropped = 0
        self.error: BaseException | None = None
        self.closed = False
        self.sub_id: int | None = None
        self.waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self.space: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.bus: EventBusBase | None = None

    def end(self) -> None:
        """Close and unsubscribe (the unsubscription on the owner thread)."""
        with self.lock:
            self.closed = True
            self.free_space()
            self.wake()
        bus = self.bus
        if bus is None:
            return

        def unsubscribe() -> None:
            sub_id, self.sub_id = self.sub_id, None
            if sub_id is not None:
                with contextlib.suppress(KeyError):
                    bus.unsubscribe(sub_id)

        bus._async_tier().on_owner_thread(unsubscribe)

    def wake(self) -> None:
        """Wake the consumer, from any thread. Called with the lock held."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            _resolve_soon(*waiter)

    def free_space(self) -> None:
        """Wake drains blocked on a full buffer. Called with the lock held."""
        space, self.space = self.space, []
        for loop, future in space:
            _resolve_soon(loop, future)

    def offer(self, event: Any) -> None:
        """The sync subscription's handler (``drop_oldest`` and ``raise``).

        Only the drain's thread appends; the reader pops from the other end
        (a deque's ends are thread-safe), and the lock is taken only to hand
        over a wake-up.
        """
        if event.seq <= self.cursor or self.closed:
            return
        buffer = self.buffer
        if len(buffer) >= self.maxsize:
            if self.overflow == "raise":
                self.overflowed(event)
            with contextlib.suppress(IndexError):  # the reader may have emptied it meanwhile
                buffer.popleft()
                self.dropped += 1
        buffer.append(event)
        if self.waiter is not None:
            with self.lock:
                self.wake()

    def overflowed(self, event: Any) -> None:
        error = self.error = StreamOverflowError(
            f"stream buffer is full ({self.maxsize} events its consumer has not "
            f"read); seq={event.seq} and later are not in it and the stream is "
            "closed: read faster, raise maxsize, or use overflow='drop_oldest' "
            "or 'block'"
        )
        self.end()  # the subscription ends with the stream
        raise error

    async def offer_blocking(self, event: Any) -> None:
        """The async subscription's handler (``block``): wait for room."""
        if self.closed or event.seq <= self.cursor:
            return
        while True:
            with self.lock:
                if self.closed:
                    return
                if len(self.buffer) < self.maxsize:
                    self.buffer.append(event)
                    self.wake()
                    return
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                self.space.append((loop, future))
            await future


def _resolve_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        resolve()
    else:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(resolve)


class EventStream:
    """An async iterator over a bus's events: ``async for event in bus.stream():``.

    Made by :meth:`ringbus.EventBus.stream`. Events are buffered as drains
    deliver them (in any thread) and handed out in seq order. Breaking out
    of the loop, :meth:`aclose`, cancelling a task waiting for its next
    event, or dropping the stream ends its subscription.

    Attributes
    ----------
    dropped
        Events dropped under ``overflow="drop_oldest"`` because the buffer
        was full (the oldest unread ones).
    gap
        With ``since``: ``(first, last)`` seqs the ring no longer held when
        the stream started, else ``None``.
    """

    def __init__(
        self,
        bus: EventBusBase,
        kinds: Iterable[str] | str | None,
        since: int | None,
        maxsize: int,
        overflow: str,
    ) -> None:
        self._bus = bus
        self._state = _StreamState(maxsize, overflow)
        self.gap: tuple[int, int] | None = None
        self._kinds = kinds
        self._since = since
        bus._async_tier().on_owner_thread(self._start)

    def _start(self) -> None:
        """Subscribe, then read what ``since`` asks for (on the owner thread)."""
        bus, state = self._bus, self._state
        if state.closed:
            return
        state.bus = bus
        if state.overflow == "block":
            state.sub_id = bus.subscribe_async(
                state.offer_blocking, kinds=self._kinds, name="stream"
            ).id
        else:
            state.sub_id = bus.subscribe(state.offer, kinds=self._kinds, name="stream").id
        # From here on every new event reaches the subscription; events up to
        # latest_seq are read from the ring (pending ones too), and skipped
        # when their delivery comes: no gap and no duplicate at the seam.
        latest = bus.latest_seq()
        if self._since is not None:
            oldest = bus.oldest_seq()
            if oldest and self._since + 1 < oldest:
                self.gap = (self._since + 1, oldest - 1)
            elif not oldest and self._since < latest:
                self.gap = (self._since + 1, latest)
            caught = bus.get_since(self._since, kinds=self._kinds)
            with state.lock:
                state.buffer.extend(caught)
                state.cursor = latest
                state.wake()
        else:
            state.cursor = latest

    @property
    def dropped(self) -> int:
        """Events dropped under ``"drop_oldest"`` (the buffer was full)."""
        return self._state.dropped

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (closed, or overflowed under ``"raise"``)."""
        return self._state.closed

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        state = self._state
        buffer = state.buffer
        while True:
            if buffer:
                event = buffer.popleft()
                if state.space:
                    with state.lock:
                        state.free_space()
                return event
            with state.lock:
                if state.error is not None:
                    error, state.error = state.error, None
                    raise error
                if state.closed:
                    raise StopAsyncIteration
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                # Set before the buffer is looked at again: an event appended
                # after that look finds the waiter and wakes it.
                state.waiter = (loop, future)
                if buffer:
                    state.waiter = None
                    continue
            try:
                await future
            except asyncio.CancelledError:
                self.close()  # a cancelled reader has stopped reading: end the stream
                raise

    async def aclose(self) -> None:
        """End the stream: unsubscribe it; buffered events are dropped."""
        self.close()

    def close(self) -> None:
        """End the stream (from any thread); the unsubscription happens on the owner thread."""
        state = self._state
        with state.lock:
            state.buffer.clear()
        state.end()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.closed else "open"
        return f"<EventStream {state} buffered={len(self._state.buffer)} dropped={self.dropped}>"


def check_overflow(overflow: object, maxsize: object) -> None:
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(
            f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}"
        )
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
