"""The performance gate: measure every target of ``perf_targets.py`` and fail on a miss.

Usage (cwd at the repo root, ringbus installed in the running environment)::

    python benchmarks/targets.py                     # every target; exit 1 on a miss
    python benchmarks/targets.py --only psygnal,idle # some targets (keys in the table)
    python benchmarks/targets.py --list              # the README's target table

Each check samples its two sides interleaved (the order alternating) in
rounds; a round's figure comes from the medians of its samples, the check's
figure is the median of the rounds' figures. A check that misses is measured
again with ``RETRY_FACTOR`` times its rounds and judged on all its rounds
together. Exit status: 0 every target met, 1 a target missed, 2 a part the
gate needs (the compiled core, the floor, a peer) is missing.

``--core python`` measures the pure-Python twin in the compiled core's place
(as ``ringbus``): the promises are the compiled core's, so the speed targets
must then miss. The tests use it to show the gate can fail.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import importlib.util
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from floor import build_floor, runner_maker
from journal_targets import JournalBench
from journal_targets import figures as journal_figures
from perf_targets import RETRY_FACTOR, TARGETS, Target, markdown_table
from ringbus import EventBusConfig
from ringbus._bench import (
    SCENARIOS,
    Runner,
    bus_runner,
    check_deliveries,
    compiled_core,
    empty_publish,
    environment_lines,
    make_batch,
)
from ringbus._bus import bus_class_for
from ringbus.kinds import CORE_KINDS

HERE = Path(__file__).resolve().parent
#: Events per timing sample (S4: two ticks of 1000).
SAMPLE_EVENTS = 2000
#: Events run before sampling: more than a default ring holds (50,000), so
#: every bus is measured in its steady state, overwriting a full ring (a ring
#: still filling allocates where a full one reuses, and is not what runs).
WARMUP_EVENTS = 60_000
#: The thread's CPU time, not wall time: on a shared machine a long sample (the
#: pure twin's) is preempted far more often than a short one (the compiled
#: core's), which would skew wall-time ratios by the machine's load.
CLOCK = time.thread_time_ns


#: Implementations that are other packages, and the package each needs.
PEERS = {
    "psygnal emit_fast": "psygnal",
    "psygnal emit": "psygnal",
    "pyee": "pyee",
    "blinker": "blinker",
}


class MissingPart(Exception):
    """Something the gate needs is not installed or not built."""


@dataclass
class Context:
    """What the measurements run on."""

    core_name: str  # "cython", or "python" presented as the compiled core
    core: ModuleType
    floor: ModuleType | None = None
    floor_note: str = ""
    warmup_events: int = WARMUP_EVENTS


@dataclass
class Trial:
    """One check set up and ready to sample.

    ``samplers`` each return one sample (ns per operation, or bytes);
    ``figure`` turns the medians of a round into the check's figure; ``a``
    and ``b`` name the two sides shown in the table (``b`` may be empty);
    ``verify`` runs after sampling and raises if the work was not done.
    """

    samplers: dict[str, Callable[[], float]]
    figure: Callable[[dict[str, float]], float]
    a: str
    b: str = ""
    unit: str = "ns"
    verify: Callable[[], None] = lambda: None


@dataclass
class Result:
    """The rounds of one check and the verdict on them."""

    target: Target
    case: str
    trial: Trial
    figures: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def figure(self) -> float:
        return statistics.median(self.figures)

    @property
    def met(self) -> bool:
        return self.target.met(self.figure)

    def name(self) -> str:
        return f"{self.target.key}" + (f" {self.case}" if self.case else "")

    def verdict(self) -> str:
        t = self.target
        return (
            f"{self.name()} ({t.title}): "
            f"{t.format(self.figure)}, promise {t.promise()}, over {len(self.figures)} rounds"
        )


def sample_rounds(result: Result, rounds: int, samples: int) -> None:
    """Add ``rounds`` interleaved rounds of ``samples`` samples of each side."""
    samplers = result.trial.samplers
    names = list(samplers)
    for name in names:
        result.values.setdefault(name, [])
    start = len(result.figures)
    for r in range(start, start + rounds):
        taken: dict[str, list[float]] = {name: [] for name in names}
        for k in range(samples):
            shift = (r + k) % len(names)
            for name in names[shift:] + names[:shift]:
                taken[name].append(samplers[name]())
        medians = {name: statistics.median(values) for name, values in taken.items()}
        for name, value in medians.items():
            result.values[name].append(value)
        result.figures.append(result.trial.figure(medians))
    result.trial.verify()


def judge(
    target: Target,
    case: str,
    trial: Trial,
    rounds: int,
    samples: int,
    log: Callable[[str], None] = print,
) -> Result:
    """Measure one check; re-measure a miss with ``RETRY_FACTOR`` times the rounds.

    The verdict on a re-measured check is the median over every round, the
    first ones included.
    """
    result = Result(target, case, trial)
    sample_rounds(result, rounds, samples)
    if not result.met:
        more = RETRY_FACTOR * rounds
        log(
            f"  {result.name()}: {target.format(result.figure)} misses {target.promise()} "
            f"after {rounds} rounds; measuring {more} more"
        )
        sample_rounds(result, more, samples)
    return result


# -- measurements ------------------------------------------------------------------


def _runner(name: str, scenario: str, ctx: Context) -> Runner:
    if name == "ringbus" and ctx.core_name == "python":
        name = "ringbus pure"  # the twin presented as the compiled core
    if name == "floor" and ctx.floor is None:
        raise MissingPart(f"the floor could not be built: {ctx.floor_note}")
    package = PEERS.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise MissingPart(f"{package} is not installed (pip install 'ringbus[bench]')")
    return runner_maker(ctx.floor)(
        name, SCENARIOS[scenario], make_batch(SCENARIOS[scenario].events_per_tick)
    )


def timed_ticks(runner: Runner, ran: list[int]) -> Callable[[], float]:
    """A sampler: ns per event over ``SAMPLE_EVENTS`` events of ``runner``."""
    ticks = max(1, SAMPLE_EVENTS // runner.scenario.events_per_tick)
    events = ticks * runner.scenario.events_per_tick
    clock = CLOCK
    run = runner.run

    def sample() -> float:
        start = clock()
        run(ticks)
        elapsed = clock() - start
        ran[0] += ticks
        return elapsed / events

    return sample


def _loop_sampler(
    loop: Any, run: Callable[[int], Any], ticks: int, events_per_tick: int
) -> Callable[[], float]:
    """A sampler: ns per event of ``run(first_tick)``, a coroutine covering ``ticks`` ticks
    of ``events_per_tick`` events, run to completion on ``loop``."""
    state = {"tick": 0}

    def sample() -> float:
        tick = state["tick"] + 1
        start = CLOCK()
        loop.run_until_complete(run(tick))
        elapsed = CLOCK() - start
        state["tick"] = tick + ticks
        return elapsed / (ticks * events_per_tick)

    return sample


def warm_up(samplers: dict[str, Callable[[], float]], events: int) -> None:
    """Run every sampler past ``events`` events, untimed."""
    for sampler in samplers.values():
        for _ in range(events // SAMPLE_EVENTS + 1):
            sampler()


def ratio(ctx: Context, case: str, a: str, b: str) -> Trial:
    """ns per event of implementation ``a`` over ``b`` on scenario ``case``."""
    runners = {a: _runner(a, case, ctx), b: _runner(b, case, ctx)}
    ran = {name: [0] for name in runners}
    samplers = {name: timed_ticks(runner, ran[name]) for name, runner in runners.items()}
    warm_up(samplers, ctx.warmup_events)

    def verify() -> None:
        for name, runner in runners.items():
            check_deliveries(runner, ran[name][0])

    return Trial(samplers, lambda m: m[a] / m[b], a, b, verify=verify)


def disabled_publish(ctx: Context, case: str) -> Trial:
    """A disabled bus's ``publish`` vs an empty function, net of the bare loop."""
    bus = bus_class_for(ctx.core)(EventBusConfig(enabled=False))
    batch = make_batch(100) * 10
    publish = bus.publish

    def bare(kind: str, payload: object = None) -> int:
        return 0

    empty = empty_publish if case == "same-signature" else bare
    clock = CLOCK

    def call(function: Callable[..., int]) -> Callable[[], float]:
        def sample() -> float:
            start = clock()
            for kind, payload in batch:
                function(kind, payload=payload)
            return (clock() - start) / len(batch)

        return sample

    def loop() -> float:
        start = clock()
        for _kind, _payload in batch:
            pass
        return (clock() - start) / len(batch)

    def verify() -> None:
        assert bus.latest_seq() == 0 and len(bus) == 0, "a disabled bus stored events"

    return Trial(
        {"publish": call(publish), "empty call": call(empty), "loop": loop},
        lambda m: (m["publish"] - m["loop"]) / max(m["empty call"] - m["loop"], 1e-9),
        "publish",
        "empty call",
        verify=verify,
    )


def ring_sizes(ctx: Context, case: str) -> Trial:
    """S1 ns per event on a full 1,000,000-slot ring vs a full 1,000-slot one."""
    samplers: dict[str, Callable[[], float]] = {}
    buses = {}
    for slots, name in ((1_000_000, "1,000,000 slots"), (1_000, "1,000 slots")):
        bus = bus_class_for(ctx.core)(EventBusConfig(max_events=slots))
        runner = bus_runner(name, bus, bus.subscribe, SCENARIOS["S1"], make_batch(100))
        while len(bus) < slots:  # fill the ring: the measured publishes overwrite
            runner.run(1)
        buses[name] = (bus, slots)

        def sample(run: Callable[[int], None] = runner.run) -> float:
            start = CLOCK()
            run(SAMPLE_EVENTS // 100)
            return (CLOCK() - start) / SAMPLE_EVENTS

        samplers[name] = sample

    def verify() -> None:
        for bus, slots in buses.values():
            assert len(bus) == slots, "the ring is not full"

    big, small = samplers
    return Trial(samplers, lambda m: (m[big] - m[small]) / m[small], big, small, verify=verify)


def idle_subscribers(ctx: Context, case: str) -> Trial:
    """S3 ns per event with 100 subscribers to kinds that never occur, vs plain S3."""
    idle = _runner("ringbus", "S3", ctx)
    plain = _runner("ringbus", "S3", ctx)
    bus: Any = idle.target
    never_called: list[object] = []
    for n in range(100):
        bus.subscribe(never_called.append, kinds={f"NEVER_PUBLISHED_{n}"})
    ran = {"idle": [0], "plain": [0]}
    samplers = {
        "S3 + 100 idle": timed_ticks(idle, ran["idle"]),
        "S3": timed_ticks(plain, ran["plain"]),
    }
    warm_up(samplers, ctx.warmup_events)

    def verify() -> None:
        check_deliveries(idle, ran["idle"][0])
        check_deliveries(plain, ran["plain"][0])
        assert never_called == [], "an idle subscriber was called"

    return Trial(
        samplers,
        lambda m: (m["S3 + 100 idle"] - m["S3"]) / m["S3"],
        "S3 + 100 idle",
        "S3",
        verify=verify,
    )


#: The sides each journal figure compares (see ``journal_targets.py``).
JOURNAL_SIDES = {
    "journal": ("S2 journaled", "S2"),
    "journal-cost": ("S2 journaled", "S2", "plain loop"),
    "verify": ("plain loop", "verify journal"),
}


def journal(ctx: Context, case: str, figure: str) -> Trial:
    """A journal figure: journaled S2 over S2, its cost over the plain loop, or verify's speed."""
    implementation = "ringbus pure" if ctx.core_name == "python" else "ringbus"
    bench = JournalBench(implementation, warmup_events=ctx.warmup_events)
    samplers = bench.samplers()
    sides = JOURNAL_SIDES[figure]
    return Trial(
        {name: samplers[name] for name in sides},
        lambda m: journal_figures(
            {**dict.fromkeys(("S2 journaled", "S2", "plain loop", "verify journal"), 1.0), **m}
        )[figure],
        sides[0],
        sides[-1],
        verify=bench.check,
    )


def redis_sink(ctx: Context, case: str) -> Trial:
    """S2 ns per event with a Redis sink attached to the bus vs plain S2 (the loop's thread).

    Starts a redis-server of its own on a free port. The figure is the
    loop's thread: the sink's handler and its hand-off at each drain end;
    serialising and sending run on the sink's sender thread, which is
    flushed (untimed) after every sample so its queue never overflows. The
    check then reads the stream back: every event must be there.
    """
    from ringbus.demo.multiprocess import TemporaryRedis
    from ringbus.transports.redis_streams import RedisStreamSink, connect

    try:
        server = TemporaryRedis()
    except (SystemExit, OSError) as error:
        raise MissingPart(f"the redis-sink target needs redis-server on PATH ({error})") from None
    atexit.register(server.stop)  # also when sampling fails before verify() stops it
    with_sink = _runner("ringbus", case, ctx)
    plain = _runner("ringbus", case, ctx)
    bus: Any = with_sink.target
    sink = RedisStreamSink(connect(server.url, timeout=5.0), stream="bench", maxlen=10_000_000)
    sink.attach(bus)
    ran = {"sink": [0], "plain": [0]}
    timed_sink = timed_ticks(with_sink, ran["sink"])

    def sample_sink() -> float:
        figure = timed_sink()
        if not sink.flush(timeout=120):
            raise AssertionError(f"the sink could not send within 120 s: {sink.status()}")
        return figure

    samplers = {f"{case} + Redis sink": sample_sink, case: timed_ticks(plain, ran["plain"])}
    warm_up(samplers, ctx.warmup_events)

    def verify() -> None:
        try:
            check_deliveries(with_sink, ran["sink"][0])
            check_deliveries(plain, ran["plain"][0])
            assert sink.close(timeout=60), f"the sink could not finish: {sink.status()}"
            status = sink.status()
            assert status["dropped"] == status["failed"] == status["invalid"] == 0, status
            client = connect(server.url, timeout=30.0)
            stored = sum(int(fields[b"count"]) for _id, fields in client.xrange("bench"))
            assert stored == status["received"] == bus.latest_seq(), (stored, status)
        finally:
            server.stop()

    return Trial(
        samplers,
        lambda m: m[f"{case} + Redis sink"] / m[case],
        f"{case} + Redis sink",
        case,
        verify=verify,
    )


def _ticks_sampler(
    step: Callable[[int], None], events_per_tick: int, clock: Callable[[], int] = CLOCK
) -> Callable[[], float]:
    """A sampler: ns per event over ``SAMPLE_EVENTS`` events of ``step(tick)`` ticks."""
    ticks = max(1, SAMPLE_EVENTS // events_per_tick)
    state = {"tick": 0}

    def sample() -> float:
        tick = state["tick"]
        start = clock()
        for _ in range(ticks):
            tick += 1
            step(tick)
        elapsed = clock() - start
        state["tick"] = tick
        return elapsed / (ticks * events_per_tick)

    return sample


def producer_publish(ctx: Context, case: str) -> Trial:
    """S1 through one producer (publish, then drain) vs plain S1, ns per event."""
    batch = make_batch(SCENARIOS["S1"].events_per_tick)
    cls = bus_class_for(ctx.core)
    plain, through = cls(), cls()
    producer = through.producer("worker")

    def plain_tick(tick: int) -> None:
        plain.set_clock(tick, tick // 100)
        publish = plain.publish
        for kind, payload in batch:
            publish(kind, payload=payload)
        plain.drain()

    def producer_tick(tick: int) -> None:
        through.set_clock(tick, tick // 100)
        publish = producer.publish
        for kind, payload in batch:
            publish(kind, payload=payload)
        through.drain()

    samplers = {
        "producer.publish": _ticks_sampler(producer_tick, len(batch)),
        "publish": _ticks_sampler(plain_tick, len(batch)),
    }
    warm_up(samplers, ctx.warmup_events)

    def verify() -> None:
        assert through.latest_seq() == plain.latest_seq() > 0, "the producer's events are lost"
        assert through.pending_count() == 0 and len(producer) == 0

    return Trial(
        samplers,
        lambda m: m["producer.publish"] / m["publish"],
        "producer.publish",
        "publish",
        verify=verify,
    )


#: Events per sample of the thread target: thread hand-offs cost tens of
#: microseconds, kept small beside the work.
THREAD_SAMPLE_EVENTS = 20_000


def producer_threads(ctx: Context, case: str) -> Trial:
    """Events per second published by 4 producer threads vs by 1, then drained.

    Worker threads stay up between samples and are released by a barrier,
    on both sides alike. Process CPU time counts every thread's work.
    """
    batch = make_batch(100)
    cls = bus_class_for(ctx.core)
    pools: list[Any] = []

    def pool(workers: int) -> Callable[[], float]:
        bus = cls(EventBusConfig(max_pending=THREAD_SAMPLE_EVENTS))
        producers = [bus.producer(f"w{n}") for n in range(workers)]
        share = THREAD_SAMPLE_EVENTS // workers
        go = threading.Barrier(workers + 1)
        done = threading.Barrier(workers + 1)
        stop = [False]

        def work(producer: Any) -> None:
            publish = producer.publish
            while True:
                go.wait()
                if stop[0]:
                    return
                for n in range(share):
                    kind, payload = batch[n % 100]
                    publish(kind, payload=payload)
                done.wait()

        threads = [threading.Thread(target=work, args=(p,), daemon=True) for p in producers]
        for thread in threads:
            thread.start()
        pools.append((stop, go, threads, bus))

        def sample() -> float:
            start = time.process_time_ns()
            go.wait()
            done.wait()
            bus.drain()
            elapsed = time.process_time_ns() - start
            return THREAD_SAMPLE_EVENTS / (elapsed / 1e9)

        return sample

    samplers = {"4 threads": pool(4), "1 thread": pool(1)}
    warm_up(samplers, ctx.warmup_events)

    def verify() -> None:
        for stop, go, threads, bus in pools:
            stop[0] = True
            go.wait()
            for thread in threads:
                thread.join()
            assert bus.latest_seq() % THREAD_SAMPLE_EVENTS == 0 and bus.latest_seq() > 0

    return Trial(
        samplers,
        lambda m: m["4 threads"] / m["1 thread"],
        "4 threads",
        "1 thread",
        unit="/s",
        verify=verify,
    )


def stream_reader(ctx: Context, case: str) -> Trial:
    """S2 read through ``async for`` over ``bus.stream()`` vs a sync subscriber."""
    batch = make_batch(SCENARIOS["S2"].events_per_tick)
    cls = bus_class_for(ctx.core)
    sync_bus, stream_bus = cls(), cls()
    counted = [0]

    def count(event: Any) -> None:
        counted[0] += 1

    sync_bus.subscribe(count)
    loop = asyncio.new_event_loop()
    stream = stream_bus.stream(maxsize=SAMPLE_EVENTS + len(batch))
    read = [0]
    ticks = SAMPLE_EVENTS // len(batch)

    async def read_ticks(tick: int) -> None:
        left = 0
        for step in range(tick, tick + ticks):
            stream_bus.set_clock(step, step // 100)
            publish = stream_bus.publish
            for kind, payload in batch:
                publish(kind, payload=payload)
            stream_bus.drain()
            left += len(batch)
            async for _event in stream:
                left -= 1
                if not left:
                    break
        read[0] += ticks * len(batch)

    def sync_tick(tick: int) -> None:
        sync_bus.set_clock(tick, tick // 100)
        publish = sync_bus.publish
        for kind, payload in batch:
            publish(kind, payload=payload)
        sync_bus.drain()

    samplers = {
        "async for": _loop_sampler(loop, read_ticks, ticks, len(batch)),
        "subscriber": _ticks_sampler(sync_tick, len(batch)),
    }
    warm_up(samplers, ctx.warmup_events)

    def verify() -> None:
        assert read[0] == stream_bus.latest_seq() > 0, "the stream missed events"
        assert stream.dropped == 0
        assert counted[0] == sync_bus.latest_seq() > 0
        stream.close()
        loop.close()

    return Trial(
        samplers,
        lambda m: m["async for"] / m["subscriber"],
        "async for",
        "subscriber",
        verify=verify,
    )


def drain_async(ctx: Context, case: str) -> Trial:
    """S2 drained by ``await drain_async()`` vs ``drain()``, only sync handlers."""
    batch = make_batch(SCENARIOS["S2"].events_per_tick)
    cls = bus_class_for(ctx.core)
    sync_bus, async_bus = cls(), cls()
    counted = {"drain": [0], "drain_async": [0]}
    for bus, key in ((sync_bus, "drain"), (async_bus, "drain_async")):
        cell = counted[key]

        def count(event: Any, cell: list[int] = cell) -> None:
            cell[0] += 1

        bus.subscribe(count)
    loop = asyncio.new_event_loop()
    ticks = SAMPLE_EVENTS // len(batch)

    async def async_ticks(tick: int) -> None:
        for step in range(tick, tick + ticks):
            async_bus.set_clock(step, step // 100)
            publish = async_bus.publish
            for kind, payload in batch:
                publish(kind, payload=payload)
            await async_bus.drain_async()

    async def sync_ticks(tick: int) -> None:
        for step in range(tick, tick + ticks):
            sync_bus.set_clock(step, step // 100)
            publish = sync_bus.publish
            for kind, payload in batch:
                publish(kind, payload=payload)
            sync_bus.drain()

    # Both sides run inside the event loop, so only the drains differ.
    samplers = {
        "drain_async": _loop_sampler(loop, async_ticks, ticks, len(batch)),
        "drain": _loop_sampler(loop, sync_ticks, ticks, len(batch)),
    }
    warm_up(samplers, ctx.warmup_events)

    def verify() -> None:
        for key, bus in (("drain", sync_bus), ("drain_async", async_bus)):
            assert counted[key][0] == bus.latest_seq() > 0, f"{key} missed deliveries"
        loop.close()

    return Trial(
        samplers, lambda m: m["drain_async"] / m["drain"], "drain_async", "drain", verify=verify
    )


def memory(core: ModuleType, slots: int = 50_000, extra: int = 200_000) -> tuple[float, float]:
    """Bytes per retained event in a full ring, and growth over ``extra`` more events."""
    cls = bus_class_for(core)
    gc.collect()
    tracemalloc.start()
    try:
        # The base is taken before the bus exists: a preallocated ring counts.
        base = tracemalloc.get_traced_memory()[0]
        bus = cls(EventBusConfig(max_events=slots))
        wards = tuple(f"ward-{n}" for n in range(8))

        def publish_many(count: int, start: int) -> None:
            for n in range(start, start + count):
                if n % 100 == 0:
                    bus.drain()
                    bus.set_clock(n // 100, n // 10_000)
                # a fresh payload dict per event, as the sim makes them
                bus.publish(
                    CORE_KINDS[n % 13],
                    payload={"ward": wards[n % 8], "amount": n % 50, "ok": n % 3 != 0},
                )
            bus.drain()

        publish_many(slots, 0)
        gc.collect()
        full = tracemalloc.get_traced_memory()[0]
        publish_many(extra, slots)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(bus) == slots, "the ring is not full"
    return (full - base) / slots, after - full


def bytes_per_event(ctx: Context, case: str) -> Trial:
    return Trial(
        {"bytes per event": lambda: memory(ctx.core)[0]},
        lambda m: m["bytes per event"],
        "bytes per event",
        unit="B",
    )


def memory_growth(ctx: Context, case: str) -> Trial:
    return Trial({"growth": lambda: memory(ctx.core)[1]}, lambda m: m["growth"], "growth", unit="B")


#: Target.measurement -> function(context, case, *Target.args) -> Trial
MEASUREMENTS: dict[str, Callable[..., Trial]] = {
    "ratio": ratio,
    "disabled_publish": disabled_publish,
    "ring_sizes": ring_sizes,
    "idle_subscribers": idle_subscribers,
    "bytes_per_event": bytes_per_event,
    "memory_growth": memory_growth,
    "journal": journal,
    "redis_sink": redis_sink,
    "producer_publish": producer_publish,
    "producer_threads": producer_threads,
    "stream_reader": stream_reader,
    "drain_async": drain_async,
}


# -- the gate ------------------------------------------------------------------------


def print_header() -> None:
    print(
        f"  {'check':<22} {'A':<18} {'A':>10} {'B':<18} {'B':>10} "
        f"{'figure':>12} {'promise':<16} {'rounds':>6}  result"
    )


def print_row(result: Result) -> None:
    trial = result.trial
    a = statistics.median(result.values[trial.a])
    b = statistics.median(result.values[trial.b]) if trial.b else None
    b_text = f"{b:>7,.0f} {trial.unit:<2}" if b is not None else f"{'':>10}"
    print(
        f"  {result.name():<22} {trial.a:<18} {a:>7,.0f} {trial.unit:<2} {trial.b:<18} {b_text} "
        f"{result.target.format(result.figure):>12} {result.target.promise():<16} "
        f"{len(result.figures):>6}  {'ok' if result.met else 'MISS'}",
        flush=True,
    )


def context(core_name: str, targets: Sequence[Target], warmup_events: int) -> Context:
    if core_name == "cython":
        core = compiled_core()
        if core is None:
            raise MissingPart(
                "the compiled core ringbus._ringbus does not import (not built, or "
                "RINGBUS_NO_EXTENSIONS is on); the targets are the compiled core's"
            )
    else:
        from ringbus import _ringbus_py as core
    ctx = Context(core_name, core, warmup_events=warmup_events)
    if any("floor" in t.args for t in targets):
        ctx.floor, ctx.floor_note = build_floor()
    return ctx


def run(
    targets: Sequence[Target],
    ctx: Context,
    rounds: int | None = None,
    samples: int | None = None,
) -> list[Result]:
    """Judge every case of ``targets``; print a row per check as it is done."""
    results = []
    print_header()
    for t in targets:
        for case in t.cases:
            trial = MEASUREMENTS[t.measurement](ctx, case, *t.args)
            result = judge(t, case, trial, rounds or t.rounds, samples or t.samples)
            print_row(result)
            results.append(result)
            del trial
            gc.collect()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated target keys (default: every target)"
    )
    parser.add_argument(
        "--core",
        choices=("cython", "python"),
        default="cython",
        help="core measured as ringbus (python: the twin in the compiled core's place)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every check")
    parser.add_argument("--samples", type=int, default=None, help="samples per round")
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=WARMUP_EVENTS,
        help=f"untimed events before sampling (default {WARMUP_EVENTS:,})",
    )
    parser.add_argument("--list", action="store_true", help="print the target table and exit")
    args = parser.parse_args(argv)
    if args.list:
        print(markdown_table())
        return 0
    keys = [key.strip() for key in args.only.split(",") if key.strip()]
    known = {t.key for t in TARGETS}
    unknown = [key for key in keys if key not in known]
    if unknown:
        parser.error(f"unknown targets {', '.join(unknown)}: use {', '.join(sorted(known))}")
    targets = [t for t in TARGETS if not keys or t.key in keys]
    started = time.monotonic()
    try:
        ctx = context(args.core, targets, args.warmup_events)
        for line in environment_lines():
            print(line)
        print(
            f"core measured as ringbus: {args.core}"
            + (" (the pure twin in the compiled core's place)" if args.core == "python" else "")
        )
        print("figure = A / B from medians of interleaved samples (B: the reference)")
        results = run(targets, ctx, args.rounds, args.samples)
    except MissingPart as error:
        print(f"targets: FAIL: {error}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - started
    missed = [r for r in results if not r.met]
    if missed:
        for r in missed:
            print(f"targets: FAIL: {r.verdict()}")
        print(f"targets: {len(missed)} of {len(results)} checks missed ({elapsed:.0f} s)")
        return 1
    print(f"targets: all {len(results)} checks met ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
