"""The viewer's JSON API and stream, against a real server over real HTTP, on both cores."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ringbus
from ringbus import kinds
from ringbus.cli import main as cli_main
from ringbus.viewer import CONTENT_SECURITY_POLICY, MAX_LIMIT, ViewerServer, serve

POLITIES = ("north", "south", "east")
WARDS = ("w1", "w2")
KINDS = (kinds.TICK, kinds.DELIVERY_COMPLETED, kinds.DELIVERY_FAILED, kinds.DEPOT_BUILT)


def publish_world(bus: Any, count: int, start: int = 0) -> None:
    """Publish ``count`` events with fields derived from their index."""
    for i in range(start, start + count):
        bus.publish(
            KINDS[i % len(KINDS)],
            tick=i,
            day=i // 10,
            polity_id=POLITIES[i % 3],
            ward_id=WARDS[i % 2],
            actor_id=f"actor-{i % 5}",
            subject_id=f"depot-{i % 7}",
            payload={"index": i, "label": f"item {i}", "ok": i % 2 == 0},
        )


def fetch(server: ViewerServer, path: str, **headers: str) -> tuple[int, Any, Any]:
    """GET ``path``; return (status, decoded JSON body or text, headers)."""
    request = urllib.request.Request(server.url.rstrip("/") + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, head = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, body, head = error.code, error.read(), error.headers
        error.close()
    ctype = head.get("Content-Type", "")
    return status, json.loads(body) if ctype.startswith("application/json") else body, head


def events(server: ViewerServer, **params: Any) -> dict[str, Any]:
    status, body, _ = fetch(server, "/api/events?" + urllib.parse.urlencode(params))
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def plain(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the run fields every JSON response carries."""
    assert isinstance(body["run_id"], str) and isinstance(body["finished"], bool)
    return {key: item for key, item in body.items() if key not in ("run_id", "finished")}


def seqs(body: dict[str, Any]) -> list[int]:
    return [event["seq"] for event in body["events"]]


@pytest.fixture
def bus(backend: Any) -> Any:
    bus = backend.bus(max_events=1000)
    publish_world(bus, 100)
    return bus


@pytest.fixture
def server(bus: Any) -> Iterator[ViewerServer]:
    with serve(bus, kpis=lambda: {"deliveries": {"completed": 3}, "days": [1, 2]}) as viewer:
        yield viewer


# -- serving -----------------------------------------------------------------


def test_serve_binds_loopback_and_closes(bus: Any) -> None:
    viewer = serve(bus)
    assert viewer.host == "127.0.0.1"
    assert viewer.port > 0
    assert viewer.url == f"http://127.0.0.1:{viewer.port}/"
    assert fetch(viewer, "/api/events")[0] == 200
    with viewer:
        pass
    assert viewer.closed
    viewer.close()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", viewer.port), timeout=2):
        pass


def test_serve_rejects_bad_arguments(bus: Any) -> None:
    with pytest.raises(TypeError, match="needs an event bus"):
        serve(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="kpis must be a callable"):
        serve(bus, kpis={"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port must be an int from 0 to 65535"):
        serve(bus, port=70000)
    with pytest.raises(TypeError, match="host must be a non-empty str"):
        serve(bus, host="")


def test_page_and_static_files_carry_security_headers(server: ViewerServer) -> None:
    for path, ctype in (
        ("/", "text/html"),
        ("/static/viewer.js", "text/javascript"),
        ("/static/viewer.css", "text/css"),
    ):
        status, body, head = fetch(server, path)
        assert status == 200
        assert head["Content-Type"].startswith(ctype)
        assert head["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert head["X-Content-Type-Options"] == "nosniff"
        assert body
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    page = fetch(server, "/")[1].decode()
    assert "<script>" not in page and "style=" not in page  # nothing inline for the CSP to allow
    js = fetch(server, "/static/viewer.js")[1].decode()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


def test_unknown_path_is_404_and_writes_are_405(server: ViewerServer) -> None:
    status, body, _ = fetch(server, "/nope")
    assert status == 404 and "no such page" in body["error"]
    request = urllib.request.Request(server.url + "api/events", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 405
    assert caught.value.headers["Allow"] == "GET, HEAD"
    assert "read-only" in json.loads(caught.value.read())["error"]
    caught.value.close()
    for method in ("PUT", "DELETE"):
        request = urllib.request.Request(server.url + "api/events", method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 405
        caught.value.close()


def test_head_requests_send_headers_only(server: ViewerServer) -> None:
    for path, ctype in (("/", "text/html"), ("/api/events", "application/json")):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            connection.request("HEAD", path)
            response = connection.getresponse()
            assert response.status == 200
            assert response.headers["Content-Type"].startswith(ctype)
            assert int(response.headers["Content-Length"]) > 0
            assert response.read() == b""
        finally:
            connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("HEAD", "/api/stream")
        response = connection.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
    finally:
        connection.close()


def test_foreign_host_header_is_refused(server: ViewerServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", "/api/events", headers={"Host": "evil.example:80"})
        response = connection.getresponse()
        assert response.status == 403
        assert "Host" in json.loads(response.read())["error"]
    finally:
        connection.close()
    assert fetch(server, "/api/events", Host=f"localhost:{server.port}")[0] == 200
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", "/api/events", headers={"Host": "127.0.0.1:1"})
        assert connection.getresponse().status == 403  # wrong port: another origin
    finally:
        connection.close()


def test_serve_on_localhost(bus: Any) -> None:
    with serve(bus, host="localhost") as viewer:
        assert viewer.url == f"http://localhost:{viewer.port}/"
        assert fetch(viewer, "/api/events?limit=1")[0] == 200


# -- /api/events --------------------------------------------------------------


def test_latest_events_by_default(server: ViewerServer) -> None:
    body = events(server)
    assert seqs(body) == list(range(1, 101))  # default limit (100) covers all
    assert body["latest_seq"] == 100 and body["oldest_seq"] == 1
    assert body["next_since"] == 100 and body["gap"] is None and body["more"] is False
    first = body["events"][0]
    assert first == {
        "seq": 1,
        "tick": 0,
        "day": 0,
        "kind": kinds.TICK,
        "polity_id": "north",
        "ward_id": "w1",
        "actor_id": "actor-0",
        "subject_id": "depot-0",
        "payload": {"index": 0, "label": "item 0", "ok": True},
        "tags": [],
    }
    assert seqs(events(server, limit=5)) == [96, 97, 98, 99, 100]


def test_since_pages_forward_with_more_and_next_since(server: ViewerServer) -> None:
    got: list[int] = []
    since = 0
    while True:
        body = events(server, since=since, limit=30)
        got += seqs(body)
        since = body["next_since"]
        if not body["more"]:
            break
    assert got == list(range(1, 101))
    assert events(server, since=100)["events"] == []
    assert events(server, since=10_000)["next_since"] == 10_000


def test_kinds_exact_several_and_globs(server: ViewerServer) -> None:
    body = events(server, kinds=kinds.TICK)
    assert {e["kind"] for e in body["events"]} == {kinds.TICK}
    assert len(body["events"]) == 25
    both = events(server, kinds=f"{kinds.TICK}, {kinds.DEPOT_BUILT}")
    assert {e["kind"] for e in both["events"]} == {kinds.TICK, kinds.DEPOT_BUILT}
    glob = events(server, kinds="DELIVERY_*")
    assert {e["kind"] for e in glob["events"]} == {
        kinds.DELIVERY_COMPLETED,
        kinds.DELIVERY_FAILED,
    }
    repeated = fetch(server, "/api/events?kinds=TICK&kinds=DEPOT_*")[1]
    assert seqs(repeated) == seqs(both)
    assert events(server, kinds="NO_SUCH_KIND")["events"] == []
    # a filtered follow still advances the cursor over what it skipped
    follow = events(server, since=0, kinds=kinds.DEPOT_BUILT, limit=1000)
    assert follow["next_since"] == 100 and seqs(follow) == list(range(4, 101, 4))


@pytest.mark.parametrize(
    ("param", "value", "field"),
    [
        ("polity", "south", "polity_id"),
        ("ward", "w2", "ward_id"),
        ("actor", "actor-3", "actor_id"),
        ("subject", "depot-6", "subject_id"),
    ],
)
def test_field_filters(server: ViewerServer, param: str, value: str, field: str) -> None:
    body = events(server, **{param: value})
    assert body["events"], "the filter matched nothing"
    assert all(event[field] == value for event in body["events"])
    expected = [i + 1 for i in range(100) if value in _fields(i)[field]]
    assert seqs(body) == expected
    assert seqs(events(server, since=0, **{param: value})) == expected


def _fields(i: int) -> dict[str, str]:
    return {
        "polity_id": POLITIES[i % 3],
        "ward_id": WARDS[i % 2],
        "actor_id": f"actor-{i % 5}",
        "subject_id": f"depot-{i % 7}",
    }


def test_payload_key_and_value_filters(server: ViewerServer) -> None:
    assert len(events(server, key="index")["events"]) == 100
    assert events(server, key="missing")["events"] == []
    assert seqs(events(server, key="index", value="41")) == [42]
    assert seqs(events(server, key="label", value="item 7")) == [8]
    assert len(events(server, key="ok", value="true")["events"]) == 50
    combined = events(server, kinds=kinds.TICK, polity="north", key="ok", value="true", limit=3)
    assert seqs(combined) == [73, 85, 97]


def test_gap_is_reported_when_the_ring_overwrote(backend: Any) -> None:
    bus = backend.bus(max_events=20)
    publish_world(bus, 50)
    with serve(bus) as viewer:
        body = events(viewer, since=5)
        assert body["gap"] == {"first": 6, "last": 30, "missing": 25}
        assert seqs(body) == list(range(31, 51))
        assert body["oldest_seq"] == 31
        assert events(viewer, since=30)["gap"] is None
        assert events(viewer, since=29)["gap"] == {"first": 30, "last": 30, "missing": 1}
        # with a kinds filter the gap still shows
        assert events(viewer, since=0, kinds=kinds.DEPOT_BUILT)["gap"]["first"] == 1
        # the newest-N view (no since) has no cursor, so no gap
        assert events(viewer)["gap"] is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=abc", "parameter 'since' must be a whole number"),
        ("since=-1", "parameter 'since' must be a whole number"),
        ("since=1.5", "parameter 'since' must be a whole number"),
        ("since=", "parameter 'since' must be a whole number"),
        ("since=1&since=2", "parameter 'since' given 2 times"),
        ("since=99999999999999999999999", "must be between 0 and"),
        ("limit=0", "parameter 'limit' must be between 1 and"),
        (f"limit={MAX_LIMIT + 1}", "parameter 'limit' must be between 1 and"),
        ("limit=ten", "parameter 'limit' must be a whole number"),
        ("kinds=", "parameter 'kinds' holds an empty kind"),
        ("kinds=TICK,,DAY", "parameter 'kinds' holds an empty kind"),
        ("kinds=%01X", "parameter 'kinds' holds an invalid kind"),
        ("polity=", "parameter 'polity' is empty"),
        ("ward=" + "w" * 300, "parameter 'ward' is longer than 256"),
        ("subject=a%0Ab", "parameter 'subject' holds control characters"),
        ("value=3", "parameter 'value' needs 'key'"),
        ("key=a&value=" + "v" * 300, "parameter 'value' is too long"),
        ("colour=red", "unknown parameter 'colour'; accepted parameters are since"),
    ],
)
def test_bad_parameters_are_400_with_a_clear_message(
    server: ViewerServer, query: str, message: str
) -> None:
    for path in ("/api/events?", "/api/stream?"):
        status, body, head = fetch(server, path + query)
        assert status == 400, (path, body)
        assert message in body["error"]
        assert body["status"] == 400
        assert head["Content-Type"] == "application/json"


def test_tail_is_a_stream_flag(server: ViewerServer) -> None:
    status, body, _ = fetch(server, "/api/events?tail=1")
    assert status == 400 and "unknown parameter 'tail'" in body["error"]
    status, body, _ = fetch(server, "/api/stream?tail=maybe")
    assert status == 400 and "parameter 'tail' must be 1 or 0" in body["error"]


def test_newest_events_widen_the_window_for_sparse_matches(backend: Any) -> None:
    bus = backend.bus(max_events=5000)
    bus.publish("RARE", tick=0, payload={"n": 0})
    for i in range(3000):
        bus.publish(kinds.TICK, tick=i)
    bus.publish("RARE", tick=3000, payload={"n": 1})
    for i in range(500):
        bus.publish(kinds.TICK, tick=3000 + i)
    with serve(bus) as viewer:
        assert seqs(events(viewer, kinds="RARE", limit=5)) == [1, 3002]
        assert seqs(events(viewer, key="n", limit=1)) == [3002]
        assert seqs(events(viewer, limit=3)) == [3500, 3501, 3502]
        body = events(viewer, kinds="RARE")
        assert body["next_since"] >= 3501 and body["more"] is False


def test_endpoints_without_parameters_reject_them(server: ViewerServer) -> None:
    for path in ("/api/kpis?x=1", "/api/counts?since=1", "/api/rates?x=1", "/api/health?x=1"):
        status, body, _ = fetch(server, path)
        assert status == 400 and body["error"]


# -- counts and KPIs ------------------------------------------------------------


def test_counts_over_the_retained_ring(backend: Any) -> None:
    bus = backend.bus(max_events=10)
    publish_world(bus, 12)
    with serve(bus) as viewer:
        status, body, _ = fetch(viewer, "/api/counts")
        assert status == 200
        assert plain(body) == {
            "counts": {
                kinds.DELIVERY_COMPLETED: 2,
                kinds.DELIVERY_FAILED: 3,
                kinds.DEPOT_BUILT: 3,
                kinds.TICK: 2,
            },
            "retained": 10,
            "latest_seq": 12,
            "oldest_seq": 3,
            "basis": "retained",
        }
        assert list(body["counts"]) == sorted(body["counts"])
        publish_world(bus, 1, start=12)
        # counted again at most once a second, however many pages ask
        after = fetch(viewer, "/api/counts")[1]
        assert after["latest_seq"] == 12
        time.sleep(1.05)
        after = fetch(viewer, "/api/counts")[1]
        assert after["latest_seq"] == 13
        assert after["counts"][kinds.TICK] == 3 and after["counts"][kinds.DELIVERY_FAILED] == 2


def test_kpis(server: ViewerServer, bus: Any) -> None:
    assert plain(fetch(server, "/api/kpis")[1]) == {
        "kpis": {"deliveries": {"completed": 3}, "days": [1, 2]}
    }
    with serve(bus) as bare:
        assert fetch(bare, "/api/kpis")[1]["kpis"] is None

    def broken() -> dict[str, Any]:
        return {"when": object()}

    with serve(bus, kpis=broken) as bad:
        status, body, _ = fetch(bad, "/api/kpis")
        assert status == 500 and "TypeError" in body["error"]
        assert fetch(bad, "/api/events?limit=1")[0] == 200  # still serving


# -- the stream ------------------------------------------------------------------


class Stream:
    """A minimal server-sent events reader over http.client."""

    def __init__(self, server: ViewerServer, query: str, **headers: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        self.connection.request("GET", "/api/stream?" + query, headers=headers)
        self.response = self.connection.getresponse()

    def next(self) -> dict[str, str]:
        """The next dispatched message (or id-only update) as its fields."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                fields["closed"] = "1"
                return fields
            text = line.decode().rstrip("\n")
            if not text:
                if fields:
                    return fields
                continue
            if text.startswith(":"):
                fields.setdefault("comment", text)
                continue
            name, _, value = text.partition(": ")
            fields[name] = value

    def until(self, event: str) -> dict[str, str]:
        for _ in range(200):
            message = self.next()
            if message.get("event") == event or "closed" in message:
                return message
        raise AssertionError(f"no {event!r} message")

    def close(self) -> None:
        self.response.close()
        self.connection.close()


def test_stream_follows_new_events(server: ViewerServer, bus: Any) -> None:
    stream = Stream(server, "since=95&limit=3")
    try:
        assert stream.response.status == 200
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        assert stream.response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        hello = stream.next()
        assert hello["event"] == "hello" and hello["id"] == "95" and hello["retry"] == "1000"
        first = stream.until("events")
        assert first["id"] == "98" and seqs(json.loads(first["data"])) == [96, 97, 98]
        second = stream.until("events")
        assert second["id"] == "100" and seqs(json.loads(second["data"])) == [99, 100]
        publish_world(bus, 2, start=100)
        live = stream.until("events")
        assert live["id"] == "102" and seqs(json.loads(live["data"])) == [101, 102]
    finally:
        stream.close()


def test_stream_resumes_from_last_event_id(server: ViewerServer) -> None:
    stream = Stream(server, "since=1", **{"Last-Event-ID": "97"})
    try:
        assert stream.next()["id"] == "97"
        assert seqs(json.loads(stream.until("events")["data"])) == [98, 99, 100]
    finally:
        stream.close()
    status, body, _ = fetch(server, "/api/stream", **{"Last-Event-ID": "nine"})
    assert status == 400 and "Last-Event-ID" in body["error"]


def test_stream_without_since_starts_at_latest(server: ViewerServer, bus: Any) -> None:
    stream = Stream(server, "kinds=DEPOT_BUILT")
    try:
        assert stream.next()["id"] == "100"
        publish_world(bus, 4, start=100)  # one of each kind
        message = stream.until("events")
        assert seqs(json.loads(message["data"])) == [104]
        assert message["id"] == "104"
    finally:
        stream.close()


def test_stream_reports_gap_and_filters(backend: Any) -> None:
    bus = backend.bus(max_events=10)
    publish_world(bus, 30)
    with serve(bus) as viewer:
        stream = Stream(viewer, "since=2&polity=north")
        try:
            gap = stream.until("gap")
            assert json.loads(gap["data"]) == {"first": 3, "last": 20, "missing": 18}
            body = json.loads(stream.until("events")["data"])
            assert seqs(body) == [22, 25, 28]
            assert all(event["polity_id"] == "north" for event in body["events"])
            publish_world(bus, 3, start=30)  # seq 31 is north, 32 south, 33 east
            message = stream.until("events")
            assert seqs(json.loads(message["data"])) == [31] and message["id"] == "33"
        finally:
            stream.close()
        stream = Stream(viewer, "since=33&kinds=TICK")
        try:
            assert stream.next()["id"] == "33"
            publish_world(bus, 3, start=33)  # DELIVERY_COMPLETED, DELIVERY_FAILED, DEPOT_BUILT
            # no TICK came: the cursor moves on, short of the newest seq (it may be landing)
            assert stream.next() == {"id": "35"}
        finally:
            stream.close()


def test_tail_stream_skips_ahead_and_says_so(backend: Any) -> None:
    bus = backend.bus(max_events=1000)
    publish_world(bus, 10)
    with serve(bus) as viewer:
        stream = Stream(viewer, "tail=1&limit=5")
        try:
            assert stream.next()["id"] == "10"
            publish_world(bus, 50, start=10)  # far more than 5 before the next poll
            skipped = stream.until("skipped")
            assert json.loads(skipped["data"]) == {"first": 11, "last": 55}
            message = stream.until("events")
            assert seqs(json.loads(message["data"])) == [56, 57, 58, 59, 60]
            assert message["id"] == "60"
            publish_world(bus, 2, start=60)  # a few: nothing skipped
            message = stream.next()
            assert message["event"] == "events" and message["id"] == "62"
        finally:
            stream.close()
        # without tail the stream sends every event, in batches of ``limit``
        stream = Stream(viewer, "since=10&limit=20")
        try:
            got: list[int] = []
            while len(got) < 52:
                got += seqs(json.loads(stream.until("events")["data"]))
            assert got == list(range(11, 63))
        finally:
            stream.close()


def test_close_ends_open_streams(bus: Any) -> None:
    viewer = serve(bus)
    stream = Stream(viewer, "since=100")
    try:
        assert stream.next()["event"] == "hello"
        viewer.close()
        assert "closed" in stream.until("never")
    finally:
        stream.close()


# -- reading beside a publishing loop ------------------------------------------------


def test_reads_do_not_stall_or_tear_publishing(backend: Any) -> None:
    """A sim thread publishes while clients hammer the API: every seq is seen whole."""
    bus = backend.bus(max_events=100_000)
    total = 20_000
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []
    seen_a: list[int] = []
    polled = [0]

    def check(event: dict[str, Any]) -> None:
        seq = event["seq"]
        assert event["tick"] == seq and event["payload"] == {"n": seq, "twice": 2 * seq}
        assert event["subject_id"] == f"s{seq}"

    def follower(params: dict[str, Any], seen: list[int]) -> None:
        try:
            since = 0
            while True:
                finished = done.is_set()
                body = events(viewer, since=since, limit=MAX_LIMIT, **params)
                for event in body["events"]:
                    check(event)
                    seen.append(event["seq"])
                assert body["gap"] is None
                since = body["next_since"]
                polled[0] += 1
                if finished and not body["more"] and since >= total - 1:
                    return
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def hammer() -> None:
        try:
            while not done.is_set():
                for event in events(viewer, limit=50, kinds="K*")["events"]:
                    check(event)
                assert fetch(viewer, "/api/counts")[0] == 200
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    with serve(bus) as viewer:
        threads = [
            threading.Thread(target=follower, args=({}, seen)),
            threading.Thread(target=follower, args=({"kinds": "KIND_A"}, seen_a)),
            threading.Thread(target=hammer),
        ]
        for thread in threads:
            thread.start()
        for seq in range(1, total + 1):
            got = bus.publish(
                "KIND_A" if seq % 2 else "KIND_B",
                tick=seq,
                subject_id=f"s{seq}",
                payload={"n": seq, "twice": 2 * seq},
            )
            assert got == seq
            if seq % 1000 == 0:
                bus.drain()
                if seq % 4000 == 0:  # a tick boundary: let the reader catch a breath
                    before = polled[0]
                    for _ in range(1000):
                        if polled[0] > before or errors:
                            break
                        done.wait(0.01)
        bus.drain()
        polled_while_publishing = polled[0]
        done.set()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive()
    assert not errors, errors
    assert seen == list(range(1, total + 1))
    assert seen_a == list(range(1, total + 1, 2))
    assert polled_while_publishing >= 1, "the reader never ran beside the publisher"
    assert bus.stats()["published"] == total


# -- the command line ----------------------------------------------------------------


def test_cli_serves_a_running_world_until_interrupted(backend: Any) -> None:
    env = dict(os.environ)
    env["RINGBUS_NO_EXTENSIONS"] = "1" if backend.name == "python" else "0"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(ringbus.__file__).parent.parent), env.get("PYTHONPATH", "")]
    )
    command = [sys.executable, "-m", "ringbus", "viewer", "--port", "0", "--tick-delay", "0.01"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:(\d+)/)", line)
        assert match, line
        url = match.group(1)
        for _ in range(100):
            with urllib.request.urlopen(url + "api/events?limit=5", timeout=5) as response:
                body = json.loads(response.read())
            if len(body["events"]) == 5:
                break
            time.sleep(0.05)
        assert len(body["events"]) == 5
        with urllib.request.urlopen(url + "api/kpis", timeout=5) as response:
            assert json.loads(response.read())["kpis"]["totals"]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "stopped" in err and "events published" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_rejects_bad_options() -> None:
    assert cli_main(["viewer", "--days", "-1"]) == 2
    assert cli_main(["viewer", "--tick-delay", "-1"]) == 2


def test_readme_viewer_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = text[text.index("## Event viewer") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match
    exec(compile(match.group(1), str(readme), "exec"), {})
    assert capsys.readouterr().out.startswith("open http://127.0.0.1:")
