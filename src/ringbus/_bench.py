"""The ringbus benchmark workload, its runners and ``python -m ringbus bench``.

One workload, shared by the command, the ``benchmarks/`` suites and the CI
gates: events as a simulation makes them (one of the 13 core kinds, tick and
day from the clock, a payload dict of three small items, no ids, no tags),
100 events per tick and a drain after every tick.

Scenarios
---------
S1  publish only, no subscribers
S2  one subscriber to every kind
S3  ten subscribers, each to 2 of the 13 kinds
S4  as S3, in bursts of 1000 events per tick

Every implementation runs the same scenario through its own idiomatic API:
ringbus and its pure-Python twin through the :class:`~ringbus.EventBus`
facade, and the peers blinker (a named signal per kind), psygnal (a signal per kind, ``emit``
and ``emit_fast``) and pyee, when they are installed. Handlers only count.
Results are ns per published event, medians of samples taken in interleaved
rounds, so every implementation sees the same machine noise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from . import _ringbus_py
from ._bus import bus_class_for
from ._config import EventBusConfig
from ._switch import extensions_disabled
from .kinds import CORE_KINDS

__all__ = [
    "run_table",
    "environment_lines",
    "PEER_PACKAGES",
    "empty_publish",
    "IMPLEMENTATIONS",
    "SCENARIOS",
    "Batch",
    "Counter",
    "Runner",
    "Scenario",
    "available_implementations",
    "bus_runner",
    "compiled_core",
    "expected_deliveries",
    "format_table",
    "make_batch",
    "make_runner",
    "measure",
]

#: Seed of the kind sequence: the workload is the same in every run.
WORKLOAD_SEED = 2024
#: Events per sample when timing (a sample of S4 is two ticks).
SAMPLE_EVENTS = 2000


@dataclass(frozen=True)
class Scenario:
    """One benchmark scenario.

    Parameters
    ----------
    name
        ``"S1"`` .. ``"S4"``.
    title
        What it measures, for tables.
    subscribers
        Kinds of each subscriber, in subscription order; ``None`` is every kind.
    events_per_tick
        Events published between two drains.
    """

    name: str
    title: str
    subscribers: tuple[tuple[str, ...] | None, ...]
    events_per_tick: int = 100


def _pairs_of_kinds() -> tuple[tuple[str, ...], ...]:
    # Subscriber j takes kinds 2j and 2j+1 (mod 13): 20 subscriptions over
    # the 13 kinds, seven kinds with two subscribers and six with one.
    count = len(CORE_KINDS)
    return tuple((CORE_KINDS[(2 * j) % count], CORE_KINDS[(2 * j + 1) % count]) for j in range(10))


#: The four scenarios, by name.
SCENARIOS: dict[str, Scenario] = {
    "S1": Scenario("S1", "publish only, no subscribers", ()),
    "S2": Scenario("S2", "one subscriber to all kinds", (None,)),
    "S3": Scenario("S3", "ten subscribers, 2 kinds each", _pairs_of_kinds()),
    "S4": Scenario("S4", "as S3, 1000 events per tick", _pairs_of_kinds(), 1000),
}

Batch = tuple[tuple[str, dict[str, object]], ...]


def make_batch(events_per_tick: int, seed: int = WORKLOAD_SEED) -> Batch:
    """Return one tick's events: ``(kind, payload)`` pairs, the same every run.

    Kinds are drawn from the 13 core kinds by a seeded generator; each
    payload is a dict of three small items, as a simulation writes them.
    """
    rng = random.Random(seed)
    wards = tuple(f"ward-{n}" for n in range(8))
    batch = []
    for n in range(events_per_tick):
        kind = CORE_KINDS[rng.randrange(len(CORE_KINDS))]
        payload: dict[str, object] = {
            "ward": wards[n % len(wards)],
            "amount": n % 50,
            "ok": n % 3 != 0,
        }
        batch.append((kind, payload))
    return tuple(batch)


def expected_deliveries(scenario: Scenario, batch: Batch, ticks: int) -> int:
    """Number of handler calls ``ticks`` ticks of ``scenario`` must make."""
    per_tick = 0
    for kind, _payload in batch:
        per_tick += sum(1 for kinds in scenario.subscribers if kinds is None or kind in kinds)
    return per_tick * ticks


class Counter:
    """What every handler does: count."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@dataclass
class Runner:
    """One implementation set up for one scenario.

    ``run(ticks)`` publishes ``ticks`` ticks of the batch, draining (where
    the implementation has a drain) after each; ``delivered()`` sums the
    handlers' counts.
    """

    implementation: str
    scenario: Scenario
    batch: Batch
    run: Callable[[int], None]
    counters: list[Counter] = field(default_factory=list)
    #: The bus or emitter, kept alive (some peers hold handlers weakly).
    target: object = None

    def delivered(self) -> int:
        """Handler calls so far."""
        return sum(counter.count for counter in self.counters)


# -- implementations ------------------------------------------------------------


def compiled_core() -> ModuleType | None:
    """The compiled core module, or ``None`` when it is switched off or not built."""
    if extensions_disabled():
        return None
    try:
        return importlib.import_module("ringbus._ringbus")
    except ModuleNotFoundError as error:
        if error.name != "ringbus._ringbus":
            raise
        return None


def bus_runner(
    name: str,
    bus: Any,
    subscribe: Callable[[Callable[[object], None], Any], object],
    scenario: Scenario,
    batch: Batch,
) -> Runner:
    """A runner for a bus with ringbus's shape: ``publish(kind, payload=)``,
    ``drain()`` and ``set_clock(tick, day)``; ``subscribe(handler, kinds)``
    subscribes a handler in that bus's own way."""
    counters = []
    for kinds in scenario.subscribers:
        counter = Counter()
        counters.append(counter)

        def on_event(event: object, counter: Counter = counter) -> None:
            counter.count += 1

        subscribe(on_event, kinds)
    publish = bus.publish
    drain = bus.drain
    set_clock = bus.set_clock
    clock = [0]

    def run(ticks: int) -> None:
        tick = clock[0]
        for _ in range(ticks):
            tick += 1
            set_clock(tick, tick // 100)
            for kind, payload in batch:
                publish(kind, payload=payload)
            drain()
        clock[0] = tick

    return Runner(name, scenario, batch, run, counters, bus)


def _ringbus_runner(
    name: str, core: ModuleType, scenario: Scenario, batch: Batch, config: EventBusConfig | None
) -> Runner:
    bus = bus_class_for(core)(config)
    return bus_runner(
        name, bus, lambda handler, kinds: bus.subscribe(handler, kinds=kinds), scenario, batch
    )


def _connect_counters(
    scenario: Scenario,
    handler_for: Callable[[Counter], Callable[..., None]],
    connect: Callable[[str, Callable[..., None]], object],
) -> list[Counter]:
    """One counting handler per subscriber of ``scenario``, connected to its kinds.

    ``handler_for(counter)`` makes a handler of the peer's own signature, so
    each peer is called the way its users call it.
    """
    counters = []
    for kinds in scenario.subscribers:
        counter = Counter()
        counters.append(counter)
        handler = handler_for(counter)
        for kind in CORE_KINDS if kinds is None else kinds:
            connect(kind, handler)
    return counters


def _tick_day_payload_handler(counter: Counter) -> Callable[..., None]:
    def on_event(
        tick: int, day: int, payload: dict[str, object], counter: Counter = counter
    ) -> None:
        counter.count += 1

    return on_event


def _psygnal_runner(fast: bool, scenario: Scenario, batch: Batch) -> Runner:
    from psygnal import SignalInstance

    signals = {kind: SignalInstance((int, int, dict), name=kind) for kind in CORE_KINDS}
    counters = _connect_counters(
        scenario, _tick_day_payload_handler, lambda kind, handler: signals[kind].connect(handler)
    )
    # The publishing code names its signal, so the per-kind lookup is done once.
    emits = tuple(
        (signals[kind].emit_fast if fast else signals[kind].emit, payload)
        for kind, payload in batch
    )
    clock = [0]

    def run(ticks: int) -> None:
        tick = clock[0]
        for _ in range(ticks):
            tick += 1
            day = tick // 100
            for emit, payload in emits:
                emit(tick, day, payload)
        clock[0] = tick

    name = "psygnal emit_fast" if fast else "psygnal emit"
    return Runner(name, scenario, batch, run, counters, signals)


def _blinker_runner(scenario: Scenario, batch: Batch) -> Runner:
    import blinker

    namespace = blinker.Namespace()
    signals = {kind: namespace.signal(kind) for kind in CORE_KINDS}

    def handler_for(counter: Counter) -> Callable[..., None]:
        def on_event(sender: object, counter: Counter = counter, **data: object) -> None:
            counter.count += 1

        return on_event

    counters = _connect_counters(
        scenario, handler_for, lambda kind, handler: signals[kind].connect(handler, weak=False)
    )
    sends = tuple((signals[kind].send, payload) for kind, payload in batch)
    sim = object()
    clock = [0]

    def run(ticks: int) -> None:
        tick = clock[0]
        for _ in range(ticks):
            tick += 1
            day = tick // 100
            for send, payload in sends:
                send(sim, tick=tick, day=day, payload=payload)
        clock[0] = tick

    return Runner("blinker", scenario, batch, run, counters, signals)


def _pyee_runner(scenario: Scenario, batch: Batch) -> Runner:
    from pyee import EventEmitter

    emitter = EventEmitter()
    counters = _connect_counters(scenario, _tick_day_payload_handler, emitter.add_listener)
    emit = emitter.emit
    clock = [0]

    def run(ticks: int) -> None:
        tick = clock[0]
        for _ in range(ticks):
            tick += 1
            day = tick // 100
            for kind, payload in batch:
                emit(kind, tick, day, payload)
        clock[0] = tick

    return Runner("pyee", scenario, batch, run, counters, emitter)


#: Every implementation the benchmarks know, in table order.
IMPLEMENTATIONS = (
    "ringbus",
    "ringbus pure",
    "psygnal emit_fast",
    "psygnal emit",
    "pyee",
    "blinker",
)
PEER_PACKAGES = {
    "psygnal emit_fast": "psygnal",
    "psygnal emit": "psygnal",
    "pyee": "pyee",
    "blinker": "blinker",
}


def make_runner(
    implementation: str,
    scenario: Scenario | str,
    *,
    config: EventBusConfig | None = None,
    batch: Batch | None = None,
) -> Runner:
    """Set ``implementation`` up for ``scenario`` and return its :class:`Runner`.

    Parameters
    ----------
    implementation
        One of :data:`IMPLEMENTATIONS`.
    scenario
        A :class:`Scenario` or its name.
    config
        Configuration of the ringbus buses (default: ``EventBusConfig()``).
    batch
        One tick's events (default: :func:`make_batch` for the scenario).

    Raises
    ------
    ValueError
        Unknown implementation or scenario.
    RuntimeError
        The compiled core is not available.
    """
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
        scenario = SCENARIOS[scenario]
    if batch is None:
        batch = make_batch(scenario.events_per_tick)
    if implementation == "ringbus":
        core = compiled_core()
        if core is None:
            raise RuntimeError(
                "the compiled core ringbus._ringbus is not available (not built, or "
                "RINGBUS_NO_EXTENSIONS is on)"
            )
        return _ringbus_runner("ringbus", core, scenario, batch, config)
    if implementation == "ringbus pure":
        return _ringbus_runner("ringbus pure", _ringbus_py, scenario, batch, config)
    if implementation in ("psygnal emit_fast", "psygnal emit"):
        return _psygnal_runner(implementation.endswith("fast"), scenario, batch)
    if implementation == "blinker":
        return _blinker_runner(scenario, batch)
    if implementation == "pyee":
        return _pyee_runner(scenario, batch)
    raise ValueError(
        f"unknown implementation {implementation!r}: use one of {', '.join(IMPLEMENTATIONS)}"
    )


def empty_publish(
    kind: str,
    tick: int | None = None,
    day: int | None = None,
    *,
    polity_id: str | None = None,
    ward_id: str | None = None,
    actor_id: str | None = None,
    subject_id: str | None = None,
    payload: object = None,
    tags: object = (),
) -> int:
    """An empty function with ``publish``'s signature: what a no-op call costs."""
    return 0


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def available_implementations() -> tuple[list[str], list[str]]:
    """Return ``(names, notes)``: what can run here, and why the rest cannot."""
    names: list[str] = []
    notes: list[str] = []
    for name in IMPLEMENTATIONS:
        if name == "ringbus" and compiled_core() is None:
            notes.append("ringbus (compiled) skipped: the extension is not built or switched off")
            continue
        package = PEER_PACKAGES.get(name)
        if package is not None and not _importable(package):
            note = f"{package} skipped: not installed (pip install {package})"
            if note not in notes:
                notes.append(note)
            continue
        names.append(name)
    return names, notes


# -- timing -----------------------------------------------------------------------


def _ticks_per_sample(scenario: Scenario) -> int:
    return max(1, SAMPLE_EVENTS // scenario.events_per_tick)


def _sample(runner: Runner, ticks: int) -> float:
    clock = time.perf_counter_ns
    start = clock()
    runner.run(ticks)
    elapsed = clock() - start
    return elapsed / (ticks * runner.scenario.events_per_tick)


def measure(
    runners: Sequence[Runner], rounds: int, ticks: int | None = None, warmup: int = 2
) -> dict[str, list[float]]:
    """Time ``runners`` (all of one scenario) in interleaved rounds.

    Each round takes one sample of every runner, the order rotating from
    round to round. Returns ns per published event, every sample, by
    implementation name.
    """
    if not runners:
        return {}
    scenario = runners[0].scenario
    ticks = _ticks_per_sample(scenario) if ticks is None else ticks
    for runner in runners:
        for _ in range(warmup):
            runner.run(ticks)
    samples: dict[str, list[float]] = {runner.implementation: [] for runner in runners}
    count = len(runners)
    for round_number in range(rounds):
        for offset in range(count):
            runner = runners[(round_number + offset) % count]
            samples[runner.implementation].append(_sample(runner, ticks))
    return samples


def check_deliveries(runner: Runner, ticks_run: int) -> None:
    """Raise ``AssertionError`` unless the runner delivered exactly what it must."""
    expected = expected_deliveries(runner.scenario, runner.batch, ticks_run)
    got = runner.delivered()
    if got != expected:
        raise AssertionError(
            f"{runner.implementation} on {runner.scenario.name}: {got} deliveries "
            f"after {ticks_run} ticks, expected {expected}"
        )


def run_table(
    implementations: Sequence[str],
    scenarios: Sequence[str],
    rounds: int,
    make: Callable[[str, Scenario, Batch], Runner] | None = None,
) -> dict[str, dict[str, float]]:
    """Measure every implementation on every scenario; medians by [impl][scenario].

    ``make(name, scenario, batch)`` sets an implementation up (default
    :func:`make_runner`), so a caller can time buses this module does not know.
    """
    if make is None:

        def make(name: str, scenario: Scenario, batch: Batch) -> Runner:
            return make_runner(name, scenario, batch=batch)

    table: dict[str, dict[str, float]] = {name: {} for name in implementations}
    for scenario_name in scenarios:
        scenario = SCENARIOS[scenario_name]
        batch = make_batch(scenario.events_per_tick)
        runners = [make(name, scenario, batch) for name in implementations]
        samples = measure(runners, rounds)
        ticks_run = _ticks_per_sample(scenario) * (rounds + 2)
        for runner in runners:
            check_deliveries(runner, ticks_run)
            table[runner.implementation][scenario_name] = statistics.median(
                samples[runner.implementation]
            )
    return table


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def environment_lines() -> list[str]:
    """Versions and machine, for the table header."""
    from . import __version__

    peers = ", ".join(
        f"{name} {_version(name)}"
        for name in ("psygnal", "pyee", "blinker", "Cython")
        if _importable(name)
    )
    return [
        f"ringbus {__version__} ({'compiled core' if compiled_core() else 'pure core only'}), "
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
        + (f"; {peers}" if peers else ""),
    ]


def format_table(
    table: dict[str, dict[str, float]], scenarios: Sequence[str], markdown: bool = False
) -> str:
    """Render medians (ns per published event) as a text or markdown table."""
    headers = ["implementation", *(f"{s} ns/event" for s in scenarios)]
    rows = [
        [name, *(f"{values[s]:,.0f}" if s in values else "-" for s in scenarios)]
        for name, values in table.items()
    ]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|---|" + "---:|" * len(scenarios))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
