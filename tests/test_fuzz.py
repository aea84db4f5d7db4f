"""Fuzzing event construction and payload normalisation with bad input, on both cores.

Whatever goes in, the outcome is either a correct event or a ``TypeError`` /
``ValueError`` with a message; never another exception, never a crash. Both
cores must give the same outcome, message for message, and the payload or the
error must be the one a small model of the normalisation rules (SPEC §2, §3)
predicts.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbus import TRUNCATED_KEY

MAX_ITEMS = 5
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


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


class Rejected(Exception):
    """The model's verdict on bad input: the error type and a fragment of its message."""


def model_value(value: Any, depth: int = 0) -> Any:
    """A payload value as it must be stored: scalars as their built-in type, sequences as
    tuples, mappings as tuples of (str, value) pairs."""
    if value is None or type(value) in (bool, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= int(value) <= 2**63 - 1:
            raise Rejected("ValueError", "is outside the signed 64-bit range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Rejected("ValueError", "must be a finite float")
        return float(value)
    if isinstance(value, (list, tuple)):
        if depth == 8:
            raise Rejected("ValueError", "is nested deeper than 8 levels")
        return tuple(model_value(item, depth + 1) for item in value)
    if isinstance(value, Mapping):  # a nested mapping: (str, value) pairs, in order
        if depth == 8:
            raise Rejected("ValueError", "is nested deeper than 8 levels")
        pairs: list[tuple[str, Any]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise Rejected("TypeError", f"is not a str (got {type(key).__name__})")
            if str(key) in dict(pairs):
                raise Rejected("ValueError", f"payload key {str(key)!r} appears more than once")
            pairs.append((str(key), model_value(item, depth + 1)))
        return tuple(pairs)
    if isinstance(value, int):  # IntEnum and friends: the plain int
        return int(value)
    if isinstance(value, str):  # StrEnum and friends: the plain str
        return str(value)
    raise Rejected("TypeError", f"has unsupported type {type(value).__name__}")


def model_payload(payload: Any, max_items: int | None) -> tuple[tuple[str, Any], ...]:
    """The stored pairs for ``payload``, or :class:`Rejected` for the first bad item."""
    if payload is None:
        return ()
    if isinstance(payload, Mapping):
        items, need_pairs = list(payload.items()), False
    elif isinstance(payload, (str, bytes, bytearray)) or not hasattr(payload, "__iter__"):
        raise Rejected("TypeError", "payload must be a dict, an iterable of (key, value) pairs")
    elif isinstance(payload, (set, frozenset)):
        raise Rejected("TypeError", "payload must be ordered")
    else:
        items, need_pairs = payload, True
    pairs: list[tuple[str, Any]] = []
    for item in items:
        if need_pairs and not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise Rejected("TypeError", "is not a (key, value) pair")
        key, value = item
        if not isinstance(key, str):
            raise Rejected("TypeError", f"is not a str (got {type(key).__name__})")
        if str(key) in dict(pairs):
            raise Rejected("ValueError", f"payload key {str(key)!r} appears more than once")
        pairs.append((str(key), model_value(value)))
    keys = [key for key, _value in pairs]
    marker = pairs and pairs[-1][0] == TRUNCATED_KEY and pairs[-1][1] is True
    if TRUNCATED_KEY in keys and (max_items is not None or not marker):
        raise Rejected("ValueError", f"payload key {TRUNCATED_KEY!r} is reserved")
    if max_items is not None and len(pairs) > max_items:
        pairs = [*pairs[: max_items - 1], (TRUNCATED_KEY, True)]
    return tuple(pairs)


def check_against_model(
    payload: Any, max_items: int | None, result: tuple[Any, ...], only_payload: bool = True
) -> None:
    """``result`` (from :func:`outcome`) must be what the model predicts for ``payload``.

    With ``only_payload=False`` other arguments may have caused an error, so
    only an accepted event is checked.
    """
    try:
        expected = model_payload(payload, max_items)
    except Rejected as rejected:
        if not only_payload:
            assert result[0] == "error", (payload, result, rejected.args)
            return
        error_type, fragment = rejected.args
        assert result[:2] == ("error", error_type), (payload, result, rejected.args)
        assert fragment in result[2], (payload, result, rejected.args)
        return
    except ValueError as error:  # the payload's own iterator failed: the bus passes that on
        assert result[0] == "error", (payload, result)
        assert not only_payload or result == ("error", "ValueError", str(error)), (payload, result)
        return
    if only_payload or result[0] == "ok":
        assert result[0] == "ok", (payload, result, expected)
        # repr tells 1, 1.0 and True apart, and tuples from lists
        assert repr(result[1]["pairs"]) == repr(expected), (payload, result)


def outcome(call: Any) -> tuple[Any, ...]:
    """Run ``call``; return ("ok", result) or ("error", type, message)."""
    try:
        return ("ok", call())
    except (TypeError, ValueError) as error:
        message = str(error)
        assert message, f"{type(error).__name__} without a message"
        return ("error", type(error).__name__, message)


def as_json_reads_it(value: Any) -> Any:
    """``value`` as JSON text gives it back: a str's surrogate pair (two code
    points, escaped as two ``\\u`` escapes) is read back as the one character
    it encodes; everything else is unchanged."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, dict):
        return {as_json_reads_it(key): as_json_reads_it(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json_reads_it(item) for item in value]
    return value


def check_event_dict(data: dict[str, Any]) -> None:
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == as_json_reads_it(data)
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
        # accepted input is None, a mapping or a sized list of pairs: truncated
        # exactly when it had more items than fit, and then to exactly MAX_ITEMS
        given = 0 if payload is None else len(payload)
        truncated = bool(event.payload) and event.payload[-1] == (TRUNCATED_KEY, True)
        assert truncated == (given > MAX_ITEMS), (given, event.payload)
        assert len(event.payload) == min(given, MAX_ITEMS)
        assert type(event).from_dict(data) == event
        assert bus.drain() == 1
        return {"event": data, "pairs": event.payload}

    result = outcome(call)
    if result[0] == "error":
        assert bus.latest_seq() == 0 and bus.pending_count() == 0  # nothing half-accepted
    return result


@SETTINGS
@given(payload=PAYLOADS)
def test_publish_payload_gives_an_event_or_a_clear_error(backend: Any, payload: Any) -> None:
    result = publish_outcome(backend, payload)
    check_against_model(payload, MAX_ITEMS, result)


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
    check_against_model(payload, MAX_ITEMS, results[0], only_payload=False)


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
            return {"event": data, "pairs": event.payload}

        return outcome(call)

    results = [build(backend) for backend in both_backends]
    assert all(result == results[0] for result in results), results
    check_against_model(payload, None, results[0], only_payload=False)


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
        ({"v": {1: "x"}}, "TypeError", "payload key 1 inside 'v' is not a str"),
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
