"""S1-S4 for ringbus, its pure twin, the floor and the peers (ns per event).

Each measured call runs 1000 events (10 ticks of 100, or one tick of 1000
for S4) and every benchmark checks the handlers were called exactly as
often as the scenario requires.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from bench_support import implementation_params
from floor import runner_maker
from ringbus._bench import SCENARIOS, expected_deliveries, make_batch

EVENTS_PER_CALL = 1000


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("implementation", implementation_params())
@pytest.mark.usefixtures("needs_peer")
def test_scenario(
    benchmark: Any,
    request: pytest.FixtureRequest,
    implementation: str,
    scenario: str,
) -> None:
    floor: ModuleType | None = (
        request.getfixturevalue("floor_module") if implementation == "floor" else None
    )
    runner = runner_maker(floor)(
        implementation, SCENARIOS[scenario], make_batch(SCENARIOS[scenario].events_per_tick)
    )
    ticks = EVENTS_PER_CALL // runner.scenario.events_per_tick
    calls = [0]

    def run() -> None:
        calls[0] += 1
        runner.run(ticks)

    bench = benchmark
    bench.group = f"{scenario}: {runner.scenario.title} ({EVENTS_PER_CALL} events per call)"
    bench.extra_info["events_per_call"] = EVENTS_PER_CALL
    bench.pedantic(run, rounds=30, iterations=1, warmup_rounds=2)
    assert calls[0] >= 1
    assert runner.delivered() == expected_deliveries(
        runner.scenario, runner.batch, ticks * calls[0]
    )
    if runner.scenario.subscribers:
        assert runner.delivered() > 0
