"""Reaching history through the viewer's API: ranges, paging back, export, rates, health."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ringbus import kinds
from ringbus.sim.health import HealthReporter
from ringbus.viewer import ViewerServer, serve
from test_viewer_api import fetch, publish_world, seqs


@pytest.fixture
def bus(backend: Any) -> Any:
    bus = backend.bus(max_events=1000)
    publish_world(bus, 100)  # seq i+1 has tick i, day i // 10, kind KINDS[i % 4]
    return bus


@pytest.fixture
def server(bus: Any) -> Iterator[ViewerServer]:
    with serve(bus) as viewer:
        yield viewer


def events(server: ViewerServer, query: str) -> dict[str, Any]:
    status, body, _ = fetch(server, "/api/events?" + query)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def test_before_pages_back_through_older_events(server: ViewerServer) -> None:
    assert seqs(events(server, "before=50&limit=5")) == [45, 46, 47, 48, 49]
    assert seqs(events(server, "before=45&limit=5")) == [40, 41, 42, 43, 44]
    assert seqs(events(server, "before=3&limit=5")) == [1, 2]
    assert seqs(events(server, "before=1")) == []
    ticks = events(server, "before=50&limit=3&kinds=TICK")
    assert seqs(ticks) == [41, 45, 49]
    assert {event["kind"] for event in ticks["events"]} == {kinds.TICK}
    assert seqs(events(server, "before=50&limit=2&polity=north")) == [46, 49]


def test_seq_tick_and_day_ranges(server: ViewerServer) -> None:
    assert seqs(events(server, "from_seq=10&to_seq=20")) == list(range(10, 21))
    assert seqs(events(server, "from_seq=95")) == list(range(95, 101))
    assert seqs(events(server, "to_seq=5&limit=3")) == [3, 4, 5]
    body = events(server, "from_tick=5&to_tick=8")
    assert [event["tick"] for event in body["events"]] == [5, 6, 7, 8]
    body = events(server, "from_day=2&to_day=3")
    assert {event["day"] for event in body["events"]} == {2, 3}
    assert len(body["events"]) == 20
    body = events(server, "from_day=9&kinds=TICK")
    assert seqs(body) == [93, 97]
    # follow mode inside a range: the cursor stops at its end
    body = events(server, "since=5&to_seq=10")
    assert seqs(body) == [6, 7, 8, 9, 10] and body["next_since"] == 10
    body = events(server, "since=5&from_seq=50&limit=3")
    assert seqs(body) == [50, 51, 52] and body["gap"] is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from_seq=9&to_seq=3", "parameter 'from_seq' (9) is above 'to_seq' (3)"),
        ("from_tick=2&to_tick=1", "parameter 'from_tick' (2) is above 'to_tick' (1)"),
        ("from_day=x", "parameter 'from_day' must be a whole number"),
        ("before=0", "parameter 'before' must be between 1 and"),
        ("to_day=-1", "parameter 'to_day' must be a whole number"),
    ],
)
def test_bad_ranges_are_400(server: ViewerServer, query: str, message: str) -> None:
    for path in ("/api/events?", "/api/export?", "/api/stream?"):
        status, body, _ = fetch(server, path + query)
        assert status == 400 and message in body["error"], (path, body)


def test_export_is_json_lines_of_the_filter(server: ViewerServer) -> None:
    status, body, head = fetch(server, "/api/export?kinds=TICK&from_seq=20&to_seq=60")
    assert status == 200
    assert head["Content-Type"].startswith("application/x-ndjson")
    assert head["Content-Disposition"] == 'attachment; filename="ringbus-events.jsonl"'
    lines = body.decode().splitlines()
    exported = [json.loads(line) for line in lines]
    assert [event["seq"] for event in exported] == list(range(21, 61, 4))
    same = events(server, "kinds=TICK&from_seq=20&to_seq=60")["events"]
    assert exported == same
    # every retained match, whatever the page's limit
    status, body, _ = fetch(server, "/api/export?limit=1")
    assert len(body.decode().splitlines()) == 100
    assert fetch(server, "/api/export?polity=nowhere")[1] == b""


def test_page_and_static_files_accept_query_strings(server: ViewerServer) -> None:
    for path in ("/?kinds=TICK&from_seq=3", "/index.html?x=1", "/static/viewer.js?v=2"):
        status, body, _ = fetch(server, path)
        assert status == 200 and body, path


def test_rates_per_tick_by_kind(backend: Any) -> None:
    bus = backend.bus(max_events=50)
    for tick in range(100):
        for _ in range(tick % 3 + 1):
            bus.publish(kinds.TICK, tick=tick)
        if tick % 10 == 0:
            bus.publish(kinds.DEPOT_BUILT, tick=tick)
    with serve(bus) as viewer:
        body = fetch(viewer, "/api/rates")[1]
        assert body["basis"] == "retained"
        ticks, series = body["ticks"], body["series"]
        assert ticks == sorted(ticks) and ticks[-1] == 99
        assert series[kinds.TICK][-3:] == [(t % 3) + 1 for t in ticks[-3:]]
        assert series[kinds.DEPOT_BUILT][ticks.index(90)] == 1
        counts = fetch(viewer, "/api/counts")[1]["counts"]
        assert {kind: sum(values) for kind, values in series.items()} == counts


class Transport:
    name = "redis"

    def status(self) -> dict[str, Any]:
        return {"state": "backoff", "sent": 7, "failed": 2, "dropped": 1, "buffered": 3}


def test_health_labels_transports_and_lists_dead_letters(backend: Any) -> None:
    bus = backend.bus(max_events=1000, error_policy="dead_letter", max_retries=0)

    def broken(event: Any) -> None:
        raise RuntimeError(f"cannot handle {event.seq}")

    bus.subscribe(broken, kinds=kinds.DEPOT_BUILT, name="builder")
    HealthReporter(every_ticks=1, transports=[Transport()], timer=None).attach(bus)
    bus.publish(kinds.DEPOT_BUILT, tick=1)
    bus.drain()
    bus.drain()
    with serve(bus) as viewer:
        body = fetch(viewer, "/api/health")[1]
        report = body["report"]
        assert report["transports"] == {
            "redis": {"state": "backoff", "sent": 7, "failed": 2, "dropped": 1, "buffered": 3}
        }
        assert report["bus"]["published"] >= 1 and "pending" in report["bus"]
        letters = body["dead_letters"]
        assert letters["stats"]["dead"] == 1
        (letter,) = letters["recent"]
        assert letter["error_type"] == "RuntimeError"
        assert letter["event"]["kind"] == kinds.DEPOT_BUILT
        assert body["bus"]["published"] == bus.stats()["published"]
    plain = backend.bus(max_events=10)
    with serve(plain) as viewer:
        body = fetch(viewer, "/api/health")[1]
        assert body["report"] is None and body["dead_letters"]["stats"]["dead"] == 0


def test_counts_kept_up_as_the_ring_turns_over(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ringbus.viewer import _server

    monkeypatch.setattr(_server, "_PANEL_AGE", 0.0)  # count again on every ask
    bus = backend.bus(max_events=40)
    names = (kinds.TICK, kinds.DEPOT_BUILT, kinds.DELIVERY_FAILED)
    tick = 0
    with serve(bus) as viewer:
        for round_ in range(25):
            for i in range((round_ * 7) % 31 + 1):
                tick += i % 2
                bus.publish(names[(round_ + i) % 3], tick=tick)
            retained = bus.get_since(0)
            wanted: dict[str, int] = {}
            per_tick: dict[tuple[str, int], int] = {}
            for event in retained:
                wanted[event.kind] = wanted.get(event.kind, 0) + 1
                per_tick[event.kind, event.tick] = per_tick.get((event.kind, event.tick), 0) + 1
            assert fetch(viewer, "/api/counts")[1]["counts"] == wanted
            rates = fetch(viewer, "/api/rates")[1]
            got = {
                (kind, t): n
                for kind, values in rates["series"].items()
                for t, n in zip(rates["ticks"], values, strict=True)
                if n
            }
            assert got == per_tick


def journaled(backend: Any, path: Any, count: int) -> Any:
    from ringbus.journal import Journal

    bus = backend.bus(max_events=20)
    journal = Journal(path)
    journal.attach(bus)
    publish_world(bus, count)
    bus.drain()
    return bus, journal


def test_looking_back_past_the_ring_reads_the_journal(backend: Any, tmp_path: Any) -> None:
    path = tmp_path / "run.jsonl"
    bus, journal = journaled(backend, path, 100)  # the ring keeps 81-100
    try:
        with serve(bus, journal=path) as viewer:
            body = events(viewer, "before=81&limit=5")
            assert seqs(body) == [76, 77, 78, 79, 80]
            assert {event["source"] for event in body["events"]} == {"journal"}
            assert body["journal"] is True
            same = [event.to_dict() for event in bus.get_since(0)]  # not there any more
            assert same[0]["seq"] == 81
            # a page that spans both: the journal's part first, then the ring's
            body = events(viewer, "before=85&limit=10")
            assert seqs(body) == list(range(75, 85))
            assert [event.get("source") for event in body["events"]] == ["journal"] * 6 + [None] * 4
            # the same filters apply
            body = events(viewer, "before=81&limit=3&kinds=TICK&polity=north")
            assert seqs(body) == [49, 61, 73]
            assert {e["kind"] for e in body["events"]} == {kinds.TICK}
            body = events(viewer, "from_seq=10&to_seq=12")
            assert seqs(body) == [10, 11, 12]
            first = body["events"][0]
            assert first["source"] == "journal"
            assert (first["kind"], first["tick"], first["day"], first["polity_id"]) == (
                kinds.DELIVERY_COMPLETED,
                9,
                0,
                "north",
            )
            assert first["payload"] == {"index": 9, "label": "item 9", "ok": False}
            # the newest look and following stay on the ring
            assert seqs(events(viewer, "limit=3")) == [98, 99, 100]
            assert seqs(events(viewer, "since=95")) == [96, 97, 98, 99, 100]
        with serve(bus) as plain:
            body = events(plain, "before=81&limit=5")
            assert body["events"] == [] and body["journal"] is False
    finally:
        journal.close()
    with pytest.raises(ValueError, match="is not a file"):
        serve(bus, journal=tmp_path / "missing.jsonl")
