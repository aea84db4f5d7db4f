"""Fuzzing event construction and payload normalisation with bad input, on both cores.

Whatever goes in, the outcome is either a correct event or a ``TypeError`` /
``ValueError`` with a message; never another exception, never a crash. Both
cores must give the same outcome, message for message.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbus import TRUNCATED_KEY

MAX_ITEMS = 5
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Level(enum.IntEnum):
    LOW = 1


class Colour(enum.StrEnum):
    RED = "red"


class Weird:
    """An object with a fixed repr, so messages do not carry addresses."""

    def __repr__(self) -> str:
        return "Weird()"


class Pairs:
    """An iterable that yields pairs, then fails."""

    def __iter__(self) -> Any:
        yield ("a", 1)
        raise ValueError("broken iterable")


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
    st.binary(max_size=5),
    st.just(Level.LOW),
    st.just(Colour.RED),
    st.just(Weird()),
    st.just(1 + 2j),
    st.sampled_from([frozenset({1}), {1, 2}, bytearray(b"x")]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


KEYS = st.one_of(
    st.text(max_size=6),
    st.integers(),
    st.none(),
    st.binary(max_size=3),
    st.tuples(st.integers()),
    st.just(Colour.RED),
    st.just(Weird()),
)
#: Keys for lists of pairs may be unhashable too.
PAIR_KEYS = KEYS | st.lists(st.integers(), max_size=2) | st.just({"a": 1})
PAYLOADS = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=6), VALUES, max_size=8),
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.lists(st.tuples(PAIR_KEYS, VALUES), max_size=8),
    st.lists(st.tuples(st.text(max_size=2), VALUES), max_size=8),
    st.lists(st.one_of(st.tuples(KEYS), st.tuples(KEYS, VALUES, VALUES), VALUES), max_size=3),
    st.integers(0, 12).map(lambda depth: {"deep": nested(depth)}),
    st.integers(0, 2000).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.integers(0, 200_000).map(lambda n: {"blob": "x" * n}),
    st.sampled_from(["text", b"bytes", 42, 1.5, Weird(), Pairs(), [["a", 1], ["a", 2]]]),
)
IDS = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.binary(max_size=2))
TAGS = st.one_of(
    st.lists(st.text(max_size=4), max_size=3),
    st.lists(st.one_of(st.text(max_size=2), st.integers(), st.none()), max_size=3),
    st.sampled_from(["tag", None, 3, (Colour.RED,)]),
)
CLOCKS = st.one_of(
    st.integers(-3, 10),
    st.integers(2**63 - 2, 2**64),
    st.booleans(),
    st.floats(0, 3),
    st.none(),
    st.text(max_size=2),
)
KINDS = st.one_of(st.text(max_size=6), st.none(), st.integers(), st.just(Colour.RED))


def outcome(call: Any) -> tuple[Any, ...]:
    """Run ``call``; return ("ok", result) or ("error", type, message)."""
    try:
        return ("ok", call())
    except (TypeError, ValueError) as error:
        message = str(error)
        assert message, f"{type(error).__name__} without a message"
        return ("error", type(error).__name__, message)


def check_event_dict(data: dict[str, Any]) -> None:
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    for key, value in data["payload"].items():
        assert type(key) is str
        assert not isinstance(value, float) or math.isfinite(value)


def publish_outcome(backend: Any, payload: Any, **fields: Any) -> tuple[Any, ...]:
    bus = backend.bus(max_payload_items=MAX_ITEMS)

    def call() -> dict[str, Any]:
        seq = bus.publish("FUZZ", payload=payload, **fields)
        event = bus.pending_events()[-1]
        assert seq == event.seq == 1
        data: dict[str, Any] = event.to_dict()
        check_event_dict(data)
        assert len(event.payload) <= MAX_ITEMS
        if len(event.payload) == MAX_ITEMS and event.payload[-1] == (TRUNCATED_KEY, True):
            pass
        assert type(event).from_dict(data) == event
        assert bus.drain() == 1
        return data

    result = outcome(call)
    if result[0] == "error":
        assert bus.latest_seq() == 0 and bus.pending_count() == 0  # nothing half-accepted
    return result


@SETTINGS
@given(payload=PAYLOADS)
def test_publish_payload_gives_an_event_or_a_clear_error(backend: Any, payload: Any) -> None:
    publish_outcome(backend, payload)


@SETTINGS
@given(payload=PAYLOADS, ward=IDS, tags=TAGS, tick=CLOCKS)
def test_both_cores_agree_on_publish(
    both_backends: tuple[Any, ...], payload: Any, ward: Any, tags: Any, tick: Any
) -> None:
    results = [
        publish_outcome(backend, payload, ward_id=ward, tags=tags, tick=tick)
        for backend in both_backends
    ]
    assert all(result == results[0] for result in results), results


@SETTINGS
@given(
    seq=CLOCKS,
    tick=CLOCKS,
    day=CLOCKS,
    kind=KINDS,
    polity=IDS,
    payload=PAYLOADS,
    tags=TAGS,
)
def test_both_cores_agree_on_world_event(
    both_backends: tuple[Any, ...],
    seq: Any,
    tick: Any,
    day: Any,
    kind: Any,
    polity: Any,
    payload: Any,
    tags: Any,
) -> None:
    def build(backend: Any) -> tuple[Any, ...]:
        def call() -> dict[str, Any]:
            event = backend.WorldEvent(
                seq, tick, day, kind, polity, None, None, None, payload, tags
            )
            data: dict[str, Any] = event.to_dict()
            check_event_dict(data)
            assert backend.WorldEvent.from_dict(data) == event
            assert hash(event) == hash(backend.WorldEvent.from_dict(data))
            return data

        return outcome(call)

    results = [build(backend) for backend in both_backends]
    assert all(result == results[0] for result in results), results


@SETTINGS
@given(data=st.dictionaries(st.text(max_size=8), VALUES | st.integers(), max_size=12))
def test_both_cores_agree_on_from_dict_of_garbage(
    both_backends: tuple[Any, ...], data: dict[str, Any]
) -> None:
    results = [
        outcome(lambda b=backend: b.WorldEvent.from_dict(data).to_dict())
        for backend in both_backends
    ]
    assert all(result == results[0] for result in results), results


def test_the_edges_give_the_documented_errors(backend: Any) -> None:
    bus = backend.bus(max_payload_items=MAX_ITEMS)
    cases: list[tuple[Any, str, str]] = [
        ({1: "x"}, "TypeError", "payload key 1 is not a str"),
        ({"deep": nested(9)}, "ValueError", "nested deeper than 8 levels"),
        ({"v": {"a": 1}}, "TypeError", "unsupported type dict"),
        ({"v": {1, 2}}, "TypeError", "unsupported type set"),
        ({"v": math.nan}, "ValueError", "finite float"),
        ({"v": b"x"}, "TypeError", "unsupported type bytes"),
        ("text", "TypeError", "payload must be a dict"),
        ([("a", 1), ("a", 2)], "ValueError", "appears more than once"),
        ([("a", 1, 2)], "TypeError", "is not a (key, value) pair"),
    ]
    for payload, error_type, fragment in cases:
        result = outcome(lambda p=payload: bus.publish("K", payload=p))
        assert result[0] == "error" and result[1] == error_type, (payload, result)
        assert fragment in result[2], (payload, result)
    assert bus.latest_seq() == 0
    big = {f"k{i}": i for i in range(100_000)}
    bus.publish("K", payload=big)
    event = bus.pending_events()[-1]
    assert len(event.payload) == MAX_ITEMS and event.payload[-1] == (TRUNCATED_KEY, True)
    bus.publish("K", payload={"deep": nested(8), "enum": Level.LOW, "s": Colour.RED})
    event = bus.pending_events()[-1]
    assert type(event.payload_dict()["enum"]) is int and type(event.payload_dict()["s"]) is str
