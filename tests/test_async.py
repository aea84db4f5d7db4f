"""The asyncio tier on both cores: refused coroutine handlers, drain_async, streams."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest

from ringbus import StreamOverflowError

# -- coroutine handlers are refused by subscribe ---------------------------------


async def async_handler(event: Any) -> None:
    return None


class AsyncCallable:
    async def __call__(self, event: Any) -> None:
        return None


@pytest.mark.parametrize(
    "handler",
    [async_handler, functools.partial(async_handler), AsyncCallable()],
    ids=["async-def", "partial", "async-call"],
)
def test_subscribe_refuses_coroutine_handlers(backend: Any, handler: Any) -> None:
    bus = backend.bus()
    with pytest.raises(TypeError, match=r"subscribe_async\(\)") as caught:
        bus.subscribe(handler)
    assert "coroutine function" in str(caught.value)
    assert bus.subscriptions() == []


def test_a_sync_handler_returning_a_coroutine_is_never_counted_as_delivered(
    backend: Any,
) -> None:
    bus = backend.bus()
    ran: list[int] = []

    async def work(event: Any) -> None:
        ran.append(event.seq)

    bus.subscribe(lambda event: work(event))
    bus.publish("K")
    with pytest.raises(ExceptionGroup) as caught:
        bus.drain()
    (error,) = caught.value.exceptions
    assert isinstance(error, TypeError) and "subscribe_async()" in str(error)
    assert ran == []
    stats = bus.stats()
    assert (stats["delivered"], stats["handler_errors"], stats["dispatched"]) == (0, 1, 1)


@pytest.mark.parametrize("policy", ["log", "dead_letter"])
def test_a_returned_awaitable_follows_the_error_policy(backend: Any, policy: str) -> None:
    bus = backend.bus(error_policy=policy)
    loop = asyncio.new_event_loop()
    try:
        bus.subscribe(lambda event: loop.create_future(), name="future")
        bus.publish("K")
        assert bus.drain() == 1
    finally:
        loop.close()
    assert bus.stats()["delivered"] == 0 and bus.stats()["handler_errors"] == 1
    if policy == "dead_letter":
        assert bus.dead_letters.stats()["retrying"] == 1


def test_group_members_and_tracked_handlers_returning_coroutines_are_refused(
    backend: Any,
) -> None:
    bus = backend.bus(error_policy="log")
    bus.track_deliveries(10)

    async def work(event: Any) -> None:
        return None

    bus.subscribe(lambda event: work(event), group="g", name="member")
    bus.subscribe(lambda event: work(event), name="tracked")
    bus.publish("K")
    bus.drain()
    assert bus.stats()["delivered"] == 0 and bus.stats()["handler_errors"] == 2
    states = {(s["name"], s["state"]) for s in bus.delivery_states()}
    assert states == {("member", "failed"), ("tracked", "failed")}


def test_subscribe_async_refuses_plain_callables(backend: Any) -> None:
    bus = backend.bus()
    with pytest.raises(TypeError, match=r"subscribe_async\(\) takes an async def handler"):
        bus.subscribe_async(print)  # type: ignore[arg-type]


# -- drain_async keeps drain()'s order -------------------------------------------


def build_run(backend: Any, mode: str) -> tuple[Any, list[tuple[Any, ...]]]:
    """A bus with priorities, groups, lanes, sends, cascades and retries.

    ``mode`` "sync": every handler sync; "mixed": every other one ``async def``
    (each really suspending), the same logic.
    """
    bus = backend.bus(
        cascade_rounds=4,
        error_policy="dead_letter",
        max_retries=2,
        retry_backoff_ticks=1,
        unknown_destination="dead_letter",
    )
    calls: list[tuple[Any, ...]] = []
    failed_once: set[int] = set()
    index = [0]

    def handler(name: str, body: Callable[[Any], None]) -> Any:
        index[0] += 1
        if mode == "mixed" and index[0] % 2:

            async def run_async(event: Any) -> None:
                calls.append((name, event.seq, event.kind))
                await asyncio.sleep(0)
                body(event)
                await asyncio.sleep(0)

            return bus.subscribe_async, run_async

        def run(event: Any) -> None:
            calls.append((name, event.seq, event.kind))
            body(event)

        return bus.subscribe, run

    def cascade(event: Any) -> None:
        if event.kind == "SEED":
            bus.publish("CASCADE", subject_id=event.subject_id)
        if event.kind == "SEED" and event.subject_id == "b":
            bus.publish_urgent("URGENT")
        if event.kind == "CASCADE" and event.subject_id == "c":
            bus.send("dest", "DIRECT")
            bus.send("nobody", "LOST")

    def flaky(event: Any) -> None:
        if event.seq % 3 == 0 and event.seq not in failed_once:
            failed_once.add(event.seq)
            raise ValueError(f"flaky on {event.seq}")

    def always_fails(event: Any) -> None:
        raise KeyError(event.seq)

    def nothing(event: Any) -> None:
        return None

    specs: list[tuple[str, Callable[[Any], None], dict[str, Any]]] = [
        ("cascade", cascade, {"priority": 5}),
        ("flaky", flaky, {"kinds": "SEED"}),
        ("urgent", nothing, {"kinds": "URGENT", "priority": 10}),
        ("g1", nothing, {"kinds": "CASCADE", "group": "g", "name": "g1"}),
        ("g2", nothing, {"kinds": "CASCADE", "group": "g", "name": "g2"}),
        ("k1", nothing, {"group": "k", "name": "k1", "group_key": "subject_id"}),
        ("k2", nothing, {"group": "k", "name": "k2", "group_key": "subject_id"}),
        ("dest", nothing, {"name": "dest", "kinds": "DIRECT"}),
        ("broken", always_fails, {"kinds": "CASCADE", "error_policy": "dead_letter"}),
        ("late", nothing, {"priority": -1}),
    ]
    for name, body, options in specs:
        subscribe, run = handler(name, body)
        subscribe(run, **options)
    return bus, calls


def script(bus: Any) -> list[Any]:
    """What the loop does each tick; returns the drains' results."""
    steps: list[tuple[int, list[tuple[str, str]]]] = [
        (1, [("SEED", "a"), ("SEED", "b"), ("OTHER", "a")]),
        (2, [("SEED", "c"), ("OTHER", "b"), ("SEED", "d")]),
        (3, [("OTHER", "c")]),
        (4, []),
        (5, [("SEED", "e")]),
    ]
    plan = []
    for tick, events in steps:
        plan.append(("clock", tick))
        plan.extend(("publish", kind, subject) for kind, subject in events)
        plan.append(("drain",))
    return plan


def outcome(bus: Any, calls: list[tuple[Any, ...]], results: list[Any]) -> dict[str, Any]:
    return {
        "calls": calls,
        "results": results,
        "stream": [e.to_dict() for e in bus.get_since(0)],
        "stats": bus.stats(),
        "dead": [(d.event.seq, d.sub_id, d.attempts, d.reason) for d in bus.dead_letters.list()],
        "retries": [
            (r.event.seq, r.sub_id, r.attempts) for r in bus.dead_letters.pending_retries()
        ],
        "dead_stats": bus.dead_letters.stats(),
    }


def run_sync(backend: Any) -> dict[str, Any]:
    bus, calls = build_run(backend, "sync")
    results: list[Any] = []
    for step in script(bus):
        if step[0] == "clock":
            bus.set_clock(step[1])
        elif step[0] == "publish":
            bus.publish(step[1], subject_id=step[2])
        else:
            try:
                results.append(bus.drain())
            except ExceptionGroup as group:
                results.append(sorted(repr(e) for e in group.exceptions))
    return outcome(bus, calls, results)


def run_async(backend: Any, mode: str) -> dict[str, Any]:
    bus, calls = build_run(backend, mode)
    results: list[Any] = []

    async def main() -> None:
        for step in script(bus):
            if step[0] == "clock":
                bus.set_clock(step[1])
            elif step[0] == "publish":
                bus.publish(step[1], subject_id=step[2])
            else:
                try:
                    results.append(await bus.drain_async())
                except ExceptionGroup as group:
                    results.append(sorted(repr(e) for e in group.exceptions))

    asyncio.run(main())
    return outcome(bus, calls, results)


def test_drain_async_calls_handlers_in_drain_order(backend: Any) -> None:
    expected = run_sync(backend)
    # The run exercises what it claims to: every feature left a trace.
    assert {c[0] for c in expected["calls"]} >= {"urgent", "g1", "g2", "k1", "k2", "dest"}
    assert expected["dead"] and expected["dead_stats"]["recovered"] > 0
    assert expected["stats"]["handler_errors"] > 0
    assert run_async(backend, "mixed") == expected
    assert run_async(backend, "sync") == expected


def test_drain_async_runs_drain_listeners_and_counts(backend: Any) -> None:
    bus = backend.bus()
    log: list[str] = []
    bus.add_drain_listener(lambda: log.append("end"), on_start=lambda: log.append("start"))

    async def handler(event: Any) -> None:
        log.append(f"async {event.seq}")

    bus.subscribe_async(handler)
    bus.subscribe(lambda e: log.append(f"sync {e.seq}"))
    bus.publish("K")
    bus.publish("K")
    assert asyncio.run(bus.drain_async()) == 2
    assert log == ["start", "async 1", "sync 1", "async 2", "sync 2", "end"]
    assert bus.stats()["delivered"] == 4 and bus.stats()["dispatched"] == 2


def test_drain_async_without_async_subscriptions_is_drain(backend: Any) -> None:
    bus = backend.bus(cascade_rounds=2)
    seen: list[int] = []
    bus.subscribe(lambda e: seen.append(e.seq))
    bus.publish("K")
    assert asyncio.run(bus.drain_async()) == 1
    assert seen == [1]
    with pytest.raises(ValueError, match="max_rounds"):
        asyncio.run(bus.drain_async(0))


def test_drain_refuses_pending_async_deliveries_and_names_drain_async(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []

    async def handler(event: Any) -> None:
        seen.append(event.seq)

    bus.subscribe_async(handler, kinds="ASYNC")
    bus.publish("SYNC_ONLY")
    assert bus.drain() == 1  # nothing for the async subscription: drain() is fine
    bus.publish("ASYNC")
    with pytest.raises(RuntimeError, match=r"await bus\.drain_async\(\)"):
        bus.drain()
    assert bus.pending_count() == 1
    bus.producer("p").publish("ASYNC")
    assert asyncio.run(bus.drain_async()) == 2
    assert seen == [2, 3]


def test_a_cascade_reaching_an_async_handler_in_drain_is_an_error(backend: Any) -> None:
    bus = backend.bus(cascade_rounds=2)

    async def handler(event: Any) -> None:
        return None

    bus.subscribe(lambda e: bus.publish("ASYNC") if e.kind == "SYNC" else None)
    bus.subscribe_async(handler, kinds="ASYNC")
    bus.publish("SYNC")
    with pytest.raises(ExceptionGroup) as caught:
        bus.drain()
    (error,) = caught.value.exceptions
    assert "drain_async()" in str(error)
    assert bus.stats()["handler_errors"] == 1


def test_drain_inside_drain_async_is_refused(backend: Any) -> None:
    bus = backend.bus(error_policy="log")
    errors: list[BaseException] = []

    async def handler(event: Any) -> None:
        for nested in (bus.drain, lambda: asyncio.get_running_loop()):
            try:
                nested()
            except RuntimeError as error:
                errors.append(error)
        try:
            await bus.drain_async()
        except RuntimeError as error:
            errors.append(error)

    bus.subscribe_async(handler)
    bus.publish("K")
    asyncio.run(bus.drain_async())
    assert len(errors) == 2
    assert all("inside a handler" in str(e) for e in errors)


def test_a_cancelled_drain_async_leaves_the_rest_for_the_next(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []
    gate = asyncio.Event()

    async def handler(event: Any) -> None:
        if event.seq == 2 and not gate.is_set():
            gate.set()
            await asyncio.sleep(3600)
        seen.append(event.seq)

    async def main() -> None:
        bus.subscribe_async(handler)
        for _ in range(4):
            bus.publish("K")
        task = asyncio.create_task(bus.drain_async())
        await gate.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [1]
        with pytest.raises(RuntimeError, match="drain_async"):
            bus.drain()
        await bus.drain_async()

    asyncio.run(main())
    assert seen == [1, 3, 4]  # the event whose handler was cancelled is not redone


# -- streams -----------------------------------------------------------------------


async def take(stream: Any, count: int) -> list[int]:
    got: list[int] = []
    async for event in stream:
        got.append(event.seq)
        if len(got) == count:
            break
    return got


def test_stream_since_has_no_gap_and_no_duplicate_at_the_seam(backend: Any) -> None:
    bus = backend.bus()
    for _ in range(5):
        bus.publish("K")
    bus.drain()
    bus.publish("K")
    bus.publish("OTHER")  # pending when the stream starts: read once, not twice

    async def main() -> list[int]:
        stream = bus.stream(since=2)
        bus.drain()
        bus.publish("K")
        bus.drain()
        got = await take(stream, 6)
        assert stream.gap is None and stream.dropped == 0
        return got

    assert asyncio.run(main()) == [3, 4, 5, 6, 7, 8]


def test_stream_kinds_and_the_gap_the_ring_lost(backend: Any) -> None:
    bus = backend.bus(max_events=4)
    for n in range(10):
        bus.publish("A" if n % 2 else "B")
    bus.drain()

    async def main() -> tuple[list[int], Any]:
        stream = bus.stream("A", since=1)
        bus.publish("A")
        bus.publish("B")
        bus.drain()
        return await take(stream, 3), stream.gap

    got, gap = asyncio.run(main())
    assert got == [8, 10, 11]
    assert gap == (2, 6)


def test_stream_drop_oldest_counts_what_it_dropped(backend: Any) -> None:
    bus = backend.bus()

    async def main() -> tuple[list[int], int]:
        stream = bus.stream(maxsize=3)
        for _ in range(5):
            bus.publish("K")
        bus.drain()
        got = await take(stream, 3)
        return got, stream.dropped

    assert asyncio.run(main()) == ([3, 4, 5], 2)


def test_stream_raise_ends_the_stream_and_fails_the_drain(backend: Any) -> None:
    bus = backend.bus()

    async def main() -> list[int]:
        stream = bus.stream(maxsize=2, overflow="raise")
        for _ in range(3):
            bus.publish("K")
        with pytest.raises(ExceptionGroup) as caught:
            bus.drain()
        assert isinstance(caught.value.exceptions[0], StreamOverflowError)
        got = []
        with pytest.raises(StreamOverflowError, match="seq=3"):
            async for event in stream:
                got.append(event.seq)
        assert stream.closed
        return got

    assert asyncio.run(main()) == [1, 2]
    assert bus.subscriptions() == []


def test_stream_block_makes_drain_async_wait_for_the_reader(backend: Any) -> None:
    bus = backend.bus()

    async def main() -> list[int]:
        stream = bus.stream(maxsize=2, overflow="block")
        for _ in range(10):
            bus.publish("K")
        with pytest.raises(RuntimeError, match="drain_async"):
            bus.drain()
        reader = asyncio.create_task(take(stream, 10))
        assert await bus.drain_async() == 10
        got = await reader
        assert stream.dropped == 0
        return got

    assert asyncio.run(main()) == list(range(1, 11))


def test_breaking_out_of_a_stream_unsubscribes(backend: Any) -> None:
    bus = backend.bus()

    async def main() -> None:
        for _ in range(3):
            bus.publish("K")
        async for event in bus.stream(since=0):
            assert event.seq == 1
            break
        gc.collect()
        assert bus.subscriptions() == []
        stream = bus.stream()
        assert len(bus.subscriptions()) == 1
        await stream.aclose()
        assert bus.subscriptions() == [] and stream.closed
        assert await take(stream, 1) == []

    asyncio.run(main())


def test_cancelling_a_reader_unsubscribes(backend: Any) -> None:
    bus = backend.bus()

    async def main() -> None:
        reader = asyncio.create_task(take(bus.stream(), 5))
        await asyncio.sleep(0)
        assert len(bus.subscriptions()) == 1
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        gc.collect()
        assert bus.subscriptions() == []

    asyncio.run(main())


def test_stream_arguments_are_checked(backend: Any) -> None:
    bus = backend.bus()
    with pytest.raises(ValueError, match="overflow must be one of"):
        bus.stream(overflow="wait")
    with pytest.raises(ValueError, match="maxsize must be an int >= 1"):
        bus.stream(maxsize=0)
    with pytest.raises(ValueError, match="since"):
        bus.stream(since=-1)


def test_stream_read_in_a_loop_while_another_thread_drains(backend: Any) -> None:
    bus = backend.bus()
    total = 2_000
    started = threading.Event()
    late_made = threading.Event()

    def sim() -> None:
        bus.transfer_to_current_thread()
        started.set()
        late_made.wait()
        for tick in range(1, 21):
            bus.set_clock(tick)
            for _ in range(total // 20):
                bus.publish("K")
            bus.drain()

    async def main() -> list[int]:
        early = bus.stream(since=0)  # made on the owner thread: starts at once
        thread = threading.Thread(target=sim)
        thread.start()
        started.wait()
        late = bus.stream(since=0)  # made here, not on the owner: starts at its next drain
        late_made.set()
        got_early, got_late = await asyncio.wait_for(
            asyncio.gather(take(early, total), take(late, total)), 120
        )
        await asyncio.to_thread(thread.join)
        assert got_late == got_early
        return got_early

    assert asyncio.run(main()) == list(range(1, total + 1))


def test_tracked_async_deliveries_end_when_their_coroutine_does(backend: Any) -> None:
    bus = backend.bus(error_policy="log")
    bus.track_deliveries(10)
    states: list[str] = []

    async def handler(event: Any) -> None:
        states.append(bus.delivery_states(seq=event.seq)[0]["state"])
        await asyncio.sleep(0)
        if event.kind == "BAD":
            raise ValueError("bad")

    bus.subscribe_async(handler, name="h")
    bus.publish("GOOD")
    bus.publish("BAD")
    asyncio.run(bus.drain_async())
    assert states == ["processing", "processing"]
    assert [(s["seq"], s["state"]) for s in bus.delivery_states()] == [
        (1, "completed"),
        (2, "failed"),
    ]
    assert bus.stats()["delivered"] == 1 and bus.stats()["handler_errors"] == 1


@pytest.mark.parametrize("asynchronous", [False, True])
def test_inboxes_enter_once_per_drain_in_both_drains(backend: Any, asynchronous: bool) -> None:
    bus = backend.bus(cascade_rounds=3)
    producer = bus.producer("p")
    seen: list[tuple[int, str]] = []

    async def async_record(event: Any) -> None:
        seen.append((event.seq, event.kind))

    def handler(event: Any) -> None:
        if event.kind == "FIRST":
            producer.publish("LATER")  # waits for the next drain, not the next round
            bus.publish("CASCADE")

    bus.subscribe(handler)
    if asynchronous:
        bus.subscribe_async(async_record)
    else:
        bus.subscribe(lambda event: seen.append((event.seq, event.kind)))
    producer.publish("FIRST")

    def drain() -> int:
        return asyncio.run(bus.drain_async()) if asynchronous else bus.drain()

    assert drain() == 2
    assert len(producer) == 1
    assert drain() == 1
    assert seen == [(1, "FIRST"), (2, "CASCADE"), (3, "LATER")]
