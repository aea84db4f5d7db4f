"""Nested mappings as payload values: frozen, bounded, carried everywhere (both cores)."""

from __future__ import annotations

import io
import json
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from _redis_server import redis_server, redis_url  # noqa: F401  (fixtures)
from ringbus._normalise import MAX_NESTING, MAX_PAYLOAD_TREE_ITEMS

CARGO = {
    "cargo": {"kind": "grain", "tons": 3, "legs": [{"from": "a", "to": "b"}, {"from": "b"}]},
    "route": {"stops": ["a", "b"], "meta": {"hazard": None, "score": 0.5}},
    "n": 1,
}


def published(backend: Any, payload: Any = CARGO, **config: Any) -> Any:
    bus = backend.bus(**config)
    bus.publish("DELIVERY_COMPLETED", polity_id="north", payload=payload)
    bus.drain()
    return bus.get_since(0)[0]


def test_nested_mappings_are_frozen_and_read_back(backend: Any) -> None:
    event = published(backend)
    assert event.payload[0] == (
        "cargo",
        (
            ("kind", "grain"),
            ("tons", 3),
            ("legs", ((("from", "a"), ("to", "b")), (("from", "b"),))),
        ),
    )
    thawed = event.payload_dict()
    assert thawed["cargo"] == {
        "kind": "grain",
        "tons": 3,
        "legs": ({"from": "a", "to": "b"}, {"from": "b"}),
    }
    assert thawed["route"] == {"stops": ("a", "b"), "meta": {"hazard": None, "score": 0.5}}
    hash(event)  # frozen all the way down
    rebuilt = type(event).from_dict(json.loads(json.dumps(event.to_dict())))
    assert rebuilt == event and rebuilt.payload_dict() == thawed


@pytest.mark.c_extension
def test_both_cores_freeze_alike(both_backends: Any) -> None:
    events = [published(backend) for backend in both_backends]
    assert events[0].to_dict() == events[1].to_dict()
    assert events[0].payload_dict() == events[1].payload_dict()


def test_nested_mappings_count_toward_the_depth_bound(backend: Any) -> None:
    deep: Any = 1
    for _ in range(MAX_NESTING):
        deep = {"x": deep}
    assert published(backend, {"deep": deep}).payload_dict()["deep"]["x"]["x"]
    with pytest.raises(ValueError, match="nested deeper than 8 levels"):
        published(backend, {"deep": {"x": deep}})
    with pytest.raises(ValueError, match="nested deeper than 8 levels"):
        published(backend, {"deep": [deep]})


def test_the_whole_tree_has_an_item_budget(backend: Any) -> None:
    # Each row is two nested values: the mapping and its one value.
    fits = {"rows": [{"v": i} for i in range(MAX_PAYLOAD_TREE_ITEMS // 2)]}
    assert len(published(backend, fits).payload_dict()["rows"]) == MAX_PAYLOAD_TREE_ITEMS // 2
    too_big = {"a": [0] * 2048, "b": [{"v": i} for i in range(1025)]}
    bus = backend.bus()
    with pytest.raises(ValueError, match="more than 4096 values nested in its values"):
        bus.publish("A", payload=too_big)
    assert bus.latest_seq() == 0  # refused: no seq taken


def test_bad_nested_keys_are_named(backend: Any) -> None:
    bus = backend.bus()
    with pytest.raises(TypeError, match=r"payload key 3 inside 'cargo' is not a str"):
        bus.publish("A", payload={"cargo": {3: "x"}})
    with pytest.raises(TypeError, match="set's order changes"):
        bus.publish("A", payload={"cargo": {"tags": {"a", "b"}}})
    with pytest.raises(ValueError, match=r"'cargo.score' must be a finite float"):
        bus.publish("A", payload={"cargo": {"score": float("nan")}})
    assert bus.latest_seq() == 0


def test_mapping_order_is_kept_and_subclass_hooks_do_not_run(backend: Any) -> None:
    class Sneaky(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def]
            raise AssertionError("the bus reads a dict through dict itself")

    event = published(backend, {"m": Sneaky(b=1, a=2), "o": OrderedDict(z=1, y=2)})
    assert event.payload == (("m", (("b", 1), ("a", 2))), ("o", (("z", 1), ("y", 2))))


def test_the_journal_carries_them(backend: Any, tmp_path: Path) -> None:
    from ringbus.journal import Journal, replay_journal, verify_journal

    path = tmp_path / "run.jsonl"
    bus = backend.bus()
    with Journal(path) as journal:
        journal.attach(bus)
        bus.publish("DELIVERY_COMPLETED", polity_id="north", payload=CARGO)
        bus.drain()
    assert verify_journal(path).ok
    fresh = backend.bus()
    replay_journal(path, fresh)
    assert fresh.get_since(0)[0].payload_dict() == published(backend).payload_dict()


def test_transports_carry_them(backend: Any) -> None:
    from ringbus.transports import StdoutTransport

    out = io.StringIO()
    bus = backend.bus()
    StdoutTransport(stream=out).attach(bus)
    bus.publish("DELIVERY_COMPLETED", polity_id="north", payload=CARGO)
    bus.drain()
    line = json.loads(out.getvalue().splitlines()[0])
    record = line.get("event", line)
    assert (
        type(published(backend)).from_dict(record).payload_dict()
        == published(backend).payload_dict()
    )


def test_the_viewer_carries_them(backend: Any) -> None:
    from ringbus.viewer import serve

    bus = backend.bus()
    bus.publish("DELIVERY_COMPLETED", polity_id="north", payload=CARGO)
    bus.drain()
    with serve(bus, port=0) as viewer:
        with urllib.request.urlopen(viewer.url + "api/events") as response:
            body = json.loads(response.read())
    events = body["events"] if isinstance(body, dict) else body
    event = events[-1]
    assert json.dumps(event["payload"]["cargo"]) == json.dumps(
        published(backend).to_dict()["payload"]["cargo"]
    )


def test_the_redis_bridge_carries_them(backend: Any, redis_url: str) -> None:  # noqa: F811
    from ringbus.transports.redis_streams import RedisStreamSink, RedisStreamSource

    producer = backend.bus(name="worker-1")
    sink = RedisStreamSink(url=redis_url, stream="nested").attach(producer)
    producer.publish("DELIVERY_COMPLETED", polity_id="north", payload=CARGO)
    producer.drain()
    assert sink.close(timeout=10)  # the sender thread has sent everything
    consumer = backend.bus(name="aggregator", clock_policy="free")
    got: list[Any] = []
    consumer.subscribe(got.append)
    source = RedisStreamSource(consumer, url=redis_url, stream="nested", group="g", consumer="c1")
    while source.poll():
        consumer.drain()
    assert [event.payload_dict() for event in got] == [published(backend).payload_dict()]
