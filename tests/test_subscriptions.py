"""Subscriptions as users of other buses expect them: handles, ``on``, ``once``,
weak handlers and field filters (both cores)."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from ringbus import Subscription


def test_subscribe_returns_a_handle(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []
    sub = bus.subscribe(lambda event: seen.append(event.seq), name="log")
    assert isinstance(sub, Subscription)
    assert sub.id == sub.sub_id == 1 and sub == 1 and int(sub) == 1 and {sub: "x"}[1] == "x"
    assert sub.active and bus.subscriptions() == [sub]
    bus.publish("A")
    bus.drain()
    sub.cancel()
    assert not sub.active and bus.subscriptions() == []
    bus.publish("A")
    bus.drain()
    assert seen == [1]
    with pytest.raises(KeyError, match=r"<Subscription 1 'log' .* has already ended"):
        sub.cancel()
    with pytest.raises(KeyError, match=r"no live subscription <Subscription 1 'log'"):
        bus.unsubscribe(sub)


def test_a_handle_is_a_context_manager(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []
    with bus.subscribe(lambda event: seen.append(event.seq)) as sub:
        bus.publish("A")
        bus.drain()
    assert not sub.active
    bus.publish("A")
    bus.drain()
    assert seen == [1]
    with bus.subscribe(print) as inner:  # cancelled inside the block: no error at its end
        inner.cancel()


def test_unsubscribe_takes_the_handle_or_its_id_of_this_bus_only(backend: Any) -> None:
    bus, other = backend.bus(), backend.bus()
    first = bus.subscribe(print)
    second = bus.subscribe(print)
    foreign = other.subscribe(print)
    assert foreign == first  # both are id 1, each on its own bus
    with pytest.raises(KeyError, match="another bus made it"):
        bus.unsubscribe(foreign)
    assert first.active and foreign.active
    bus.unsubscribe(2)
    assert not second.active
    bus.unsubscribe(first)
    with pytest.raises(KeyError, match="no live subscription 7 on this bus"):
        bus.unsubscribe(7)
    with pytest.raises(KeyError, match="no live subscription True"):
        bus.unsubscribe(True)


def test_on_decorates_without_replacing_the_function(backend: Any) -> None:
    bus = backend.bus()
    seen: list[str] = []

    @bus.on(kinds="DEPOT_*", priority=5, name="depots")
    def on_depot(event: Any) -> None:
        seen.append(event.kind)

    @bus.on()
    def on_anything(event: Any) -> None:
        seen.append("any")

    assert callable(on_depot) and on_depot.__name__ == "on_depot"
    bus.publish("DEPOT_BUILT")
    bus.publish("OTHER")
    bus.drain()
    assert seen == ["DEPOT_BUILT", "any", "any"]
    assert [(s.name, s.priority) for s in bus.subscriptions()] == [("depots", 5), (None, 0)]
    with pytest.raises(TypeError):
        bus.on(kinds="A", bogus=1)(print)


def test_once_delivers_at_most_one_event(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []
    sub = bus.subscribe(lambda event: seen.append(event.seq), kinds="A", once=True)
    every: list[int] = []
    bus.subscribe(lambda event: every.append(event.seq))
    for kind in "BAAA":
        bus.publish(kind)
    bus.drain()
    bus.publish("A")
    bus.drain()
    assert seen == [2] and every == [1, 2, 3, 4, 5]
    assert not sub.active and len(bus.subscriptions()) == 1


def test_once_counts_even_when_the_handler_fails(backend: Any) -> None:
    bus = backend.bus(error_policy="dead_letter", max_retries=3)
    calls: list[int] = []

    def fails(event: Any) -> None:
        calls.append(event.seq)
        raise RuntimeError("no")

    bus.subscribe(fails, once=True)
    for tick in range(1, 10):
        bus.set_clock(tick)
        bus.publish("A")
        bus.drain()
    assert calls == [1]  # at most once: no retry, no later event


def test_a_named_once_subscription_stays_ended_across_restore(backend: Any) -> None:
    def run(bus: Any, seen: list[int]) -> None:
        bus.subscribe(lambda event: seen.append(event.seq), name="first-depot", once=True)

    bus = backend.bus()
    seen: list[int] = []
    run(bus, seen)
    bus.publish("A")
    bus.drain()
    state = bus.snapshot()
    assert state["routing"] == {"once_fired": ["first-depot"]}
    for attach_first in (True, False):
        fresh, again = backend.bus(), []
        if attach_first:
            run(fresh, again)
        fresh.restore(state)
        if not attach_first:
            run(fresh, again)
        assert fresh.subscriptions() == []
        fresh.publish("A")
        fresh.drain()
        assert again == []
    # Not yet fired when the snapshot was taken: it still takes one event.
    unfired = backend.bus()
    unfired.publish("A")
    state = unfired.snapshot()
    fresh, later = backend.bus(), []
    run(fresh, later)
    fresh.restore(state)
    fresh.publish("A")
    fresh.drain()
    assert later == [1]


class Listener:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, event: Any) -> None:
        self.seen.append(event.seq)


def test_weak_handlers_do_not_keep_their_object_alive(backend: Any) -> None:
    bus = backend.bus()
    kept, dropped = Listener(), Listener()
    strong = bus.subscribe(kept.handle)  # the default: the bus keeps it alive
    weak = bus.subscribe(dropped.handle, weak=True)
    bus.publish("A")
    bus.drain()
    seen_before = dropped.seen
    del dropped
    gc.collect()
    bus.publish("A")
    bus.drain()
    assert kept.seen == [1, 2] and seen_before == [1]
    assert strong.active and not weak.active
    assert bus.stats()["subscriptions_collected"] == 1
    assert bus.subscriptions() == [strong]


def test_a_weak_function_ends_with_it(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []

    def handler(event: Any) -> None:
        seen.append(event.seq)

    sub = bus.subscribe(handler, weak=True)
    bus.publish("A")
    bus.drain()
    del handler
    gc.collect()
    assert bus.stats()["subscriptions_collected"] == 1 and not sub.active
    with pytest.raises(TypeError, match="weak=True needs a handler that can be weakly"):
        bus.subscribe([].append, weak=True)


def test_field_filters(backend: Any) -> None:
    bus = backend.bus()
    got: dict[str, list[int]] = {}

    def keep(name: str, **filters: Any) -> None:
        got[name] = []
        bus.subscribe(lambda event: got[name].append(event.seq), **filters)

    keep("north", polity_id="north")
    keep("ward", ward_id="w1")
    keep("actor", actor_id="a")
    keep("subject", subject_id="s")
    keep("tags", tags_any=["urgent", "audit"])
    keep("where", where=lambda event: event.seq % 2 == 0)
    keep("both", polity_id="north", ward_id="w1", kinds="DELIVERY_*")
    bus.publish("DELIVERY_COMPLETED", polity_id="north", ward_id="w1")  # 1
    bus.publish("DELIVERY_FAILED", polity_id="south", ward_id="w1", tags=("audit",))  # 2
    bus.publish("DEPOT_BUILT", polity_id="north", actor_id="a", subject_id="s")  # 3
    bus.publish("DELIVERY_FAILED", polity_id="north", tags=("other",))  # 4
    bus.drain()
    assert got == {
        "north": [1, 3, 4],
        "ward": [1, 2],
        "actor": [3],
        "subject": [3],
        "tags": [2],
        "where": [2, 4],
        "both": [1],
    }


def test_filters_cost_nothing_to_subscribers_without_them(backend: Any) -> None:
    """Structural: an unfiltered subscription's route calls its handler as given."""
    bus = backend.bus()

    def plain(event: Any) -> None:
        pass

    bus.subscribe(plain)
    bus.subscribe(print, polity_id="north")
    route = bus._registry.route("A")
    assert route[0][0] is plain
    assert route[1][0] is not print


def test_filter_arguments_are_checked(backend: Any) -> None:
    bus = backend.bus()
    with pytest.raises(TypeError, match="polity_id filter must be a str or None, got int"):
        bus.subscribe(print, polity_id=3)
    with pytest.raises(TypeError, match="a bare str is one tag"):
        bus.subscribe(print, tags_any="urgent")
    with pytest.raises(ValueError, match="tags_any must name at least one tag"):
        bus.subscribe(print, tags_any=[])
    with pytest.raises(TypeError, match="where must be callable"):
        bus.subscribe(print, where=True)
    with pytest.raises(ValueError, match="filters cannot be combined with group="):
        bus.subscribe(print, group="g", polity_id="north")
    assert bus.subscriptions() == []


def test_stats_from_another_thread_leave_ending_to_the_owner(backend: Any) -> None:
    import threading

    bus = backend.bus()
    dropped = Listener()
    sub = bus.subscribe(dropped.handle, weak=True)
    del dropped
    gc.collect()
    seen: list[Any] = []
    reader = threading.Thread(target=lambda: seen.append(bus.stats()["subscriptions_collected"]))
    reader.start()
    reader.join()
    assert seen == [0] and sub.active  # a reader in another thread changes nothing
    bus.drain()
    assert not sub.active and bus.stats()["subscriptions_collected"] == 1
