"""The bus contract (SPEC §3), on both cores."""

from __future__ import annotations

import json
from typing import Any

import pytest

import ringbus
from _received import MODES, ORDERS, Receiver, expected_reading
from ringbus import CascadeLimitError, PendingOverflowError, RingFullError, kinds


def test_t1_subscriber_sees_seq_order(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []
    bus.subscribe(lambda event: seen.append(event.seq))
    seqs = [bus.publish(kinds.CORE_KINDS[i % 13], payload={"i": i}) for i in range(500)]
    assert seqs == list(range(1, 501))
    assert bus.drain() == 500
    assert seen == seqs
    assert bus.latest_seq() == 500


def test_t2_ring_retention(backend: Any) -> None:
    bus = backend.bus(max_events=4)
    for i in range(10):
        bus.publish(kinds.TICK, tick=i)
    bus.drain()
    assert len(bus) == 4
    assert bus.oldest_seq() == 7
    assert bus.latest_seq() == 10
    assert [e.seq for e in bus.get_since(0)] == [7, 8, 9, 10]
    # a cursor on an overwritten seq gets what is still retained; the gap shows
    assert [e.seq for e in bus.get_since(2)] == [7, 8, 9, 10]
    assert bus.oldest_seq() > 2 + 1
    assert [e.seq for e in bus.get_since(8)] == [9, 10]
    assert bus.get_since(10) == []
    assert bus.stats()["overwritten"] == 6
    assert bus.publish(kinds.TICK) == 11


def test_t3_kind_filtering_with_globs_and_all(backend: Any) -> None:
    bus = backend.bus()
    exact: list[str] = []
    glob: list[str] = []
    every: list[str] = []
    bus.subscribe(lambda e: exact.append(e.kind), kinds={kinds.DELIVERY_COMPLETED})
    bus.subscribe(lambda e: glob.append(e.kind), kinds={"DELIVERY_*"})
    bus.subscribe(lambda e: every.append(e.kind))
    for kind in kinds.CORE_KINDS:
        bus.publish(kind)
    bus.publish("DELIVERY_RETURNED")
    bus.drain()
    assert exact == [kinds.DELIVERY_COMPLETED]
    assert glob == [kinds.DELIVERY_COMPLETED, kinds.DELIVERY_FAILED, "DELIVERY_RETURNED"]
    assert every == [*kinds.CORE_KINDS, "DELIVERY_RETURNED"]


def test_kind_filter_single_string_and_charclass(backend: Any) -> None:
    bus = backend.bus()
    seen: list[str] = []
    bus.subscribe(lambda e: seen.append(e.kind), kinds="D[AE]*")
    for kind in kinds.CORE_KINDS:
        bus.publish(kind)
    bus.drain()
    assert seen == [
        kinds.DAY_ROLLOVER,
        kinds.DEPOT_BUILT,
        kinds.DELIVERY_COMPLETED,
        kinds.DELIVERY_FAILED,
    ]


def test_t4_deferred_drain_does_not_interleave(backend: Any) -> None:
    bus = backend.bus()
    order: list[tuple[str, int]] = []

    def cascade(event: Any) -> None:
        order.append(("a", event.seq))
        if event.kind == "PING":
            bus.publish("PONG")

    bus.subscribe(cascade)
    bus.subscribe(lambda e: order.append(("b", e.seq)))
    bus.publish("PING")
    bus.publish("PING")
    assert bus.drain() == 2
    assert order == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert bus.pending_count() == 2
    order.clear()
    assert bus.drain() == 2
    assert order == [("a", 3), ("b", 3), ("a", 4), ("b", 4)]


def test_cascade_rounds_breadth_first_and_bounded(backend: Any) -> None:
    bus = backend.bus(cascade_rounds=3)
    seen: list[str] = []

    def relay(event: Any) -> None:
        seen.append(event.kind)
        depth = event.payload_dict()["depth"]
        if depth < 2:
            bus.publish(f"L{depth + 1}", payload={"depth": depth + 1})

    bus.subscribe(relay)
    bus.publish("L0", payload={"depth": 0})
    bus.publish("L0", payload={"depth": 0})
    assert bus.drain() == 6
    assert seen == ["L0", "L0", "L1", "L1", "L2", "L2"]

    runaway = backend.bus(cascade_rounds=4)
    runaway.subscribe(lambda e: runaway.publish("AGAIN"))
    runaway.publish("START")
    with pytest.raises(CascadeLimitError, match="within 4 drain rounds: 1 events"):
        runaway.drain()
    assert runaway.pending_count() == 1  # kept, not lost
    assert runaway.drain(max_rounds=1) == 1


def test_t5_bounded_payload(backend: Any) -> None:
    bus = backend.bus(max_payload_items=5)
    seen: list[Any] = []
    bus.subscribe(seen.append)
    bus.publish("BIG", payload={f"k{i}": i for i in range(20)})
    bus.publish("FIT", payload={f"k{i}": i for i in range(5)})
    bus.publish("PAIRS", payload=[(f"k{i}", i) for i in range(6)])
    bus.drain()
    big, fit, pairs = seen
    assert len(big.payload) == 5
    assert big.payload[-1] == (ringbus.TRUNCATED_KEY, True)
    assert big.payload[:4] == tuple((f"k{i}", i) for i in range(4))
    assert fit.payload == tuple((f"k{i}", i) for i in range(5))
    assert len(pairs.payload) == 5 and pairs.payload[-1] == ("__truncated__", True)


def test_t6_counting_subscriber(backend: Any) -> None:
    bus = backend.bus()
    counts: dict[str, int] = {}

    def count(event: Any) -> None:
        key = f"{event.kind}:{event.polity_id}"
        counts[key] = counts.get(key, 0) + 1

    bus.subscribe(count, kinds={kinds.DEPOT_BUILT, "DELIVERY_*"})
    expected: dict[str, int] = {}
    for i in range(300):
        kind = (kinds.DEPOT_BUILT, kinds.DELIVERY_COMPLETED, kinds.DELIVERY_FAILED, kinds.TICK)[
            i % 4
        ]
        polity = f"p{i % 3}"
        bus.publish(kind, polity_id=polity)
        if kind != kinds.TICK:
            expected[f"{kind}:{polity}"] = expected.get(f"{kind}:{polity}", 0) + 1
        if i % 50 == 49:
            bus.drain()
    assert counts == expected
    assert sum(counts.values()) == 225


def test_clock_defaults_and_explicit(backend: Any) -> None:
    bus = backend.bus()
    bus.set_clock(7, 2)
    bus.publish("A")
    bus.publish("B", 9)  # an event later than the clock moves it forward
    assert (bus.tick, bus.day) == (9, 2)
    bus.publish("C", 9, 3)
    bus.set_clock(9)
    bus.publish("D")
    got = [(e.tick, e.day) for e in bus.get_since(0)]
    assert got == [(7, 2), (9, 2), (9, 3), (9, 3)]
    assert (bus.tick, bus.day) == (9, 3)


def test_time_never_goes_backwards(backend: Any) -> None:
    bus = backend.bus()
    bus.set_clock(10, 2)
    with pytest.raises(ValueError, match="cannot move the tick back from 10 to 9"):
        bus.set_clock(9)
    with pytest.raises(ValueError, match="cannot move the day back from 2 to 1"):
        bus.set_clock(11, 1)
    assert (bus.tick, bus.day) == (10, 2)  # a refused call changes nothing
    with pytest.raises(ValueError, match="event tick 3 is before the bus clock's tick 10"):
        bus.publish("A", 3)
    with pytest.raises(ValueError, match="event day 0 is before the bus clock's day 2"):
        bus.publish("A", day=0)
    event = backend.WorldEvent(5, 4, 2, "OLD")
    with pytest.raises(ValueError, match="event tick 4 is before the bus clock's tick 10"):
        bus.ingest(event)
    assert bus.latest_seq() == 0 and bus.pending_count() == 0
    assert bus.publish("A", 10, 2) == 1
    assert bus.clock_policy == "monotonic"


def test_free_clock_accepts_any_time(backend: Any) -> None:
    bus = backend.bus(clock_policy="free")
    bus.set_clock(7, 2)
    bus.publish("A")
    bus.publish("B", 9)
    bus.publish("C", 9, 3)
    bus.set_clock(8)
    bus.publish("D")
    bus.publish("E", 1, 0)
    got = [(e.tick, e.day) for e in bus.get_since(0)]
    assert got == [(7, 2), (9, 2), (9, 3), (8, 2), (1, 0)]
    assert (bus.tick, bus.day) == (8, 2)
    assert bus.clock_policy == "free"
    with pytest.raises(ValueError, match="clock_policy must be one of monotonic, free"):
        backend.bus(clock_policy="loose")


def test_disabled_bus_is_a_no_op(backend: Any) -> None:
    bus = backend.bus(enabled=False)
    seen: list[Any] = []
    bus.subscribe(seen.append)
    assert bus.publish("A", payload={"x": 1}) == 0
    assert bus.publish(123) == 0  # not even validated: a cheap no-op
    assert bus.drain() == 0
    assert (len(bus), bus.latest_seq(), seen) == (0, 0, [])
    assert bus.enabled is False


def test_pending_overflow_raises_and_keeps_everything(backend: Any) -> None:
    bus = backend.bus(max_pending=3, max_events=2)
    for _ in range(3):
        bus.publish("A")
    with pytest.raises(PendingOverflowError, match="drain\\(\\) more often") as info:
        bus.publish("B")
    assert "max_pending" in str(info.value)
    assert bus.latest_seq() == 3  # the refused event took no seq
    seen: list[int] = []
    bus.subscribe(lambda e: seen.append(e.seq))
    assert bus.drain() == 3
    assert seen == [1, 2, 3]  # all accepted events, though the ring held only 2
    assert bus.publish("B") == 4


def test_wrap_with_pending_dispatches_exactly_once(backend: Any) -> None:
    bus = backend.bus(max_events=3)
    seen: list[tuple[int, object]] = []
    bus.subscribe(lambda e: seen.append((e.seq, e.payload_dict()["i"])))
    for i in range(10):
        bus.publish("A", payload={"i": i})
    assert len(bus) == 3 and bus.pending_count() == 10
    assert [e.seq for e in bus.pending_events()] == list(range(1, 11))
    assert bus.drain() == 10
    assert seen == [(i + 1, i) for i in range(10)]
    assert bus.drain() == 0


def test_drop_policy_raise(backend: Any) -> None:
    bus = backend.bus(max_events=2, drop_policy="RAISE")
    bus.publish("A")
    bus.publish("B")
    with pytest.raises(RingFullError, match="max_events=2"):
        bus.publish("C")
    assert bus.latest_seq() == 2


def test_handler_error_does_not_stop_others_and_is_raised_after(backend: Any) -> None:
    bus = backend.bus()
    seen: list[tuple[str, int]] = []

    def bad(event: Any) -> None:
        raise ValueError(f"bad {event.seq}")

    bus.subscribe(lambda e: seen.append(("first", e.seq)))
    bus.subscribe(bad, name="bad")
    bus.subscribe(lambda e: seen.append(("last", e.seq)))
    bus.publish("A")
    bus.publish("B")
    with pytest.raises(ExceptionGroup) as info:
        bus.drain()
    assert [str(e) for e in info.value.exceptions] == ["bad 1", "bad 2"]
    assert "2 handler error(s)" in str(info.value)
    assert "seq=1" in info.value.exceptions[0].__notes__[0]
    assert seen == [("first", 1), ("last", 1), ("first", 2), ("last", 2)]
    assert bus.pending_count() == 0
    assert bus.stats()["handler_errors"] == 2


def test_log_error_policy(backend: Any, caplog: pytest.LogCaptureFixture) -> None:
    bus = backend.bus(error_policy="log")
    bus.subscribe(lambda e: 1 / 0)
    bus.publish("A")
    with caplog.at_level("ERROR", logger="ringbus"):
        assert bus.drain() == 1
    assert "seq=1" in caplog.text and "ZeroDivisionError" in caplog.text


def test_subscribe_and_unsubscribe_inside_handler(backend: Any) -> None:
    bus = backend.bus()
    log: list[str] = []
    late_id: list[int] = []

    def late(event: Any) -> None:
        log.append(f"late{event.seq}")

    def first(event: Any) -> None:
        log.append(f"first{event.seq}")
        if event.seq == 1:
            late_id.append(bus.subscribe(late))
        if event.seq == 3:
            bus.unsubscribe(late_id[0])

    bus.subscribe(first)
    for _ in range(4):
        bus.publish("A")
    bus.drain()
    assert log == ["first1", "first2", "late2", "first3", "late3", "first4"]


def test_unsubscribe_unknown_id(backend: Any) -> None:
    bus = backend.bus()
    sub = bus.subscribe(print)
    bus.unsubscribe(sub)
    with pytest.raises(KeyError, match=r"no live subscription <Subscription 1 .*already ended"):
        bus.unsubscribe(sub)
    with pytest.raises(KeyError, match="no live subscription 99 on this bus"):
        bus.unsubscribe(99)


def test_drain_inside_handler_is_refused(backend: Any) -> None:
    bus = backend.bus()
    bus.subscribe(lambda e: bus.drain())
    bus.publish("A")
    with pytest.raises(ExceptionGroup) as info:
        bus.drain()
    assert isinstance(info.value.exceptions[0], RuntimeError)


def test_handlers_cannot_change_the_event(backend: Any) -> None:
    bus = backend.bus()
    source = {"a": [1, 2]}
    bus.subscribe(lambda e: e.payload_dict().update(a=3))
    bus.publish("A", payload=source)
    source["a"].append(9)
    bus.drain()
    (event,) = bus.get_since(0)
    assert event.payload == (("a", (1, 2)),)
    with pytest.raises(AttributeError):
        event.kind = "B"


def test_get_since_kinds_and_limit(backend: Any) -> None:
    bus = backend.bus()
    for i in range(30):
        bus.publish(kinds.CORE_KINDS[i % 13])
    deliveries = bus.get_since(0, kinds=["DELIVERY_*"])
    assert {e.kind for e in deliveries} == {kinds.DELIVERY_COMPLETED, kinds.DELIVERY_FAILED}
    assert [e.seq for e in bus.get_since(5, limit=3)] == [6, 7, 8]
    assert bus.get_since(0, limit=0) == []
    with pytest.raises(ValueError, match="seq must be >= 0"):
        bus.get_since(-1)
    with pytest.raises(TypeError, match="limit must be an int"):
        bus.get_since(0, limit="3")


@pytest.mark.parametrize("limit", [None, 1, 2, 5])
def test_get_since_leaves_no_hole_when_kinds_runs_code(backend: Any, limit: int | None) -> None:
    """``kinds`` may run code that publishes over the oldest events; what comes
    back is every match from the oldest event still retained on (the ring
    overwrites from the oldest end), never a run with a hole in it."""
    core = backend.RingCore(max_events=4)
    for kind in "ABAB":
        core.publish(kind)  # seqs 1-4

    class Publishing:
        published = False

        def __contains__(self, kind: object) -> bool:
            if kind == "B" and not self.published:
                self.published = True
                core.publish("C")  # seq 5 over seq 1
                core.publish("C")  # seq 6 over seq 2
            return kind in ("A", "B")

    found = [event.seq for event in core.get_since(0, kinds=Publishing(), limit=limit)]
    if limit == 1:  # the first match is found before "B" is asked about
        assert found == [1] and core.oldest_seq() == 1
    else:  # seqs 1 and 2 are gone; 5 and 6 came after the call began
        assert found == [3, 4][:limit] and core.oldest_seq() == 3


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda b: b.publish(""), ValueError, "kind must be a non-empty string"),
        (lambda b: b.publish(3), TypeError, "kind must be a str, got int"),
        (lambda b: b.publish("A", -1), ValueError, "tick must be >= 0, got -1"),
        (lambda b: b.publish("A", 1, True), TypeError, "day must be an int, got bool"),
        (lambda b: b.publish("A", polity_id=5), TypeError, "polity_id must be a str or None"),
        (lambda b: b.publish("A", payload={1: "x"}), TypeError, "payload key 1 is not a str"),
        (lambda b: b.publish("A", payload="ab"), TypeError, "payload must be a dict"),
        (lambda b: b.publish("A", payload=[("a",)]), TypeError, "is not a \\(key, value\\)"),
        (lambda b: b.publish("A", payload=[("a", 1), ("a", 2)]), ValueError, "more than once"),
        (lambda b: b.publish("A", payload={"a": b"x"}), TypeError, "unsupported type bytes"),
        (lambda b: b.publish("A", payload={"a": float("nan")}), ValueError, "finite float"),
        (lambda b: b.publish("A", tags="x"), TypeError, "not a single string"),
        (lambda b: b.publish("A", tags=[1]), TypeError, "tag 1 is not a str"),
    ],
)
def test_bad_input_names_what_was_wrong(
    backend: Any, call: Any, error: type[Exception], message: str
) -> None:
    bus = backend.bus()
    with pytest.raises(error, match=message):
        call(bus)
    assert bus.latest_seq() == 0 and len(bus) == 0


def test_payload_forms_and_freezing(backend: Any) -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    bus = backend.bus()
    bus.publish("A", payload=None)
    bus.publish("B", payload=[("x", [1, [2]]), ("y", Level.HIGH)])
    bus.publish("C", payload=(("k", 1.5),), tags=["t1", "t2"])
    a, b, c = bus.get_since(0)
    assert a.payload == ()
    assert b.payload == (("x", (1, (2,))), ("y", 3))
    assert type(b.payload_dict()["y"]) is int
    assert c.tags == ("t1", "t2")
    json.dumps([e.to_dict() for e in (a, b, c)], allow_nan=False)


def test_counters(backend: Any) -> None:
    bus = backend.bus(max_events=2)
    bus.subscribe(lambda e: None, kinds={"A"})
    bus.subscribe(lambda e: None)
    for kind in "ABA":
        bus.publish(kind)
    bus.drain()
    assert bus.stats() == {
        "published": 3,
        "dispatched": 3,
        "delivered": 5,
        "handler_errors": 0,
        "overwritten": 1,
        "pending": 0,
        "retained": 2,
        "subscriptions_collected": 0,
    }


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_events must be >= 1"):
        ringbus.EventBusConfig(max_events=0)
    with pytest.raises(ValueError, match="max_payload_items must be <= 64"):
        ringbus.EventBusConfig(max_payload_items=65)
    with pytest.raises(ValueError, match="drop_policy must be one of"):
        ringbus.EventBusConfig(drop_policy="DROP_NEWEST")
    with pytest.raises(TypeError, match="config must be an EventBusConfig"):
        ringbus.EventBus({"max_events": 3})  # type: ignore[arg-type]


def test_core_is_not_picklable(backend: Any) -> None:
    import pickle

    with pytest.raises(TypeError, match="cannot be pickled: use snapshot"):
        pickle.dumps(backend.bus())


def test_ingest_keeps_seq_and_allows_gaps(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []
    bus.subscribe(lambda e: seen.append(e.seq))
    event = backend.WorldEvent(5, 1, 0, "A", payload={"x": 1})
    assert bus.ingest(event) == 5
    assert bus.ingest(backend.WorldEvent(9, 1, 0, "B")) == 9
    with pytest.raises(ValueError, match="is not after latest_seq 9"):
        bus.ingest(backend.WorldEvent(9, 1, 0, "C"))
    with pytest.raises(TypeError, match="ingest\\(\\) takes a WorldEvent"):
        bus.ingest(event.to_dict())
    bus.drain()
    assert seen == [5, 9]
    assert bus.publish("D") == 10
    assert [e.seq for e in bus.get_since(5)] == [9, 10]


def test_events_kept_by_handlers_outlive_the_ring(backend: Any) -> None:
    bus = backend.bus(max_events=2)
    kept: list[Any] = []
    bus.subscribe(kept.append)
    for i in range(3):
        bus.publish("A", payload={"i": i, "name": f"n{i}", "deep": [i, [i]]})
    bus.drain()
    early = kept[0].payload  # read before the slot is reused
    for i in range(3, 9):  # overwrite every slot several times
        bus.publish("B", payload={"i": i})
        bus.drain()
    assert early == (("i", 0), ("name", "n0"), ("deep", (0, (0,))))
    assert [e.payload_dict()["i"] for e in kept] == list(range(9))
    assert kept[1].to_dict()["payload"] == {"i": 1, "name": "n1", "deep": [1, [1]]}
    assert kept[2] == backend.WorldEvent(3, 0, 0, "A", payload=kept[2].payload)
    assert hash(kept[2]) == hash(backend.WorldEvent(3, 0, 0, "A", payload=kept[2].payload))


def test_event_read_after_bus_is_gone(backend: Any) -> None:
    import gc

    bus = backend.bus(max_events=4)
    kept: list[Any] = []
    bus.subscribe(kept.append)
    bus.publish("A", payload={"x": "value"})
    bus.drain()
    del bus
    gc.collect()
    assert kept[0].payload == (("x", "value"),)
    assert backend.bus().ingest(kept[0]) == 1


def test_keyboard_interrupt_ends_the_drain_and_keeps_the_rest(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []

    def handler(event: Any) -> None:
        seen.append(event.seq)
        if event.seq == 2:
            raise KeyboardInterrupt

    bus.subscribe(handler)
    for _ in range(4):
        bus.publish("A")
    with pytest.raises(KeyboardInterrupt):
        bus.drain()
    assert seen == [1, 2]
    assert [e.seq for e in bus.pending_events()] == [3, 4]
    assert bus.drain() == 2
    assert seen == [1, 2, 3, 4]


def test_a_refused_nested_drain_runs_no_drain_listener(backend: Any) -> None:
    bus = backend.bus()
    calls: list[str] = []
    bus.add_drain_listener(lambda: calls.append("end"), on_start=lambda: calls.append("start"))
    refused: list[str] = []

    def handler(event: Any) -> None:
        assert bus.draining
        try:
            bus.drain()
        except RuntimeError as error:
            refused.append(str(error))

    bus.subscribe(handler)
    bus.publish("K")
    assert not bus.draining
    assert bus.drain() == 1
    assert calls == ["start", "end"]  # once, for the drain that ran
    assert len(refused) == 1 and "called from inside a handler" in refused[0]


# Content that changes from one event to the next, with empty tags, payloads
# and ids right after non-empty ones: what a reused event object must not keep.
VIEW_PAYLOADS: tuple[Any, ...] = (
    {"a": 1, "b": [1, 2], "c": "x"},
    None,
    {"d": 2.5},
    {},
    [("e", None), ("f", True)],
    {"a": 2, "g": "y"},
)
VIEW_TAGS: tuple[tuple[str, ...], ...] = (("t1", "t2"), (), ("u",), (), ("t1",))
VIEW_IDS: tuple[str | None, ...] = ("s1", None, "s2", None, None, "s3", "s1")


@pytest.mark.parametrize("capacity", [1, 2, 3, 5])
@pytest.mark.parametrize("batch", ["one", "exact_wrap", "wrap_with_pending"])
def test_handlers_read_what_was_published(backend: Any, capacity: int, batch: str) -> None:
    """Every field a handler reads is the published one: at delivery time, and
    from a kept event first read after the ring has overwritten its slot.

    Batches of one event, of exactly one lap and of one more than a lap (the
    oldest pending event is overwritten before the drain) in small rings
    exercise the reuse of delivered event objects nobody kept and the copy of
    a kept event's payload out of a slot about to be overwritten. ``R``
    events go only to handlers that keep nothing, so their event object is
    reused for the next delivery; ``K`` events only to handlers that keep
    them unread, so their payload is still in the slot when it is
    overwritten; ``B`` events to both kinds and to handlers that read and
    keep. The expected content comes from a directly built ``WorldEvent``.
    """
    size = {"one": 1, "exact_wrap": capacity, "wrap_with_pending": capacity + 1}[batch]
    horizon = 3 * capacity
    bus = backend.bus(max_events=capacity, max_pending=size + horizon)

    def published() -> int:
        return int(bus.stats()["published"])

    receivers = []
    for mode in MODES:
        for order in range(len(ORDERS)):
            receiver = Receiver(mode, order, horizon, published)
            selector = {"keep": {"K", "B"}, "read_keep": {"B"}}.get(mode, {"R", "B", "F"})
            bus.subscribe(receiver, kinds=selector)
            receivers.append(receiver)
    expected: dict[int, dict[str, Any]] = {}
    number = 0

    def publish(kind: str, tick: int) -> None:
        nonlocal number
        fields: dict[str, Any] = {
            "polity_id": VIEW_IDS[number % 7],
            "ward_id": VIEW_IDS[(number + 1) % 7],
            "actor_id": VIEW_IDS[(number + 2) % 7],
            "subject_id": VIEW_IDS[(number + 3) % 7],
            "payload": VIEW_PAYLOADS[number % len(VIEW_PAYLOADS)],
            "tags": VIEW_TAGS[number % len(VIEW_TAGS)],
        }
        number += 1
        seq = bus.publish(kind, **fields)
        direct = backend.WorldEvent(seq, tick, tick // 2, kind, **fields)
        expected[seq] = direct.to_dict()

    for tick in range(12):
        bus.set_clock(tick, tick // 2)
        for _ in range(size):
            publish("RKRB"[number % 4], tick)
        bus.drain()
        for receiver in receivers:
            receiver.read_kept()
    for tick in range(12, 12 + horizon):  # overwrite every slot three times over
        bus.set_clock(tick, tick // 2)
        publish("F", tick)
        bus.drain()
        for receiver in receivers:
            receiver.read_kept()

    def of_kinds(names: str) -> list[int]:
        return [seq for seq in sorted(expected) if expected[seq]["kind"] in names]

    assert len(of_kinds("K")) >= 3
    for receiver in receivers:
        assert not receiver.kept, "a kept event was never read after its slot was overwritten"
        delivered = [seq for when, seq, _ in receiver.log if when == "at"]
        late = [seq for when, seq, _ in receiver.log if when == "late"]
        names = {"keep": "KB", "read_keep": "B"}.get(receiver.mode, "RBF")
        assert delivered == of_kinds(names), receiver.mode
        assert late == (delivered if receiver.mode in ("keep", "read_keep") else []), receiver.mode
        for when, seq, reading in receiver.log:
            if reading is not None:
                where = (receiver.mode, receiver.order, when, seq)
                assert reading == expected_reading(expected[seq], receiver.mode), where
