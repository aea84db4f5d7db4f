"""Re-entrancy torture: Python code that runs in the middle of a bus call.

Code can run inside any bus call: the caller's iterables and hooks
(``__iter__``, ``__bool__``, ``__contains__``), and finalizers, which the
cyclic GC runs on any allocation. A finalizer may publish, drain, subscribe
or unsubscribe while the core is half way through publish, drain, a view's
first payload read, ``get_since``, ``pending_events``, snapshot or restore.

Whatever runs, the bus must not crash and must never hand out wrong data:
every event observed anywhere (at delivery, kept and read later, from
``get_since``/``pending_events``) is the event that was published with its
seq. That is checked against a ledger of what each publish call carried.
Where the code that runs is the caller's own (iterables, hooks), both cores
must give identical results; a finalizer runs at the first collection inside
the call, whose place depends on what each core allocates, so for those the
two cores are held to the ledger and to the same final stream content.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ringbus
from ringbus._normalise import normalise_payload


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.collect()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()


def outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return ("ok", call())
    except Exception as error:  # recorded and compared, never hidden
        return ("error", f"{type(error).__name__}: {error}")


class Ledger:
    """What each publish call carried, by seq: the oracle for every event seen."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.expected: dict[int, tuple[str, str, tuple[str, ...]]] = {}
        self.seen: list[int] = []

    def publish(
        self, kind: str, payload: dict[str, object] | None = None, tags: tuple[str, ...] = ()
    ) -> int:
        seq = int(self.bus.publish(kind, payload=payload, tags=tags))
        if seq:
            self.expect(seq, kind, payload, tags)
        return seq

    def expect(self, seq: int, kind: str, payload: object, tags: tuple[str, ...]) -> None:
        # Kept as JSON text, not as the objects: a reference held here would
        # keep freed payload values alive and hide a stale pointer.
        pairs = normalise_payload(payload, self.bus.max_payload_items)
        self.expected[seq] = (kind, json.dumps(pairs), tags)

    def check(self, event: Any) -> dict[str, Any]:
        """The event's ``to_dict()``, after checking it against the ledger."""
        data = event.to_dict()
        kind, pairs, tags = self.expected[data["seq"]]
        assert data["kind"] == kind, data
        assert json.dumps(tuple(data["payload"].items())) == pairs, data
        assert tuple(data["tags"]) == tags, data
        assert json.dumps(event.payload) == pairs and event.tags == tags, data
        return data


def fresh(tag: str, items: int = 12) -> dict[str, object]:
    """A payload of new objects (so freeing them is what a stale pointer would see)."""
    return {f"k{i}{tag}": "".join([f"v{i}{tag}", "-" * 30]) for i in range(items)}


class Bomb:
    """Runs ``action`` from its finalizer when the cyclic GC frees it."""

    def __init__(self, action: Callable[[], object], log: list[object]) -> None:
        self.action = action
        self.log = log
        self.me = self  # a cycle: only the cyclic GC frees it

    def __del__(self) -> None:
        self.log.append(outcome(self.action))


def arm(action: Callable[[], object], log: list[object]) -> None:
    """Leave a bomb for the next collection, and make every allocation collect."""
    Bomb(action, log)
    gc.set_threshold(1)


# -- the two reproducers --------------------------------------------------------


def test_tags_iterable_that_empties_the_payload(backend: Any) -> None:
    bus = backend.bus()
    payload = {"a": "".join(["value-", "a" * 40])}
    junk: list[str] = []

    def tags() -> Iterator[str]:
        payload.clear()
        junk.extend("".join(["JUNK-", str(i), "#" * 40]) for i in range(2000))
        yield "t"

    assert bus.publish("K", payload=payload, tags=tags()) == 1
    (event,) = bus.pending_events()
    # The payload is read before the tags, on both cores.
    assert event.payload == (("a", "value-" + "a" * 40),)
    assert event.tags == ("t",)


def test_finalizer_publishing_over_a_kept_view_while_it_is_copied(backend: Any) -> None:
    bus = backend.bus(max_events=1)
    ledger = Ledger(bus)
    kept: list[Any] = []
    bus.subscribe(kept.append, kinds=["A"])
    ledger.publish("A", payload=fresh("A"))
    bus.drain()
    log: list[object] = []
    junk: list[str] = []

    def action() -> None:
        ledger.publish("B", payload=fresh("B"))
        bus.drain()
        ledger.publish("C")
        junk.extend(f"J{i}" + "#" * 40 for i in range(3000))

    arm(action, log)
    payload = kept[0].payload  # the first read copies the payload out of the slot
    gc.set_threshold(700)
    gc.collect()
    assert payload == tuple(fresh("A").items())
    ledger.check(kept[0])
    assert log == [("ok", None)]
    assert [e.kind for e in bus.get_since(0)] == ["C"]


# -- finalizers at every entry point ----------------------------------------------

ACTIONS = ["publish", "publish_wrap", "drain", "subscribe", "unsubscribe", "read"]
TRIGGERS = [
    "publish_dict",
    "publish_pairs",
    "publish_urgent",
    "drain",
    "materialise",
    "get_since",
    "pending_events",
    "snapshot",
    "restore",
]


def run_trigger(backend: Any, trigger: str, action: str) -> dict[str, Any]:
    """One finalizer, doing ``action``, goes off inside ``trigger``; return what was seen."""
    bus = backend.bus(max_events=3, max_payload_items=12)
    ledger = Ledger(bus)
    delivered: list[dict[str, Any]] = []
    also: list[dict[str, Any]] = []  # what a subscriber added by the finalizer receives
    kept: list[Any] = []
    late = bus.subscribe(lambda event: delivered.append(ledger.check(event)))
    bus.subscribe(kept.append)
    for index in range(2):
        ledger.publish("SEED", payload=fresh(f"s{index}"), tags=(f"s{index}",))
    bus.drain()
    ledger.publish("PENDING", payload=fresh("p"), tags=("p",))
    log: list[object] = []

    def act() -> object:
        if action == "publish":
            return ledger.publish("BOMB", payload=fresh("b"), tags=("b",))
        if action == "publish_wrap":  # wraps the ring: overwrites views and pending events
            return [
                ledger.publish("WRAP", payload=fresh(f"w{i}"), tags=(f"w{i}",)) for i in range(5)
            ]
        if action == "drain":
            return bus.drain()
        if action == "subscribe":
            return bus.subscribe(lambda event: also.append(ledger.check(event)))
        if action == "unsubscribe":
            bus.unsubscribe(late)
            return None
        return [ledger.check(event) for event in bus.get_since(0) + bus.pending_events()]

    # Arguments are built before arming: the bomb goes off inside the call.
    dict_payload = fresh("t")
    pair_payload = list(fresh("u").items())
    result: tuple[str, object]
    if trigger == "publish_dict":
        arm(act, log)
        result = outcome(lambda: ledger.publish("T", payload=dict_payload, tags=("t",)))
    elif trigger == "publish_pairs":
        arm(act, log)
        result = outcome(lambda: bus.publish("T", payload=pair_payload))
        if result[0] == "ok":
            ledger.expect(int(result[1]), "T", pair_payload, ())  # type: ignore[call-overload]
    elif trigger == "publish_urgent":
        arm(act, log)
        result = outcome(lambda: bus.publish_urgent("T", payload=dict_payload))
        if result[0] == "ok":
            ledger.expect(int(result[1]), "T", dict_payload, ())  # type: ignore[call-overload]
    elif trigger == "drain":
        arm(act, log)
        result = outcome(bus.drain)
    elif trigger == "materialise":
        first = kept[0]
        arm(act, log)
        result = outcome(lambda: first.payload)
        assert result == ("ok", tuple(fresh("s0").items()))
    elif trigger == "get_since":
        arm(act, log)
        result = outcome(lambda: [ledger.check(e) for e in bus.get_since(0)])
    elif trigger == "pending_events":
        arm(act, log)
        result = outcome(lambda: [ledger.check(e) for e in bus.pending_events()])
    elif trigger == "snapshot":
        arm(act, log)
        result = outcome(bus.snapshot)
    else:
        state = bus.snapshot()
        other = backend.bus(max_events=3, max_payload_items=12)
        arm(act, log)  # the finalizer acts on the source bus while the copy restores
        result = outcome(lambda: other.restore(state))
        assert result[0] == "ok", result
        assert [event.to_dict() for event in other.pending_events()] == state["pending"]
    gc.set_threshold(700)
    gc.collect()
    assert len(log) == 1, log  # the finalizer ran exactly once
    for event in kept:
        ledger.check(event)  # every kept event, read after the ring moved on
    drained = outcome(bus.drain)
    retained = [ledger.check(event) for event in bus.get_since(0)]
    seqs = [data["seq"] for data in delivered]
    assert len(seqs) == len(set(seqs)), seqs  # each event delivered at most once
    stats = bus.stats()
    assert stats["pending"] == 0 or drained[0] == "error"
    undelivered = set(ledger.expected) - set(seqs)
    if action != "unsubscribe" and drained[0] == "ok":
        assert not undelivered, undelivered  # ... and nothing accepted is lost
    return {
        "result": result[0],
        "log": [entry[0] for entry in log],  # type: ignore[index]
        "kinds": sorted(kind for kind, _pairs, _tags in ledger.expected.values()),
        "retained": len(retained),
    }


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_finalizer_inside_every_entry_point(both_backends: Any, trigger: str, action: str) -> None:
    results = [run_trigger(backend, trigger, action) for backend in both_backends]
    # Where the collection falls inside a call depends on each core's
    # allocations; what was published, and that every call ended cleanly, must not.
    assert all(r == results[0] for r in results), results


# -- the caller's own code, run mid-call: identical on both cores -------------------


class Hook:
    """An object whose hooks publish on the bus and mutate the payload."""

    def __init__(self, bus: Any, payload: dict[str, object]) -> None:
        self.bus = bus
        self.payload = payload
        self.calls = 0

    def poke(self) -> None:
        self.calls += 1
        self.payload.clear()
        self.payload["intruder"] = "x" * 50
        self.bus.publish("HOOK", payload={"n": self.calls})


def transcript(bus: Any) -> list[dict[str, Any]]:
    bus.drain()
    return [event.to_dict() for event in bus.get_since(0)]


def scenario_payload_iterator(backend: Any) -> object:
    bus = backend.bus(max_events=4)
    payload: dict[str, object] = {"a": 1, "b": "two"}
    hook = Hook(bus, payload)

    def pairs() -> Iterator[tuple[str, object]]:
        for key, value in list(payload.items()):
            hook.poke()
            yield key, value

    seq = bus.publish("K", payload=pairs(), tags=("t",))
    return seq, transcript(bus)


def scenario_tags_iterator_publishes(backend: Any) -> object:
    bus = backend.bus(max_events=2)
    payload: dict[str, object] = {"a": "x" * 40, "b": 2}
    hook = Hook(bus, payload)

    def tags() -> Iterator[str]:
        for _ in range(3):  # wraps the ring while the outer event is half built
            hook.poke()
        yield "late"

    seq = bus.publish("K", payload=payload, tags=tags())
    return seq, transcript(bus)


def scenario_subclass_hooks_never_run(backend: Any) -> object:
    bus = backend.bus()
    payload: dict[str, object] = {}
    hook = Hook(bus, payload)

    class Kind(str):
        def __str__(self) -> str:
            hook.poke()
            return ""

        def __hash__(self) -> int:
            hook.poke()
            return 0

        def __eq__(self, other: object) -> bool:
            hook.poke()
            return False

    class Tick(int):
        def __int__(self) -> int:
            hook.poke()
            return -5

        def __index__(self) -> int:
            hook.poke()
            return -5

        def __lt__(self, other: object) -> bool:
            hook.poke()
            return False

    pairs = [(Kind("key"), Tick(3))]  # a dict would hash the key here, in the test
    seq = bus.publish(Kind("KIND"), Tick(7), Tick(1), tags=[Kind("tag")], payload=pairs)
    bus.set_clock(Tick(9), Tick(2))
    # The base type's value is what is checked and stored; no hook ran.
    return seq, hook.calls, bus.tick, bus.day, transcript(bus)


def scenario_mapping_items_publish(backend: Any) -> object:
    bus = backend.bus(max_events=2)

    class Items(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            for i in range(3):
                bus.publish("FROM_ITEMS", payload={"i": i})
            return super().items()

    seq = bus.publish("K", payload=Items(a=1))
    return seq, transcript(bus)


def scenario_urgent_flag_publishes(backend: Any) -> object:
    bus = backend.bus()
    order: list[int] = []
    bus.subscribe(lambda event: order.append(event.seq), name="dest")

    class Flag:
        def __bool__(self) -> bool:
            bus.publish_urgent("FROM_BOOL")
            return True

    bus.publish("FIRST")
    seq = bus.send("dest", "K", urgent=Flag())
    routing = bus.pending_routing()
    bus.drain()
    return seq, routing, order


def scenario_kinds_iterable_publishes(backend: Any) -> object:
    bus = backend.bus(max_events=3)
    for i in range(3):
        bus.publish("A", payload={"i": i})

    def selectors() -> Iterator[str]:
        for i in range(2):
            bus.publish("A", payload={"late": i})
        yield "A"

    found = [event.to_dict() for event in bus.get_since(1, kinds=selectors())]
    return found, transcript(bus)


def scenario_handlers_reenter(backend: Any) -> object:
    bus = backend.bus(max_events=2, cascade_rounds=3)
    seen: list[object] = []
    ids: list[int] = []

    def handler(event: Any) -> None:
        seen.append((event.seq, event.payload_dict()))
        if event.kind == "K":
            bus.publish("CASCADE", payload={"from": event.seq}, tags=("c",))
            ids.append(bus.subscribe(lambda e: seen.append(("new", e.seq))))
            seen.append(outcome(bus.drain))
        elif ids:
            bus.unsubscribe(ids.pop())

    bus.subscribe(handler)
    for i in range(3):
        bus.publish("K", payload={"i": i, "s": "x" * 30})
    return outcome(bus.drain), seen, transcript(bus)


SCENARIOS = [
    scenario_payload_iterator,
    scenario_tags_iterator_publishes,
    scenario_subclass_hooks_never_run,
    scenario_mapping_items_publish,
    scenario_urgent_flag_publishes,
    scenario_kinds_iterable_publishes,
    scenario_handlers_reenter,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__[9:])
def test_callers_code_mid_call_is_identical_on_both_cores(
    both_backends: Any, scenario: Callable[[Any], object]
) -> None:
    results = [outcome(lambda b=backend: scenario(b)) for backend in both_backends]
    assert results[0][0] == "ok", results[0]
    assert all(r == results[0] for r in results), results


def test_subclass_hooks_store_the_base_value(backend: Any) -> None:
    seq, calls, tick, day, stream = scenario_subclass_hooks_never_run(backend)  # type: ignore[misc]
    assert calls == 0
    assert (seq, tick, day) == (1, 9, 2)
    assert stream[0]["kind"] == "KIND" and stream[0]["tick"] == 7
    assert stream[0]["payload"] == {"key": 3} and stream[0]["tags"] == ["tag"]
    assert all(type(value) is int for value in stream[0]["payload"].values())


# -- many finalizers at once, at random, with small rings ---------------------------


@pytest.mark.parametrize("seed", range(6))
def test_random_finalizers_never_corrupt(backend: Any, seed: int) -> None:
    import random

    rng = random.Random(seed)
    bus = backend.bus(max_events=rng.choice([1, 2, 3, 5]), max_payload_items=6)
    ledger = Ledger(bus)
    kept: list[Any] = []
    delivered: list[int] = []
    bus.subscribe(kept.append)
    bus.subscribe(lambda event: delivered.append(ledger.check(event)["seq"]), kinds=["*"])
    log: list[object] = []

    def random_action(rng: random.Random = rng) -> object:
        choice = rng.randrange(5)
        if choice == 0:
            return ledger.publish("BOMB", payload=fresh(str(rng.random()), 6))
        if choice == 1:
            return bus.drain()
        if choice == 2:
            return [ledger.check(e) for e in bus.get_since(rng.randrange(10))]
        if choice == 3:
            return [ledger.check(e) for e in bus.pending_events()]
        return kept[rng.randrange(len(kept))].payload if kept else None

    for step in range(120):
        for _ in range(rng.randrange(3)):
            arm(random_action, log)
        op = rng.randrange(5)
        payload = fresh(f"{seed}.{step}", rng.randrange(8))
        if op <= 1:
            outcome(lambda p=payload: ledger.publish("STEP", payload=p, tags=(str(step),)))
        elif op == 2:
            outcome(bus.drain)
        elif op == 3:
            outcome(lambda: [ledger.check(e) for e in bus.get_since(0)])
        elif kept:
            outcome(lambda: kept[-1].payload)
        gc.set_threshold(700)
    gc.collect()
    outcome(bus.drain)
    for event in kept:
        ledger.check(event)
    assert len(delivered) == len(set(delivered))
    assert all(isinstance(entry, tuple) for entry in log)
    assert ringbus.BACKEND in ("cython", "python")
