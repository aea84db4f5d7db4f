"""Input that would corrupt state later is refused up front, on both cores.

- ``restore()`` is all-or-nothing: a refused snapshot changes nothing.
- The route cache stays bounded however many kinds are published.
- The ring's size is limited the same way on both cores, with one message.
- Sizes too large for the core are a ``ValueError`` naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest

from ringbus import MAX_RING_BYTES, EventBusConfig
from ringbus._ringbus_py import ROUTE_CACHE_LIMIT


# -- the route cache is bounded ----------------------------------------------
@pytest.mark.parametrize("selector", [None, {"KIND_*"}, {"OTHER"}])
def test_route_cache_stays_bounded(backend: Any, selector: set[str] | None) -> None:
    bus = backend.bus(max_events=1024)
    seen: list[str] = []
    bus.subscribe(lambda e: seen.append(e.kind), kinds=selector)
    kinds_published = [f"KIND_{i}" for i in range(100_000)]
    for start in range(0, len(kinds_published), 1000):
        for kind in kinds_published[start : start + 1000]:
            bus.publish(kind)
        bus.drain()
        assert len(bus._routes) <= ROUTE_CACHE_LIMIT
    assert seen == ([] if selector == {"OTHER"} else kinds_published)


def test_route_cache_is_invalidated_when_subscriptions_change(backend: Any) -> None:
    bus = backend.bus()
    first: list[str] = []
    second: list[str] = []
    for i in range(ROUTE_CACHE_LIMIT + 10):
        bus.publish(f"K{i}")
    bus.publish("HOT")
    bus.drain()
    assert len(bus._routes) <= ROUTE_CACHE_LIMIT
    sub = bus.subscribe(first.append, kinds={"HOT"})
    bus.publish("HOT")
    bus.drain()
    bus.subscribe(second.append, kinds={"H*"})
    bus.unsubscribe(sub)
    bus.publish("HOT")
    bus.drain()
    assert [e.seq for e in first] == [ROUTE_CACHE_LIMIT + 12]
    assert [e.seq for e in second] == [ROUTE_CACHE_LIMIT + 13]


def test_route_cache_limit_is_the_same_on_both_cores(both_backends: Any) -> None:
    assert {b.core.ROUTE_CACHE_LIMIT for b in both_backends} == {ROUTE_CACHE_LIMIT}


# -- the ring's size is limited the same way on both cores --------------------
def test_ring_size_limit(backend: Any) -> None:
    slot = 88 + 16 * 12
    needs = f"max_events=1000000000000 needs about {slot}000000000000 bytes of ring"
    with pytest.raises(ValueError, match=needs):
        backend.bus(max_events=10**12)
    with pytest.raises(ValueError, match=needs):
        backend.RingCore(max_events=10**12)
    largest = MAX_RING_BYTES // slot
    with pytest.raises(ValueError, match=f"max_events={largest + 1} needs about"):
        backend.RingCore(max_events=largest + 1)
    with pytest.raises(ValueError, match=f"max_events={largest + 1} needs about"):
        EventBusConfig(max_events=largest + 1)
    assert EventBusConfig(max_events=largest).max_events == largest  # accepted, not built
    with pytest.raises(ValueError, match="max_payload_items must be <= 64"):
        backend.bus(max_payload_items=10**12)
    with pytest.raises(ValueError, match="max_payload_items must be <= 64"):
        backend.RingCore(max_payload_items=10**12)


@pytest.mark.c_extension
def test_ring_size_error_is_the_same_on_both_cores(both_backends: Any) -> None:
    messages = set()
    for backend in both_backends:
        with pytest.raises(ValueError) as raised:
            backend.RingCore(max_events=10**12, max_payload_items=64, max_pending=0)
        messages.add(str(raised.value))
    assert messages == {
        "max_events=1000000000000 needs about 1112000000000000 bytes of ring (1112 bytes "
        "per event at max_payload_items=64); a ring may take at most 68719476736 bytes "
        "(64 GiB): lower max_events to 61798090 or less"
    }


@pytest.mark.parametrize(
    "field", ["max_events", "max_payload_items", "max_pending", "cascade_rounds"]
)
@pytest.mark.parametrize("value", [2**63, 2**200])
def test_huge_sizes_are_a_value_error_naming_the_field(
    backend: Any, field: str, value: int
) -> None:
    with pytest.raises(ValueError, match=field):
        backend.RingCore(**{field: value})
    with pytest.raises(ValueError, match=field):
        EventBusConfig(**{field: value})
    with pytest.raises(ValueError, match="max_rounds"):
        backend.RingCore().drain(value)


@pytest.mark.parametrize("field", ["retry_backoff_ticks", "dead_letter_limit", "max_retries"])
def test_huge_facade_sizes_are_a_value_error_naming_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EventBusConfig(**{field: 2**200})
