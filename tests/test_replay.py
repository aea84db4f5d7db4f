"""Replay: a journal fed back through a bus rebuilds the subscribers' state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ringbus import kinds
from ringbus.demo import DemoWorld
from ringbus.journal import Journal, JournalError, read_journal, replay_journal
from ringbus.sim.evidence import EVIDENCE_RAISED, EvidenceSubscriber
from ringbus.sim.kpi import KpiSubscriber

WORLD = {"events_per_tick": 10, "ticks_per_day": 8}


def attach_subscribers(bus: Any, world: DemoWorld | None = None) -> tuple[Any, Any]:
    kpi = KpiSubscriber()
    kpi.attach(bus)
    rules = world.evidence_rules(window_days=3) if world is not None else None
    evidence = EvidenceSubscriber(rules) if rules is not None else EvidenceSubscriber()
    evidence.attach(bus)
    return kpi, evidence


def live_demo_run(backend: Any, path: Path, days: int = 6) -> tuple[Any, Any, Any]:
    bus = backend.bus(max_events=100_000)
    world = DemoWorld(bus, seed=5, **WORLD)
    kpi, evidence = attach_subscribers(bus, world)
    with Journal(path) as journal:
        journal.attach(bus)
        world.run(days)
        bus.drain()  # what the last drain's handlers published reaches the journal too
    return bus, kpi, evidence


def test_replaying_a_demo_journal_rebuilds_kpi_and_evidence_state(
    backend: Any, tmp_path: Path
) -> None:
    path = tmp_path / "demo.jsonl"
    live_bus, live_kpi, live_evidence = live_demo_run(backend, path)
    assert live_evidence.raised > 0, "the run must raise evidence for this test to mean much"
    raised_events = [e for e in live_bus.get_since(0) if e.kind == EVIDENCE_RAISED]
    assert len(raised_events) == live_evidence.raised

    bus = backend.bus(max_events=100_000)
    rules_world = DemoWorld(backend.bus(), seed=5, **WORLD)  # only for its evidence rules
    kpi, evidence = attach_subscribers(bus, rules_world)
    report = replay_journal(path, bus)

    assert kpi.summary() == live_kpi.summary()
    assert kpi.save_state() == live_kpi.save_state()
    assert evidence.items() == live_evidence.items()
    assert evidence.save_state() == live_evidence.save_state()
    # The evidence subscriber's publishes were matched to the journal's copies, not duplicated.
    assert report.republished == live_evidence.raised and report.unmatched == 0
    assert [e.to_dict() for e in bus.get_since(0)] == [e.to_dict() for e in live_bus.get_since(0)]
    assert bus.latest_seq() == live_bus.latest_seq() == report.last_seq
    assert report.events == live_bus.latest_seq() and not report.torn
    assert "publish" not in vars(bus)  # the bus publishes normally again
    assert bus.publish(kinds.TICK) == live_bus.latest_seq() + 1


def test_replay_matches_the_live_run_on_both_cores(
    both_backends: tuple[Any, ...], tmp_path: Path
) -> None:
    summaries = []
    for backend in both_backends:
        path = tmp_path / f"{backend.name}.jsonl"
        live_demo_run(backend, path, days=3)
        bus = backend.bus(max_events=100_000)
        kpi, evidence = attach_subscribers(bus, DemoWorld(backend.bus(), seed=5, **WORLD))
        replay_journal(path, bus)
        summaries.append((path.read_bytes(), kpi.save_state(), evidence.save_state()))
    assert all(summary == summaries[0] for summary in summaries)


class Doubler:
    """Publishes a derived event for every DELIVERY_FAILED and remembers the seq it got."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.seen: list[int] = []
        self.derived: list[int] = []
        bus.subscribe(self.handle, name="doubler")

    def handle(self, event: Any) -> None:
        self.seen.append(event.seq)
        if event.kind == kinds.DELIVERY_FAILED:
            self.derived.append(
                self.bus.publish("ALERT", payload={"about": event.seq}, ward_id=event.ward_id)
            )


def small_world(bus: Any, ticks: int = 12) -> None:
    for tick in range(ticks):
        bus.set_clock(tick, tick // 5)
        for i in range(4):
            kind = kinds.DELIVERY_FAILED if (tick + i) % 3 == 0 else kinds.DELIVERY_COMPLETED
            bus.publish(kind, ward_id=f"w{i % 2}", payload={"i": i})
        bus.drain()
    bus.drain()


def record(backend: Any, path: Path, **journal_options: Any) -> Doubler:
    bus = backend.bus()
    doubler = Doubler(bus)
    with Journal(path, **journal_options) as journal:
        journal.attach(bus)
        small_world(bus)
    return doubler


def test_events_published_by_handlers_are_delivered_once_with_their_seqs(
    backend: Any, tmp_path: Path
) -> None:
    path = tmp_path / "small.jsonl"
    live = record(backend, path)
    bus = backend.bus()
    replayed = Doubler(bus)
    report = replay_journal(path, bus)
    assert replayed.seen == live.seen
    assert replayed.derived == live.derived and all(live.derived)
    assert report.republished == len(live.derived) and report.unmatched == 0
    alerts = [e.seq for e in bus.get_since(0) if e.kind == "ALERT"]
    assert alerts == live.derived  # no duplicates


def test_a_filtered_journal_replays_with_gaps_and_counts_unmatched_publishes(
    backend: Any, tmp_path: Path
) -> None:
    path = tmp_path / "failed.jsonl"
    live = record(backend, path, kinds={kinds.DELIVERY_FAILED})
    bus = backend.bus()
    replayed = Doubler(bus)
    report = replay_journal(path, bus)
    failed = [n for n, r in read_journal(path)]
    assert report.events == len(failed) == len(live.derived)
    assert report.unmatched == len(live.derived) and report.republished == 0
    assert replayed.derived == [0] * len(live.derived)
    assert bus.latest_seq() == report.last_seq


def test_replay_refuses_a_tampered_journal_unless_told(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    record(backend, path)
    lines = path.read_bytes().splitlines(keepends=True)
    record_line = json.loads(lines[4])
    record_line["payload"]["i"] = 99
    lines[4] = (json.dumps(record_line, separators=(",", ":")) + "\n").encode()
    path.write_bytes(b"".join(lines))
    with pytest.raises(JournalError, match="line 5: chain"):
        replay_journal(path, backend.bus())
    report = replay_journal(path, backend.bus(), verify=False)
    assert report.events == len(list(read_journal(path))) == report.last_seq


def test_replay_leaves_out_a_torn_last_line(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    record(backend, path)
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"mark":"seal"' in lines[-1]
    events = len(list(read_journal(path)))
    path.write_bytes(b"".join(lines[:-2]) + lines[-2][:-30])  # the last event torn, no seal
    bus = backend.bus()
    report = replay_journal(path, bus)
    assert report.torn and not report.sealed
    assert report.events == events - 1 == bus.latest_seq()


def test_replay_into_a_bus_that_is_ahead_names_the_line(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    record(backend, path)
    bus = backend.bus()
    for _ in range(3):
        bus.publish(kinds.TICK)
    with pytest.raises(ValueError, match="line 2: event seq 1 is not after latest_seq 3"):
        replay_journal(path, bus)
    assert "publish" not in vars(bus)


def test_a_subscriber_bypassing_bus_publish_is_detected(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    record(backend, path)
    bus = backend.bus()
    sneaky_publish = bus.publish  # bound before the replay: not redirected

    def sneaky(event: Any) -> None:
        if event.kind == kinds.DELIVERY_FAILED:
            sneaky_publish("ALERT")

    bus.subscribe(sneaky)
    with pytest.raises(JournalError, match=r"without going through bus\.publish"):
        replay_journal(path, bus)


def test_cli_replay_prints_the_rebuilt_kpis(
    backend: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ringbus.__main__ import main as ringbus_main

    path = tmp_path / "demo.jsonl"
    _bus, live_kpi, _evidence = live_demo_run(backend, path, days=2)
    assert ringbus_main(["journal", "replay", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kpi"] == json.loads(json.dumps(live_kpi.summary()))
    assert out["replay"]["events"] == out["replay"]["last_seq"]
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[3]
    path.write_bytes(b"".join(lines))
    assert ringbus_main(["journal", "replay", str(path)]) == 1
    err = capsys.readouterr().err
    assert "refusing to replay" in err and "add --no-verify" in err
    assert "verify=False" not in err  # the command line's words, not the library's
    assert ringbus_main(["journal", "replay", "--no-verify", str(path)]) == 0
    assert ringbus_main(["journal", "replay", str(tmp_path / "missing.jsonl")]) == 2
