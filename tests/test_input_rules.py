"""Input that would corrupt state later is refused (or converted) up front, on both cores.

Each case gives both cores the same input and expects the same result or the
same error, with the same message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ringbus import kinds


def outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return ("ok", call())
    except Exception as error:
        return (type(error).__name__, str(error))


def on_both(both_backends: Any, case: Callable[[Any], object]) -> tuple[str, object]:
    results = [outcome(lambda b=backend: case(b)) for backend in both_backends]
    assert all(result == results[0] for result in results), results
    return results[0]


# -- convert first, then validate the converted value ------------------------------


class LyingStr(str):
    def __str__(self) -> str:
        return ""


class LyingInt(int):
    def __int__(self) -> int:
        return -5

    def __index__(self) -> int:
        return -5

    def __lt__(self, other: object) -> bool:
        return False


def test_a_str_subclass_is_stored_as_its_value(both_backends: Any) -> None:
    def case(backend: Any) -> object:
        bus = backend.bus()
        bus.publish(LyingStr("KIND"), polity_id=LyingStr("p"), tags=[LyingStr("t")])
        (event,) = bus.pending_events()
        assert all(type(v) is str for v in (event.kind, event.polity_id, *event.tags))
        return event.kind, event.polity_id, event.tags

    assert on_both(both_backends, case) == ("ok", ("KIND", "p", ("t",)))


def test_an_empty_str_subclass_kind_is_refused(both_backends: Any) -> None:
    result = on_both(both_backends, lambda backend: backend.bus().publish(LyingStr("")))
    assert result == ("ValueError", "kind must be a non-empty string")


def test_an_int_subclass_clock_is_stored_as_its_value(both_backends: Any) -> None:
    def case(backend: Any) -> object:
        bus = backend.bus()
        bus.set_clock(LyingInt(3), LyingInt(1))
        bus.publish("K", LyingInt(4), payload={"n": LyingInt(9)})
        (event,) = bus.pending_events()
        assert type(event.tick) is int and type(event.payload[0][1]) is int
        return bus.tick, bus.day, event.tick, event.day, event.payload

    assert on_both(both_backends, case) == ("ok", (4, 1, 4, 1, (("n", 9),)))


def test_a_negative_int_subclass_is_refused_by_its_value(both_backends: Any) -> None:
    result = on_both(both_backends, lambda backend: backend.bus().publish("K", LyingInt(-2)))
    assert result == ("ValueError", "tick must be >= 0, got -2")
    result = on_both(both_backends, lambda backend: backend.bus().set_clock(LyingInt(-7)))
    assert result == ("ValueError", "tick must be >= 0, got -7")


def test_a_huge_clock_value_gets_a_clear_error(both_backends: Any) -> None:
    result = on_both(both_backends, lambda backend: backend.bus().publish("K", 10**5000))
    assert result == ("ValueError", "tick must be < 2**63, got <int of 16610 bits>")


# -- the reserved key -------------------------------------------------------------

RESERVED = "payload key '__truncated__' is reserved"


@pytest.mark.parametrize(
    "payload",
    [
        {"__truncated__": True},
        {"a": 1, "__truncated__": True},
        [("__truncated__", True)],
        {f"k{i}": i for i in range(11)} | {"__truncated__": 1, "z": 2},
        {"__truncated__": "x" * 20},
    ],
    ids=["alone", "last", "pairs", "with-truncation", "not-scalar-fast-path"],
)
def test_the_truncation_key_is_refused_in_payloads(both_backends: Any, payload: object) -> None:
    def case(backend: Any) -> object:
        bus = backend.bus(max_payload_items=12)
        try:
            return bus.publish("K", payload=payload)
        finally:
            assert bus.latest_seq() == 0 and bus.pending_count() == 0

    kind, message = on_both(both_backends, case)
    assert kind == "ValueError" and RESERVED in str(message), message


def test_a_truncated_event_survives_snapshot_and_restore(backend: Any) -> None:
    bus = backend.bus(max_payload_items=12)
    bus.publish("K", payload={f"k{i}": i for i in range(20)})
    (event,) = bus.pending_events()
    assert len(event.payload) == 12 and event.payload[-1] == ("__truncated__", True)
    copy = backend.EventBus.from_snapshot(bus.snapshot())
    assert [e.to_dict() for e in copy.pending_events()] == [event.to_dict()]
    assert backend.WorldEvent.from_dict(event.to_dict()) == event


def test_a_rebuilt_event_takes_the_marker_only_as_its_last_pair(both_backends: Any) -> None:
    def rebuild(payload: object) -> Callable[[Any], object]:
        return lambda backend: backend.WorldEvent(1, 0, 0, "K", payload=payload).payload

    marker = ("__truncated__", True)
    assert on_both(both_backends, rebuild([("a", 1), marker])) == ("ok", (("a", 1), marker))
    for payload in ([marker, ("a", 1)], [("a", 1), ("__truncated__", False)]):
        kind, message = on_both(both_backends, rebuild(payload))
        assert kind == "ValueError" and RESERVED in str(message)


# -- values that are not deterministic or not JSON-ready ---------------------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("payload", {("a", 1), ("b", 2)}, "payload must be ordered, got set"),
        ("payload", frozenset({("a", 1)}), "payload must be ordered, got frozenset"),
        ("tags", {"x", "y"}, "tags must be ordered, got set"),
        ("tags", frozenset({"x"}), "tags must be ordered, got frozenset"),
        ("payload", {"v": {1, 2}}, "payload value for 'v' has unsupported type set"),
        ("payload", {"v": [frozenset()]}, "payload value for 'v' has unsupported type frozenset"),
    ],
)
def test_sets_are_refused(both_backends: Any, field: str, value: object, fragment: str) -> None:
    kind, message = on_both(
        both_backends, lambda backend: backend.bus().publish("K", **{field: value})
    )
    assert kind == "TypeError" and fragment in str(message), message
    assert "hash seed" in str(message)


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, 10**5000, -(10**5000), (1, 2**64), [[2**70]]],
    ids=["max+1", "min-1", "5001-digits", "negative-huge", "in-tuple", "nested"],
)
@pytest.mark.parametrize("shape", ["dict", "pairs"])
def test_payload_ints_are_signed_64_bit(both_backends: Any, value: object, shape: str) -> None:
    payload = {"big": value} if shape == "dict" else [("big", value)]
    kind, message = on_both(
        both_backends, lambda backend: backend.bus().publish("K", payload=payload)
    )
    assert kind == "ValueError", message
    assert str(message).startswith(
        "payload value for 'big' is outside the signed 64-bit range (-2**63 .. 2**63-1)"
    )
    assert len(str(message)) < 200


def test_the_64_bit_bounds_themselves_are_accepted(both_backends: Any) -> None:
    def case(backend: Any) -> object:
        bus = backend.bus()
        bus.publish(kinds.TICK, payload={"lo": -(2**63), "hi": 2**63 - 1, "t": (2**63 - 1,)})
        return bus.pending_events()[0].to_dict()["payload"]

    result = on_both(both_backends, case)
    assert result == ("ok", {"lo": -(2**63), "hi": 2**63 - 1, "t": [2**63 - 1]})


def test_restore_refuses_pending_events_that_go_back_in_time(both_backends: Any) -> None:
    def case(backend: Any) -> object:
        bus = backend.bus()
        bus.publish("A", 5)
        bus.publish("B", 6)
        state = bus.snapshot()
        state["pending"][1]["tick"] = 4
        fresh = backend.bus()
        try:
            return fresh.restore(state)
        finally:
            assert fresh.latest_seq() == 0 and (fresh.tick, fresh.day) == (0, 0)

    result = on_both(both_backends, case)
    assert result[0] == "ValueError" and "time never goes backwards" in str(result[1])


# -- one schema: what the cores accept is what the event-dict check accepts ---------

NESTED_8: object = 1
for _ in range(8):
    NESTED_8 = [NESTED_8]


@pytest.mark.parametrize(
    "payload",
    [
        {"ok": 1, "f": 1.5, "s": "x", "n": None, "b": True, "l": [1, [2, ["3"]]]},
        {"deep": NESTED_8},
        {"deeper": [NESTED_8]},
        {"big": 2**63},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"map": {"a": 1}},
        {"a": 1, "__truncated__": True},
        {"__truncated__": True, "a": 1},
        {"a": 1, "__truncated__": 1},
    ],
)
def test_the_event_dict_check_agrees_with_the_cores(backend: Any, payload: dict[str, Any]) -> None:
    from ringbus._normalise import event_dict_problems

    data = {
        "seq": 1,
        "tick": 0,
        "day": 0,
        "kind": "K",
        "polity_id": None,
        "ward_id": None,
        "actor_id": None,
        "subject_id": None,
        "payload": payload,
        "tags": [],
    }
    built = outcome(lambda: backend.WorldEvent.from_dict(data))
    problems = event_dict_problems(data)
    assert (built[0] == "ok") == (problems == []), (built, problems)
    if built[0] == "ok":
        assert event_dict_problems(built[1].to_dict()) == []  # type: ignore[attr-defined]
