"""S3 with handler priorities and groups available but unused.

The guarantee is structural: when no subscription has a priority or a
group and delivery tracking is off, every route is exactly the tuple of
``(handler, subscription)`` pairs it was before those features existed, so
the drain loop does the same work. The first test asserts that (robust on a
noisy machine); the benchmarks time S3 both ways, interleaved in one run,
for information.
"""

from __future__ import annotations

import time
from statistics import median
from typing import Any

import pytest

from bench_support import core_module, core_params
from ringbus._bench import SCENARIOS, expected_deliveries, make_batch
from ringbus._bus import bus_class_for

SCENARIO = SCENARIOS["S3"]
TICKS = 10  # 1000 events per call


class S3:
    """S3 on one bus: ten subscribers, two kinds each."""

    def __init__(self, core: str, explicit: bool) -> None:
        self.bus = bus_class_for(core_module(core))()
        self.counts = [0] * len(SCENARIO.subscribers)
        self.batch = make_batch(SCENARIO.events_per_tick)
        self.tick = 0
        for index, kinds in enumerate(SCENARIO.subscribers):

            def on_event(event: object, index: int = index) -> None:
                self.counts[index] += 1

            if explicit:  # the new parameters, passed with their "unused" values
                self.bus.subscribe(on_event, kinds=kinds, priority=0, group=None, group_key=None)
            else:
                self.bus.subscribe(on_event, kinds=kinds)

    def run(self, ticks: int = TICKS) -> None:
        bus = self.bus
        publish = bus.publish
        for _ in range(ticks):
            self.tick += 1
            bus.set_clock(self.tick, self.tick // 100)
            for kind, payload in self.batch:
                publish(kind, payload=payload)
            bus.drain()


@pytest.mark.parametrize("core", core_params())
def test_unused_priorities_leave_s3_routes_unchanged(core: str) -> None:
    plain = S3(core, explicit=False)
    explicit = S3(core, explicit=True)
    plain.run(1)
    explicit.run(1)
    for setup in (plain, explicit):
        subs = setup.bus.subscriptions()
        routes = setup.bus._routes
        assert set(routes) == {kind for kind, _payload in setup.batch}
        for kind, route in routes.items():
            expected = tuple((sub.handler, sub) for sub in subs if sub.matches(kind))
            assert type(route) is tuple
            assert len(route) == len(expected)
            for entry, (handler, sub) in zip(route, expected, strict=True):
                assert type(entry) is tuple and len(entry) == 2
                assert entry[0] is handler and entry[1] is sub  # no wrapper, no dispatcher
    assert plain.counts == explicit.counts
    assert sum(plain.counts) == expected_deliveries(SCENARIO, plain.batch, 1)


@pytest.mark.parametrize("variant", ["plain", "priority-0"])
@pytest.mark.parametrize("core", core_params())
def test_s3_timing(benchmark: Any, core: str, variant: str) -> None:
    setup = S3(core, explicit=variant != "plain")
    benchmark.group = f"S3 routing ({core}): priorities unused (1000 events per call)"
    benchmark.pedantic(setup.run, rounds=30, iterations=1, warmup_rounds=2)
    assert sum(setup.counts) == expected_deliveries(SCENARIO, setup.batch, setup.tick)


@pytest.mark.parametrize("core", core_params())
def test_s3_interleaved_ratio(benchmark: Any, core: str) -> None:
    # Alternate the two buses call by call so machine noise hits both alike;
    # the ratio is recorded for information, never asserted.
    plain = S3(core, explicit=False)
    explicit = S3(core, explicit=True)
    times: dict[str, list[float]] = {"plain": [], "priority-0": []}

    def both() -> None:
        for label, setup in (("plain", plain), ("priority-0", explicit)):
            start = time.perf_counter()
            setup.run()
            times[label].append(time.perf_counter() - start)

    benchmark.group = f"S3 routing ({core}): interleaved pair"
    benchmark.pedantic(both, rounds=20, iterations=1, warmup_rounds=1)
    ratio = median(times["priority-0"]) / median(times["plain"])
    benchmark.extra_info["median_ratio_priority0_to_plain"] = round(ratio, 4)
    assert plain.counts == explicit.counts
