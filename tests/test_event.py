"""WorldEvent (SPEC §2), on both cores."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from typing import Any

import pytest

from ringbus import FIELDS, kinds


def make(backend: Any, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "seq": 3,
        "tick": 10,
        "day": 1,
        "kind": kinds.DELIVERY_COMPLETED,
        "polity_id": "p1",
        "ward_id": "w2",
        "actor_id": None,
        "subject_id": "corridor-9",
        "payload": {"qty": 4, "route": ["a", "b"]},
        "tags": ("x",),
    }
    fields.update(overrides)
    return backend.WorldEvent(**fields)


def test_fields_in_order(backend: Any) -> None:
    assert backend.core.FIELDS == FIELDS
    assert FIELDS == (
        "seq", "tick", "day", "kind", "polity_id", "ward_id", "actor_id", "subject_id",
        "payload", "tags",
    )  # fmt: skip
    event = make(backend)
    assert backend.WorldEvent.__match_args__ == FIELDS
    assert [getattr(event, name) for name in FIELDS] == [
        3, 10, 1, "DELIVERY_COMPLETED", "p1", "w2", None, "corridor-9",
        (("qty", 4), ("route", ("a", "b"))), ("x",),
    ]  # fmt: skip


def test_immutable_and_slotted(backend: Any) -> None:
    event = make(backend)
    for name in (*FIELDS, "other"):
        with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
            setattr(event, name, 1)
        with pytest.raises(AttributeError):
            delattr(event, name)
    with pytest.raises(AttributeError, match="immutable"):
        event.__init__(1, 1, 1, "X")
    assert not hasattr(event, "__dict__")
    assert event.seq == 3


def test_equality_hash_pickle_copy(backend: Any) -> None:
    a, b = make(backend), make(backend)
    assert a == b and not (a != b)
    assert hash(a) == hash(b)
    assert a != make(backend, seq=4)
    assert a != make(backend, payload={"qty": 5, "route": ["a", "b"]})
    assert a != a.to_dict()
    assert len({a, b, make(backend, seq=4)}) == 2
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(a, protocol))
        assert clone == a and type(clone) is type(a)
    assert copy.copy(a) is a and copy.deepcopy(a) is a


def test_repr_is_readable(backend: Any) -> None:
    text = repr(make(backend))
    assert text.startswith("WorldEvent(seq=3, tick=10, day=1, kind='DELIVERY_COMPLETED'")
    assert "payload=(('qty', 4), ('route', ('a', 'b')))" in text


def test_to_dict_json_ready_and_round_trip(backend: Any) -> None:
    event = make(backend)
    data = event.to_dict()
    assert data == {
        "seq": 3,
        "tick": 10,
        "day": 1,
        "kind": "DELIVERY_COMPLETED",
        "polity_id": "p1",
        "ward_id": "w2",
        "actor_id": None,
        "subject_id": "corridor-9",
        "payload": {"qty": 4, "route": ["a", "b"]},
        "tags": ["x"],
    }
    assert json.loads(json.dumps(data)) == data
    assert backend.WorldEvent.from_dict(data) == event
    data["payload"]["qty"] = 99
    assert event.payload_dict()["qty"] == 4


def test_payload_dict_is_new(backend: Any) -> None:
    event = make(backend)
    mine = event.payload_dict()
    mine["qty"] = 0
    mine["new"] = True
    assert event.payload_dict() == {"qty": 4, "route": ("a", "b")}
    assert event.payload_dict() is not event.payload_dict()


def test_from_dict_errors(backend: Any) -> None:
    data = make(backend).to_dict()
    del data["tags"]
    with pytest.raises(ValueError, match="missing tags"):
        backend.WorldEvent.from_dict(data)
    with pytest.raises(ValueError, match="unknown fields zz"):
        backend.WorldEvent.from_dict({**make(backend).to_dict(), "zz": 1})
    with pytest.raises(TypeError, match="takes a dict"):
        backend.WorldEvent.from_dict([])


def test_constructor_validates(backend: Any) -> None:
    with pytest.raises(ValueError, match="seq must be >= 0"):
        make(backend, seq=-1)
    with pytest.raises(ValueError, match="seq must be < 2\\*\\*63"):
        make(backend, seq=2**63)
    with pytest.raises(TypeError, match="ward_id must be a str or None"):
        make(backend, ward_id=1)
    with pytest.raises(TypeError, match="payload key"):
        make(backend, payload={("t",): 1})


def test_events_from_the_bus_equal_constructed_ones(backend: Any) -> None:
    bus = backend.bus()
    bus.set_clock(10, 1)
    bus.publish("A")
    bus.publish("A")
    bus.publish(
        kinds.DELIVERY_COMPLETED,
        polity_id="p1",
        ward_id="w2",
        subject_id="corridor-9",
        payload={"qty": 4, "route": ["a", "b"]},
        tags=["x"],
    )
    (event,) = bus.get_since(2)
    assert event == make(backend)
    assert hash(event) == hash(make(backend))
    assert event.payload is event.payload


def test_kinds_constants() -> None:
    assert len(kinds.CORE_KINDS) == 13
    assert all(type(k) is str and getattr(kinds, k) == k for k in kinds.CORE_KINDS)
