"""Thread-safe producers and the owner thread, on both cores."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from ringbus import PendingOverflowError, ProducerClosedError, WrongThreadError


def in_thread(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a new thread; return its result or raise its error here."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as error:  # handed to the caller
            out["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("result")


def received(bus: Any) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    bus.subscribe(lambda e: seen.append((e.seq, e.kind, e.subject_id, e.payload, e.tick)))
    return seen


# -- the owner thread ----------------------------------------------------------


def test_owner_thread_is_the_creating_thread(backend: Any) -> None:
    bus = backend.bus()
    assert bus.owner_thread == threading.get_ident()
    assert in_thread(lambda: backend.bus().owner_thread) != threading.get_ident()


@pytest.mark.parametrize(
    ("what", "call"),
    [
        ("publish", lambda bus: bus.publish("K")),
        ("publish", lambda bus: bus.publish_urgent("K")),
        ("publish", lambda bus: bus.send("someone", "K")),
        ("drain", lambda bus: bus.drain()),
        ("set_clock", lambda bus: bus.set_clock(5)),
        ("subscribe", lambda bus: bus.subscribe(print)),
        ("unsubscribe", lambda bus: bus.unsubscribe(1)),
        ("restore", lambda bus: bus.restore({})),
        ("producer", lambda bus: bus.producer("p")),
        ("close_producers", lambda bus: bus.close_producers()),
    ],
)
def test_other_threads_are_refused_with_a_clear_error(
    backend: Any, what: str, call: Callable[[Any], Any]
) -> None:
    bus = backend.bus()
    bus.subscribe(lambda e: None)
    before = bus.stats()
    with pytest.raises(WrongThreadError) as caught:
        in_thread(lambda: call(bus))
    message = str(caught.value)
    assert message.startswith(f"{what}() was called from thread ")
    assert f"belongs to thread {bus.owner_thread}" in message
    assert "bus.producer(name)" in message and "transfer_to_current_thread()" in message
    assert isinstance(caught.value, RuntimeError)
    assert bus.stats() == before and len(bus.subscriptions()) == 1


def test_ingest_from_another_thread_is_refused(backend: Any) -> None:
    bus = backend.bus()
    event = backend.WorldEvent(1, 0, 0, "K")
    with pytest.raises(WrongThreadError, match=r"^ingest\(\) was called"):
        in_thread(lambda: bus.ingest(event))
    assert bus.latest_seq() == 0


def test_reading_from_another_thread_is_allowed(backend: Any) -> None:
    bus = backend.bus()
    bus.publish("K")
    bus.drain()
    assert in_thread(lambda: [e.seq for e in bus.get_since(0)]) == [1]
    assert in_thread(bus.latest_seq) == 1
    assert in_thread(bus.stats)["published"] == 1


def test_a_disabled_bus_stays_a_no_op_in_any_thread(backend: Any) -> None:
    bus = backend.bus(enabled=False)
    assert in_thread(lambda: bus.publish("K")) == 0


def test_transfer_to_current_thread(backend: Any) -> None:
    bus = backend.bus()
    seen = received(bus)
    bus.publish("A")

    def take_over() -> int:
        bus.transfer_to_current_thread()
        bus.publish("B")
        return int(bus.drain())

    assert in_thread(take_over) == 2
    assert [s[1] for s in seen] == ["A", "B"]
    with pytest.raises(WrongThreadError, match=r"^publish\(\)"):
        bus.publish("C")
    bus.transfer_to_current_thread()
    assert bus.publish("C") == 3


# -- producers -----------------------------------------------------------------


def test_producer_events_enter_at_the_next_drain_in_producer_order(backend: Any) -> None:
    bus = backend.bus()
    seen = received(bus)
    first, second = bus.producer("first"), bus.producer("second")
    assert bus.producer("first") is first
    assert [p.name for p in bus.producers()] == ["first", "second"]
    # Published by threads in the opposite order: the order is the producers'.
    in_thread(lambda: [second.publish("S", subject_id=f"s{n}") for n in range(3)])
    in_thread(lambda: [first.publish("F", subject_id=f"f{n}") for n in range(2)])
    assert len(first) == 2 and len(second) == 3
    assert bus.latest_seq() == 0 and bus.pending_count() == 0
    assert bus.publish("OWN") == 1  # the owner's own publish is numbered at once
    assert bus.drain() == 6
    assert [(s[0], s[1], s[2]) for s in seen] == [
        (1, "OWN", None),
        (2, "F", "f0"),
        (3, "F", "f1"),
        (4, "S", "s0"),
        (5, "S", "s1"),
        (6, "S", "s2"),
    ]
    assert len(first) == 0 and len(second) == 0


def test_producer_publish_takes_publish_arguments_and_the_clock_at_entry(backend: Any) -> None:
    bus = backend.bus(max_payload_items=3)
    seen = received(bus)
    producer = bus.producer("p")
    bus.set_clock(4, 1)
    producer.publish("A", payload={"a": 1, "b": [1, 2]}, tags=["x"], actor_id="who")
    producer.publish("B", 9, 2, payload=[("k", "v")] * 1 + [(f"n{i}", i) for i in range(5)])
    bus.set_clock(6, 1)  # the clock when the inbox enters the bus
    bus.drain()
    assert seen[0] == (1, "A", None, (("a", 1), ("b", (1, 2))), 6)
    assert seen[1][3] == (("k", "v"), ("n0", 0), ("__truncated__", True))
    assert seen[1][4] == 9
    event = bus.get_since(0)[0]
    assert event.tags == ("x",) and event.actor_id == "who"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": ""}, ValueError, "kind"),
        ({"kind": "K", "tick": -1}, ValueError, "tick"),
        ({"kind": "K", "subject_id": 5}, TypeError, "subject_id"),
        ({"kind": "K", "payload": {"x": object()}}, TypeError, "payload"),
        ({"kind": "K", "tags": "notalist"}, TypeError, "tags"),
    ],
)
def test_producer_publish_checks_at_once(
    backend: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    bus = backend.bus()
    producer = bus.producer("p")
    with pytest.raises(error, match=match) as caught:
        in_thread(lambda: producer.publish(**kwargs))
    with pytest.raises(error) as plain:
        bus.publish(**kwargs)
    assert str(caught.value) == str(plain.value)  # the same message as publish
    assert len(producer) == 0


def test_producer_names_and_handles(backend: Any) -> None:
    bus = backend.bus()
    with pytest.raises(TypeError, match="producer name must be a non-empty str"):
        bus.producer("")
    with pytest.raises(TypeError, match="producer name must be a non-empty str"):
        bus.producer(3)
    with pytest.raises(TypeError, match=r"bus\.producer\(name\)"):
        backend.core.Producer()
    producer = bus.producer("p")
    assert repr(producer) == "<Producer 'p' inbox=0>"
    assert producer.publish("K") is None


def test_close_producers_keeps_what_was_published(backend: Any) -> None:
    bus = backend.bus()
    seen = received(bus)
    producer = bus.producer("p")
    producer.publish("A")
    producer.publish("B")
    assert bus.close_producers() == 2
    assert producer.closed and repr(producer) == "<Producer 'p' closed inbox=2>"
    with pytest.raises(ProducerClosedError, match="producer 'p' is closed"):
        in_thread(lambda: producer.publish("C"))
    with pytest.raises(ValueError, match="producer 'p' is closed"):
        bus.producer("p")
    assert bus.drain() == 2
    assert [s[1] for s in seen] == ["A", "B"]
    assert bus.producers() == []
    fresh = bus.producer("p")  # once forgotten, the name can be used again
    assert fresh is not producer and not fresh.closed
    assert fresh.close() == 0
    assert bus.close_producers() == 0 and bus.producers() == []


def test_a_disabled_bus_keeps_nothing_from_producers(backend: Any) -> None:
    bus = backend.bus(enabled=False)
    producer = bus.producer("p")
    assert producer.publish("K") is None
    assert len(producer) == 0 and bus.drain() == 0


def test_a_full_pending_queue_leaves_the_rest_in_the_inbox(backend: Any) -> None:
    bus = backend.bus(max_pending=3)
    seen = received(bus)
    first, second = bus.producer("first"), bus.producer("second")
    for n in range(3):
        first.publish("F", subject_id=str(n))
        second.publish("S", subject_id=str(n))
    assert bus.drain() == 3
    assert (len(first), len(second)) == (0, 3)
    assert bus.drain() == 3
    assert [s[1] + s[2] for s in seen] == ["F0", "F1", "F2", "S0", "S1", "S2"]
    bus.publish("X")
    bus.publish("Y")
    bus.publish("Z")
    with pytest.raises(PendingOverflowError):
        bus.publish("W")


def test_an_event_refused_at_entry_is_reported_and_the_rest_wait(backend: Any) -> None:
    bus = backend.bus()
    seen = received(bus)
    producer = bus.producer("p")
    producer.publish("EARLY", tick=2)
    producer.publish("LATER")
    bus.set_clock(5)
    with pytest.raises(ValueError, match="event tick 2 is before the bus clock") as caught:
        bus.drain()
    assert any("producer 'p'" in note and "'EARLY'" in note for note in caught.value.__notes__)
    assert len(producer) == 1 and seen == []
    assert bus.drain() == 1
    assert [s[1] for s in seen] == ["LATER"]


def test_inboxes_travel_in_snapshots(backend: Any) -> None:
    bus = backend.bus(max_payload_items=2)
    bus.publish("BEFORE")
    first, second = bus.producer("first"), bus.producer("second")
    first.publish("F", 3, payload={"a": 1, "b": 2, "c": 3}, tags=("t",))
    second.publish("S", subject_id="x", payload=[("l", [1, 2])], priority="high")
    bus.producer("idle")
    snapshot = bus.snapshot()
    assert snapshot["producers"] == [
        {
            "name": "first",
            "inbox": [
                {
                    "kind": "F",
                    "tick": 3,
                    "day": None,
                    "polity_id": None,
                    "ward_id": None,
                    "actor_id": None,
                    "subject_id": None,
                    "payload": {"a": 1, "__truncated__": True},
                    "tags": ["t"],
                    "priority": None,
                }
            ],
        },
        {
            "name": "second",
            "inbox": [
                {
                    "kind": "S",
                    "tick": None,
                    "day": None,
                    "polity_id": None,
                    "ward_id": None,
                    "actor_id": None,
                    "subject_id": "x",
                    "payload": {"l": [1, 2]},
                    "tags": [],
                    "priority": "high",
                }
            ],
        },
    ]
    restored = backend.EventBus.from_snapshot(snapshot)
    assert [p.name for p in restored.producers()] == ["first", "second"]
    assert restored.snapshot() == snapshot
    for target in (bus, restored):
        target.drain()
    assert [e.to_dict() for e in restored.get_since(1)] == [e.to_dict() for e in bus.get_since(1)]
    assert "producers" not in bus.snapshot()


@pytest.mark.parametrize(
    ("producers", "match"),
    [
        ({}, "must be a list"),
        ([{"name": "p"}], "with 'name' and 'inbox'"),
        ([{"name": "", "inbox": []}], "unique non-empty str"),
        ([{"name": "p", "inbox": []}, {"name": "p", "inbox": []}], "unique non-empty str"),
        ([{"name": "p", "inbox": {}}], "inbox must be a list"),
        ([{"name": "p", "inbox": [{"kind": "K"}]}], "with exactly kind"),
    ],
)
def test_bad_snapshot_inboxes_are_refused_and_change_nothing(
    backend: Any, producers: object, match: str
) -> None:
    snapshot = backend.bus().snapshot()
    snapshot["producers"] = producers
    bus = backend.bus()
    with pytest.raises(ValueError, match=match):
        bus.restore(snapshot)
    assert bus.producers() == [] and bus.latest_seq() == 0


def test_a_snapshot_inbox_entry_is_checked_like_publish(backend: Any) -> None:
    source = backend.bus()
    source.producer("p").publish("K")
    snapshot = source.snapshot()
    snapshot["producers"][0]["inbox"][0]["subject_id"] = 7
    bus = backend.bus()
    with pytest.raises(TypeError, match="subject_id"):
        bus.restore(snapshot)
    assert bus.producers() == []


def test_restore_needs_empty_inboxes(backend: Any) -> None:
    snapshot = backend.bus().snapshot()
    bus = backend.bus()
    bus.producer("p").publish("K")
    with pytest.raises(ValueError, match="fresh bus"):
        bus.restore(snapshot)


# -- the two cores agree -----------------------------------------------------------


def outcome_of(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        return ("ok", repr(call()))
    except Exception as error:  # compared across cores
        text = str(error)
        # thread idents differ between runs: compare the message around them
        if isinstance(error, WrongThreadError):
            text = " ".join(word for word in text.split() if not word.rstrip(",").isdigit())
        return (type(error).__name__, text)


def producer_script(backend: Any) -> list[tuple[str, str]]:
    bus = backend.bus(max_pending=4, max_payload_items=2)
    seen = received(bus)
    p = bus.producer("p")
    q = bus.producer("q")
    steps: list[Callable[[], Any]] = [
        lambda: p.publish("A", payload={"x": 1, "y": 2, "z": 3}),
        lambda: p.publish("B", 3, 1, tags=["t"], subject_id="s"),
        lambda: q.publish("C", payload=[("k", (1, 2))]),
        lambda: p.publish(None),
        lambda: p.publish("A", day=-2),
        lambda: p.publish("A", payload={"__truncated__": True}),
        lambda: p.publish("A", payload={1: 2}),
        lambda: q.publish("A", tags=[1]),
        lambda: bus.producer(""),
        lambda: bus.producer("p") is p,
        lambda: in_thread(lambda: bus.publish("X")),
        lambda: in_thread(lambda: bus.drain()),
        lambda: in_thread(lambda: bus.producer("r")),
        lambda: [q.publish("D") for _ in range(3)],
        lambda: bus.drain(),
        lambda: (len(p), len(q)),
        lambda: bus.snapshot().get("producers"),
        lambda: bus.close_producers(),
        lambda: q.publish("E"),
        lambda: bus.producer("q"),
        lambda: bus.drain(),
        lambda: [x.name for x in bus.producers()],
        lambda: seen,
        lambda: bus.stats(),
    ]
    return [outcome_of(step) for step in steps]


@pytest.mark.c_extension  # compares the two cores
def test_both_cores_give_the_same_results_and_messages(
    both_backends: tuple[Any, ...],
) -> None:
    runs = [producer_script(backend) for backend in both_backends]
    assert all(run == runs[0] for run in runs)
    kinds = [outcome[0] for outcome in runs[0]]
    assert {"TypeError", "ValueError", "WrongThreadError", "ProducerClosedError"} <= set(kinds)


def test_producer_events_keep_their_priority(backend: Any) -> None:
    bus = backend.bus()
    order: list[str] = []
    bus.subscribe(lambda event: order.append(event.kind))
    worker = bus.producer("worker")
    worker.publish("low", priority="low")
    worker.publish("normal")
    worker.publish("urgent", priority="urgent")
    bus.publish("loop-high", priority="high")
    with pytest.raises(ValueError, match="priority must be one of"):
        worker.publish("bad", priority="highest")
    assert len(worker) == 3
    bus.drain()
    # the inbox enters after the loop's own event, then the round goes by lane
    assert order == ["urgent", "loop-high", "normal", "low"]
    assert [event.kind for event in bus.get_since(0)] == ["loop-high", "low", "normal", "urgent"]
