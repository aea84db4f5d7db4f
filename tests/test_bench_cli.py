"""``python -m ringbus bench`` and the benchmark workload it shares with benchmarks/."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from ringbus import cli
from ringbus._bench import (
    SCENARIOS,
    available_implementations,
    check_deliveries,
    expected_deliveries,
    make_batch,
    make_runner,
)
from ringbus.cli import main as cli_main
from ringbus.kinds import CORE_KINDS


def implementation_for(backend: Any) -> str:
    return "ringbus" if backend.name == "cython" else "ringbus pure"


def test_bench_is_a_registered_command() -> None:
    assert cli.COMMANDS["bench"][0] == "bench"
    assert "bench" in cli.build_parser().format_help()


def test_workload_is_fixed_and_sim_like() -> None:
    batch = make_batch(100)
    assert batch == make_batch(100)
    assert len(batch) == 100 and len(make_batch(1000)) == 1000
    assert {kind for kind, _ in batch} <= set(CORE_KINDS)
    assert all(isinstance(payload, dict) and len(payload) == 3 for _, payload in batch)
    assert SCENARIOS["S1"].subscribers == ()
    assert SCENARIOS["S2"].subscribers == (None,)
    pairs = SCENARIOS["S3"].subscribers
    assert len(pairs) == 10 and all(len(kinds or ()) == 2 for kinds in pairs)
    assert {kind for kinds in pairs for kind in kinds or ()} == set(CORE_KINDS)
    assert SCENARIOS["S4"].events_per_tick == 1000


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_runner_delivers_exactly_what_the_scenario_requires(backend: Any, scenario: str) -> None:
    runner = make_runner(implementation_for(backend), scenario)
    runner.run(3)
    check_deliveries(runner, 3)
    bus: Any = runner.target
    events = 3 * SCENARIOS[scenario].events_per_tick
    assert bus.latest_seq() == events
    assert bus.stats()["delivered"] == expected_deliveries(runner.scenario, runner.batch, 3)
    first = bus.get_since(0, limit=1)[0]
    assert (first.tick, first.day, first.polity_id, first.tags) == (1, 0, None, ())
    assert len(first.payload) == 3


def test_check_deliveries_catches_a_wrong_count(backend: Any) -> None:
    runner = make_runner(implementation_for(backend), "S2")
    runner.run(1)
    with pytest.raises(AssertionError, match="100 deliveries after 2 ticks, expected 200"):
        check_deliveries(runner, 2)


def test_bench_prints_the_table(backend: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["bench", "--rounds", "1", "--scenarios", "s1,S3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "S1 ns/event" in out and "S3 ns/event" in out and "S2 ns/event" not in out
    rows = {line.split("  ")[0].strip() for line in out.splitlines()}
    assert "ringbus pure" in rows
    if backend.name == "cython":
        assert "ringbus" in rows


def test_missing_peers_are_skipped_with_a_note(
    backend: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for package in ("psygnal", "pyee", "blinker"):
        monkeypatch.setitem(sys.modules, package, None)  # import now fails: "not installed"
    names, notes = available_implementations()
    assert names[-1] == "ringbus pure"
    assert "psygnal skipped: not installed (pip install psygnal)" in notes
    assert cli_main(["bench", "--rounds", "1", "--scenarios", "S2"]) == 0
    out = capsys.readouterr().out
    assert "note: pyee skipped: not installed" in out
    rows = {line.split("  ")[0].strip() for line in out.splitlines()}
    assert not rows & {"psygnal emit_fast", "psygnal emit", "pyee", "blinker"}


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--scenarios", "S9"]) == 2
    assert "unknown scenarios S9" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown implementation 'nanobus'"):
        make_runner("nanobus", "S1")
    with pytest.raises(ValueError, match="unknown scenario 'S0'"):
        make_runner("ringbus pure", "S0")


def test_command_line_runs_from_the_package() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "ringbus", "bench", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ns per published event" in " ".join(result.stdout.split())


def test_the_package_ships_no_lab() -> None:
    """The floor bus and its compile step live in benchmarks/, not in the wheel."""
    import ringbus._bench as bench

    assert not hasattr(bench, "FLOOR_SOURCE") and not hasattr(bench, "build_floor")
    assert "floor" not in bench.IMPLEMENTATIONS
    assert "--no-floor" not in cli.build_parser().format_help()
