"""The demo world: determinism, snapshot/restore equivalence, the CLI (SPEC §4-§6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import ringbus
from ringbus import kinds
from ringbus.__main__ import main as cli_main
from ringbus.demo import DemoWorld, StreamHasher
from ringbus.sim.evidence import EVIDENCE_RAISED, EvidenceSubscriber
from ringbus.sim.incidents import IncidentLog
from ringbus.sim.kpi import KpiSubscriber


def main(argv: list[str]) -> int:
    """``ringbus demo ARGV``, through the command line's one parser."""
    return cli_main(["demo", *argv])


SRC = str(Path(ringbus.__file__).resolve().parent.parent)
WORLD = {"events_per_tick": 12, "ticks_per_day": 10}


class Stack:
    """A bus with the world and every subscriber attached, as a user would wire it."""

    def __init__(self, backend: Any, seed: int = 11) -> None:
        self.bus = backend.bus(max_events=200_000)
        self.world = DemoWorld(self.bus, seed=seed, **WORLD)
        self.kpi = KpiSubscriber(history_days=30)
        self.kpi.attach(self.bus)
        self.evidence = EvidenceSubscriber(self.world.evidence_rules(window_days=3))
        self.evidence.attach(self.bus)
        self.incidents = IncidentLog()
        self.incidents.attach(self.bus)
        self.hasher = StreamHasher()
        self.hasher.attach(self.bus)

    def stream(self, after: int = 0) -> list[dict[str, Any]]:
        return [event.to_dict() for event in self.bus.get_since(after)]

    def state(self) -> dict[str, Any]:
        return {
            "kpi": self.kpi.summary(last_days=30),
            "evidence": self.evidence.items(),
            "incidents": [i.to_dict() for i in self.incidents.all()],
            "hash": self.hasher.hexdigest,
            "seq": self.bus.latest_seq(),
        }


def env_for(backend: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    if backend.name == "python":
        env["RINGBUS_NO_EXTENSIONS"] = "1"
    else:
        env.pop("RINGBUS_NO_EXTENSIONS", None)
    return env


def test_same_seed_same_stream_different_seed_different(backend: Any) -> None:
    runs = []
    for seed in (11, 11, 12):
        stack = Stack(backend, seed)
        stack.world.run(3)
        runs.append((stack.stream(), stack.state()))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    assert runs[0][1]["hash"] != runs[2][1]["hash"]
    stream = runs[0][0]
    seen = {event["kind"] for event in stream}
    assert seen >= set(kinds.CORE_KINDS) - {kinds.TICK}
    assert EVIDENCE_RAISED in seen
    assert [event["seq"] for event in stream] == list(range(1, len(stream) + 1))


def test_world_loop_and_arguments(backend: Any) -> None:
    bus = backend.bus()
    world = DemoWorld(bus, seed=1, events_per_tick=3, ticks_per_day=4, snapshot_name=None)
    assert world.step() == 0 and world.step() == 1
    assert (bus.tick, bus.day, world.day) == (1, 0, 0)
    days: list[int] = []
    world.run(2, progress=days.append)
    assert days == [1, 2] and world.next_tick == 10 and world.day == 2
    assert bus.pending_count() <= 1 and "demo" not in bus.snapshot()["hooks"]
    rollovers = bus.get_since(0, kinds={kinds.DAY_ROLLOVER})
    assert [(e.tick, e.day, e.payload_dict()) for e in rollovers] == [
        (3, 0, {"closed_day": 0}),
        (7, 1, {"closed_day": 1}),
    ]
    with pytest.raises(ValueError, match="events_per_tick must be between"):
        DemoWorld(bus, events_per_tick=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        DemoWorld(bus, seed="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="days must be"):
        world.run(-1)
    with pytest.raises(ValueError, match="malformed demo world state"):
        world.load_state({"rng": [3, [], None]})


@pytest.mark.parametrize("cut_day", [1, 3])
def test_snapshot_restore_continues_exactly(backend: Any, cut_day: int) -> None:
    total_days = 5
    straight = Stack(backend)
    straight.world.run(total_days)

    first = Stack(backend)
    first.world.run(cut_day)
    snapshot = json.loads(json.dumps(first.bus.snapshot()))
    assert set(snapshot["hooks"]) == {"demo", "kpi", "evidence", "incidents", "stream_hash"}
    assert snapshot["scheduled"]["entries"]  # construction and scouting still under way
    cut_seq = snapshot["seq"]

    second = Stack(backend, seed=999)  # the seed comes back from the snapshot
    second.bus.restore(snapshot)
    second.world.run(total_days - cut_day)

    assert first.stream() + second.stream(cut_seq) == straight.stream()
    assert second.state() == straight.state()


def test_snapshot_restore_in_a_fresh_process(backend: Any, tmp_path: Path) -> None:
    straight = Stack(backend)
    straight.world.run(4)
    first = Stack(backend)
    first.world.run(2)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(first.bus.snapshot()))
    script = textwrap.dedent(
        f"""
        import json, sys
        import ringbus
        from ringbus.demo import DemoWorld, StreamHasher
        from ringbus.sim.evidence import EvidenceSubscriber
        from ringbus.sim.incidents import IncidentLog
        from ringbus.sim.kpi import KpiSubscriber
        assert ringbus.BACKEND == {backend.name!r}, ringbus.BACKEND
        snapshot = json.load(open(sys.argv[1]))
        bus = ringbus.EventBus(ringbus.EventBusConfig.from_dict(snapshot["config"]))
        world = DemoWorld(bus, **{WORLD!r})
        kpi = KpiSubscriber(history_days=30); kpi.attach(bus)
        evidence = EvidenceSubscriber(world.evidence_rules(window_days=3)); evidence.attach(bus)
        incidents = IncidentLog(); incidents.attach(bus)
        hasher = StreamHasher(); hasher.attach(bus)
        bus.restore(snapshot)
        world.run(2)
        json.dump({{
            "stream": [e.to_dict() for e in bus.get_since(snapshot["seq"])],
            "state": {{
                "kpi": kpi.summary(last_days=30),
                "evidence": evidence.items(),
                "incidents": [i.to_dict() for i in incidents.all()],
                "hash": hasher.hexdigest,
                "seq": bus.latest_seq(),
            }},
        }}, sys.stdout)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        env=env_for(backend),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert first.stream() + out["stream"] == straight.stream()
    assert out["state"] == json.loads(json.dumps(straight.state()))


# -- the command line ---------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--days", "4", "--events-per-tick", "8", "--stream-hash")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0
    assert "KPIs per polity" in out and "TOTAL" in out and "evidence raised:" in out
    assert "stream sha256: " in out
    assert "events/s" in err
    code, again, _ = run_cli(capsys, *argv)
    assert again == out
    _, other, _ = run_cli(capsys, *argv, "--seed", "2")
    assert other != out
    digest = [line for line in out.splitlines() if line.startswith("stream sha256")]
    other_digest = [line for line in other.splitlines() if line.startswith("stream sha256")]
    assert digest != other_digest


def test_cli_json_matches_a_library_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--days", "3", "--seed", "4", "--json", "--quiet")
    assert code == 0 and err == ""
    document = json.loads(out)
    bus = ringbus.EventBus()
    world = DemoWorld(bus, seed=4)
    kpi = KpiSubscriber()
    kpi.attach(bus)
    evidence = EvidenceSubscriber(world.evidence_rules())
    evidence.attach(bus)
    world.run(3)
    assert document["kpis"] == json.loads(json.dumps(kpi.summary()))
    assert document["evidence"] == evidence.items()
    assert document["latest_seq"] == bus.latest_seq() and document["days"] == 3


def test_cli_snapshot_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / "run.json"
    common = ("--events-per-tick", "6", "--ticks-per-day", "12", "--seed", "3", "--json")
    _, straight, _ = run_cli(capsys, "--days", "6", "--stream-hash", *common)
    code, _, err = run_cli(capsys, "--days", "2", "--stream-hash", "--snapshot", str(snap), *common)
    assert code == 0 and "snapshot written" in err
    code, resumed, _ = run_cli(capsys, "--days", "4", "--resume", str(snap), "--json")
    assert code == 0
    assert json.loads(resumed) == json.loads(straight)


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def refused(*argv: str) -> str:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    assert "--days: must be >= 0, got -1" in refused("--days", "-1")
    assert "--events-per-tick: must be >= 1, got 0" in refused("--events-per-tick", "0")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert "not a snapshot written by 'ringbus demo'" in refused("--resume", str(bad))
    assert "cannot read snapshot" in refused("--resume", str(tmp_path / "missing.json"))
    bad.write_text("{")
    assert "is not JSON" in refused("--resume", str(bad))
    assert main(["--help"]) == 0
    assert "--stream-hash" in capsys.readouterr().out


def test_cli_through_the_dispatcher(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--days", "1", "--quiet"]) == 0
    assert "KPIs per polity" in capsys.readouterr().out
    assert cli_main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_python_m_ringbus_demo_defaults(backend: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ringbus", "demo", "--stream-hash"],
        env=env_for(backend),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "60 days x 24 ticks" in result.stdout
    assert f"backend {backend.name}" in result.stderr
    assert "events/s" in result.stderr


def test_cli_serve_shows_the_viewer(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[Any] = []
    real_step = DemoWorld.step

    def step_and_fetch(self: DemoWorld) -> int:
        tick = real_step(self)
        if tick == 5:  # the viewer is up while the world runs
            err = capsys.readouterr().err
            url = err.split("viewer at ")[1].split()[0]
            with urllib.request.urlopen(url.rstrip("/") + "/api/kpis", timeout=10) as response:
                fetched.append(json.loads(response.read()))
        return tick

    monkeypatch.setattr(DemoWorld, "step", step_and_fetch)
    code = main(["--days", "1", "--serve", "0", "--exit-when-done", "--tick-delay", "0", "--quiet"])
    assert code == 0
    assert fetched and "totals" in json.dumps(fetched[0])


def test_cli_serve_slows_the_loop_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    argv = ["--days", "1", "--ticks-per-day", "4", "--events-per-tick", "1", "--serve", "0"]
    argv.append("--exit-when-done")
    assert main(argv) == 0
    assert time.perf_counter() - started >= 4 * 0.05
    assert "viewer at http://127.0.0.1:" in capsys.readouterr().err


def test_cli_interrupt_reports_and_skips_the_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = DemoWorld.step

    def step_then_interrupt(self: DemoWorld) -> int:
        tick = real_step(self)
        if tick == 30:
            raise KeyboardInterrupt
        return tick

    monkeypatch.setattr(DemoWorld, "step", step_then_interrupt)
    snap = tmp_path / "snap.json"
    code, out, err = run_cli(capsys, "--days", "3", "--snapshot", str(snap))
    assert code == 130
    assert "interrupted" in err and "no snapshot was written" in err
    assert "KPIs per polity" in out and "1 day x 24 ticks" in out
    assert not snap.exists()


def test_both_cores_give_the_same_stream(both_backends: Any) -> None:
    results = []
    for backend in both_backends:
        stack = Stack(backend, seed=21)
        stack.world.run(3)
        results.append((stack.stream(), stack.state()))
    assert all(result == results[0] for result in results)
