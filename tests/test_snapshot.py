"""Bus snapshots and determinism (SPEC §4, §5), on both cores."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import ringbus
from ringbus import kinds


def world_step(bus: Any, tick: int, rng: random.Random) -> None:
    bus.set_clock(tick, tick // 10)
    for _ in range(rng.randrange(1, 6)):
        bus.publish(
            rng.choice(kinds.CORE_KINDS),
            polity_id=rng.choice(["p1", "p2", None]),
            payload={"n": rng.randrange(100), "ok": rng.random() < 0.5},
        )


def run(backend: Any, ticks: int, seed: int = 3, **options: Any) -> list[str]:
    bus = backend.bus(**options)
    stream: list[str] = []
    bus.subscribe(lambda e: stream.append(json.dumps(e.to_dict(), sort_keys=True)))
    rng = random.Random(seed)
    for tick in range(ticks):
        world_step(bus, tick, rng)
        bus.drain()
    return stream


def test_same_steps_same_stream(backend: Any) -> None:
    assert run(backend, 60) == run(backend, 60)
    assert run(backend, 60) != run(backend, 60, seed=4)


@pytest.mark.c_extension
def test_same_stream_on_both_cores(both_backends: Any) -> None:
    streams = {json.dumps(run(b, 80, max_events=16)) for b in both_backends}
    assert len(streams) == 1


@pytest.mark.parametrize("cut", [0, 1, 17, 39])
def test_snapshot_restore_continues_identically(backend: Any, cut: int) -> None:
    full = run(backend, 40)
    rng = random.Random(3)
    bus = backend.bus()
    first: list[str] = []
    bus.subscribe(lambda e: first.append(json.dumps(e.to_dict(), sort_keys=True)))
    for tick in range(cut):
        world_step(bus, tick, rng)
        bus.drain()
    world_step(bus, cut, rng)  # events of this tick still pending at the snapshot
    snapshot = json.loads(json.dumps(bus.snapshot()))
    assert "debug_events" not in snapshot
    restored = backend.EventBus.from_snapshot(snapshot)
    second: list[str] = []
    restored.subscribe(lambda e: second.append(json.dumps(e.to_dict(), sort_keys=True)))
    restored.drain()
    for tick in range(cut + 1, 40):
        world_step(restored, tick, rng)
        restored.drain()
    assert first + second == full


def test_snapshot_contents_and_debug_events(backend: Any) -> None:
    bus = backend.bus(snapshot_debug_events=3)
    bus.set_clock(5, 1)
    for i in range(5):
        bus.publish("A", payload={"i": i})
    bus.drain()
    snap = bus.snapshot()
    assert (snap["seq"], snap["tick"], snap["day"], snap["pending"]) == (5, 5, 1, [])
    assert "ring" not in snap and "debug_events" not in snap
    assert [e["seq"] for e in bus.snapshot(debug_events=True)["debug_events"]] == [3, 4, 5]
    assert [e["seq"] for e in bus.snapshot(debug_events=2)["debug_events"]] == [4, 5]
    json.dumps(bus.snapshot(debug_events=True), allow_nan=False)


def test_snapshot_hooks_travel(backend: Any) -> None:
    counts = {"n": 0}
    bus = backend.bus()
    bus.subscribe(lambda e: counts.__setitem__("n", counts["n"] + 1))
    bus.add_snapshot_hook("counter", lambda: dict(counts), counts.update)
    for _ in range(4):
        bus.publish("A")
    bus.drain()
    snap = json.loads(json.dumps(bus.snapshot()))
    assert snap["hooks"] == {"counter": {"n": 4}}

    other = {"n": 0}
    fresh = backend.bus()
    fresh.add_snapshot_hook("counter", lambda: dict(other), other.update)
    fresh.restore(snap)
    assert other == {"n": 4}
    assert fresh.publish("A") == 5


def test_restore_errors(backend: Any) -> None:
    bus = backend.bus()
    bus.add_snapshot_hook("kpi", dict, lambda state: None)
    with pytest.raises(ValueError, match="already registered"):
        bus.add_snapshot_hook("kpi", dict, lambda state: None)
    snap = bus.snapshot()
    used = backend.bus()
    used.publish("A")
    with pytest.raises(ValueError, match="fresh bus"):
        used.restore(snap)
    with pytest.raises(ValueError, match="not registered on this bus"):
        backend.bus().restore(snap)
    with pytest.raises(ValueError, match="not a ringbus snapshot"):
        backend.bus().restore({"format": "x"})
    with pytest.raises(ValueError, match="unsupported snapshot version"):
        backend.bus().restore({**snap, "version": 99})
    bad = backend.bus()
    bad.add_snapshot_hook("bad", lambda: {"x": object()}, print)
    with pytest.raises(TypeError, match="hook 'bad' returned state that is not JSON"):
        bad.snapshot()
    with pytest.raises(ValueError, match="unknown EventBusConfig options: nope"):
        ringbus.EventBus.from_snapshot({**snap, "hooks": {}, "config": {"nope": 1}})
