"""The viewer off loopback and under bad input: tokens, Host check, limits, headers, runs."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from ringbus.viewer import CONTENT_SECURITY_POLICY, MAX_KINDS, ViewerServer, serve
from ringbus.viewer._server import SECURITY_HEADERS
from test_viewer_api import Stream, fetch, publish_world, seqs

TOKEN = "a-test-token-of-enough-length"


@pytest.fixture
def bus(backend: Any) -> Any:
    bus = backend.bus(max_events=1000)
    publish_world(bus, 100)
    return bus


@pytest.fixture
def server(bus: Any) -> Iterator[ViewerServer]:
    with serve(bus) as viewer:
        yield viewer


def raw(port: int, request: bytes, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; return the status, headers and body of the reply."""
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def get(
    port: int, path: str, host: str = "127.0.0.1", **headers: str
) -> tuple[int, Any, dict[str, str]]:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        head = {name.lower(): value for name, value in response.getheaders()}
        if head.get("content-type", "").startswith("application/json"):
            return response.status, json.loads(body), head
        return response.status, body, head
    finally:
        connection.close()


def assert_secured(headers: Any) -> None:
    lowered = {name.lower(): value for name, value in dict(headers).items()}
    for name, value in SECURITY_HEADERS:
        assert lowered.get(name.lower()) == value, (name, lowered)


# -- numbers and lists that are too big ----------------------------------------------


@pytest.mark.parametrize("name", ["limit", "since", "before", "from_seq", "to_tick", "to_day"])
def test_numbers_with_thousands_of_digits_are_400(
    server: ViewerServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ringbus.viewer"):
        for path in ("/api/events?", "/api/stream?", "/api/export?"):
            status, body, head = fetch(server, path + f"{name}=" + "9" * 5000)
            assert status == 400, (path, body)
            assert f"parameter {name!r} must be between" in body["error"]
            assert "5000-digit number" in body["error"]
            assert_secured(head)
        assert fetch(server, f"/api/events?{name}=" + "0" * 40 + "1")[0] == 200  # zeros pad
    assert caplog.records == []


def test_huge_last_event_id_is_400(server: ViewerServer) -> None:
    status, body, _ = fetch(server, "/api/stream", **{"Last-Event-ID": "1" * 4000})
    assert status == 400
    assert "parameter 'Last-Event-ID' must be between" in body["error"]


def test_a_long_kinds_list_is_refused_fast(server: ViewerServer) -> None:
    globs = ",".join(f"K{i}_*" for i in range(2000))
    started = time.perf_counter()
    status, body, _ = fetch(server, "/api/events?" + urllib.parse.urlencode({"kinds": globs}))
    assert time.perf_counter() - started < 0.2
    assert status == 400
    assert f"lists 2000 kinds or globs; give at most {MAX_KINDS}" in body["error"]
    most = ",".join(f"K{i}_*" for i in range(MAX_KINDS))
    assert fetch(server, "/api/events?" + urllib.parse.urlencode({"kinds": most}))[0] == 200


# -- headers on every response -------------------------------------------------------


def test_security_headers_on_every_response(server: ViewerServer) -> None:
    port = server.port
    for path, status in (
        ("/", 200),
        ("/api/events?limit=1", 200),
        ("/nope", 404),
        ("/api/events?limit=x", 400),
        ("/favicon.ico", 204),
    ):
        got, _, head = get(port, path)
        assert got == status, path
        assert_secured(head)
        assert head["content-security-policy"] == CONTENT_SECURITY_POLICY
    got, _, head = get(port, "/", Host="evil.example")
    assert got == 403
    assert_secured(head)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("POST", "/api/events", body=b"x")
    response = connection.getresponse()
    assert response.status == 405
    assert_secured(response.getheaders())
    connection.close()
    # the server's own error pages: a bad request line, an unknown method, a huge URL
    for request, status in (
        (b"GET / HTTP/x.y\r\n\r\n", 400),
        (b"BREW /pot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 501),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
    ):
        got, head, body = raw(port, request)
        assert got == status, request[:20]
        assert_secured(head)
        assert head["content-type"] == "application/json"
        assert json.loads(body)["status"] == status


# -- the Host check and the token, off loopback ------------------------------------------


def test_binding_off_loopback_needs_allowed_hosts(bus: Any) -> None:
    with pytest.raises(ValueError, match=r"binding 0\.0\.0\.0 \(not loopback\) needs allow_hosts"):
        serve(bus, host="0.0.0.0")
    with pytest.raises(ValueError, match="needs a token"):
        serve(bus, host="0.0.0.0", allow_hosts=["viewer.example"], token=False)
    with pytest.raises(ValueError, match="at least 16 characters"):
        serve(bus, token="short")
    with pytest.raises(TypeError, match="allow_hosts must be a list"):
        serve(bus, allow_hosts="viewer.example")
    with pytest.raises(ValueError, match="invalid host name"):
        serve(bus, allow_hosts=["a/b"])
    with pytest.raises(ValueError, match="max_streams must be an int >= 1"):
        serve(bus, max_streams=0)


def test_host_check_stays_on_with_allowed_hosts(bus: Any) -> None:
    with serve(bus, host="127.0.0.2", allow_hosts=["viewer.test"], token=TOKEN) as viewer:
        port = viewer.port
        auth = {"X-Ringbus-Token": TOKEN}
        for host in ("evil.example", f"evil.example:{port}", "viewer.test:1", "10.1.2.3"):
            status, body, head = get(port, "/api/events", "127.0.0.2", Host=host, **auth)
            assert status == 403, host
            assert "Host" in body["error"]
            assert_secured(head)
        for host in (f"viewer.test:{port}", "viewer.test", f"127.0.0.2:{port}", "localhost"):
            assert get(port, "/api/events", "127.0.0.2", Host=host, **auth)[0] == 200, host


def test_token_by_header_bearer_or_one_time_login_cookie(bus: Any) -> None:
    with serve(bus, host="127.0.0.2", allow_hosts=["viewer.test"], token=TOKEN) as viewer:
        port = viewer.port
        assert viewer.token == TOKEN
        assert viewer.login_url is not None and "?login=" in viewer.login_url
        for path in ("/", "/static/viewer.js", "/api/events", "/api/stream", "/api/export"):
            status, body, head = get(port, path, "127.0.0.2")
            assert status == 401, path
            assert "needs its access token" in body["error"]
            assert_secured(head)
        assert get(port, "/api/events", "127.0.0.2", **{"X-Ringbus-Token": "x" * 30})[0] == 401
        assert get(port, "/api/events", "127.0.0.2", **{"X-Ringbus-Token": TOKEN})[0] == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert get(port, "/api/counts", "127.0.0.2", **bearer)[0] == 200
        # the login link sets the cookie and sends the browser on, keeping its other parameters
        login = urllib.parse.urlsplit(viewer.login_url).query
        status, _, head = get(port, f"/?kinds=TICK&{login}", "127.0.0.2")
        assert status == 303
        assert head["location"] == "/?kinds=TICK"
        cookie = head["set-cookie"]
        assert cookie.startswith(f"{viewer.cookie_name}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert_secured(head)
        jar = {"Cookie": f"other=1; {viewer.cookie_name}={TOKEN}"}
        assert get(port, "/api/events", "127.0.0.2", **jar)[0] == 200
        # once only
        status, body, _ = get(port, f"/?{login}", "127.0.0.2")
        assert status == 401 and "one-time login link" in body["error"]


def test_a_token_is_made_off_loopback(bus: Any) -> None:
    with serve(bus, host="127.0.0.2", allow_hosts=["viewer.test"], token=True) as viewer:
        assert viewer.token is not None and len(viewer.token) >= 16
    with serve(bus) as viewer:
        assert viewer.token is None and viewer.login_url is None


# -- live streams: a cap and one encoding for all -------------------------------------------


def test_streams_beyond_the_cap_get_503(bus: Any) -> None:
    with serve(bus, max_streams=2) as viewer:
        first, second = Stream(viewer, "since=100"), Stream(viewer, "since=100")
        try:
            assert first.next()["event"] == "hello" and second.next()["event"] == "hello"
            status, body, head = fetch(viewer, "/api/stream?since=100")
            assert status == 503
            assert "too many live streams" in body["error"]
            assert "max_streams=2" in body["error"]
            assert_secured(head)
            assert fetch(viewer, "/api/events?limit=1")[0] == 200  # the rest still serves
        finally:
            first.close()
        for _ in range(100):
            if viewer._streams < 2:
                break
            time.sleep(0.02)
        third = Stream(viewer, "since=100")
        try:
            assert third.next()["event"] == "hello"
        finally:
            third.close()
            second.close()


def test_streams_alike_share_one_read_and_encoding(backend: Any) -> None:
    bus = backend.bus(max_events=1000)
    publish_world(bus, 100)
    with serve(bus) as viewer:
        made: list[int] = []
        real = viewer._make_frame

        def counting(query: Any, tail: bool, top: int) -> Any:
            frame = real(query, tail, top)
            if frame.sent_events:
                made.append(top)
            return frame

        viewer._make_frame = counting  # type: ignore[method-assign]
        streams = [Stream(viewer, "since=100&kinds=TICK,DEPOT_*") for _ in range(4)]
        try:
            for stream in streams:
                assert stream.next()["event"] == "hello"
            publish_world(bus, 40, start=100)
            bodies = []
            for stream in streams:
                got: list[int] = []
                data = []
                while not got or got[-1] < 140:
                    message = stream.until("events")
                    data.append(message["data"])
                    got += seqs(json.loads(message["data"]))
                assert got == [s for s in range(101, 141) if (s - 1) % 4 in (0, 3)]
                bodies.append(data)
            assert all(body == bodies[0] for body in bodies)
            assert len(made) == len(bodies[0]) <= 2  # once per batch, not once per stream
        finally:
            for stream in streams:
                stream.close()


# -- runs ----------------------------------------------------------------------------


class Swappable:
    """A bus reader whose bus can be replaced, as a restarted sim replaces its bus."""

    def __init__(self, bus: Any) -> None:
        self.target = bus

    def get_since(self, seq: int, **options: Any) -> list[Any]:
        return list(self.target.get_since(seq, **options))

    def latest_seq(self) -> int:
        return int(self.target.latest_seq())

    def oldest_seq(self) -> int:
        return int(self.target.oldest_seq())


def test_a_restarted_bus_gets_a_new_run_id(backend: Any) -> None:
    first = backend.bus(max_events=1000)
    publish_world(first, 50)
    reader = Swappable(first)
    with serve(reader) as viewer:
        body = fetch(viewer, "/api/events?limit=2")[1]
        run = body["run_id"]
        assert fetch(viewer, "/api/counts")[1]["run_id"] == run
        assert fetch(viewer, "/api/events")[2]["X-Ringbus-Run"] == run
        stream = Stream(viewer, "since=50")
        try:
            hello = stream.next()
            assert json.loads(hello["data"]) == {"since": 50, "run_id": run}
            second = backend.bus(max_events=1000)
            publish_world(second, 3)
            reader.target = second
            message = stream.until("restarted")
            new = json.loads(message["data"])
            assert new["was"] == run and new["run_id"] != run
            assert "closed" in stream.next()
        finally:
            stream.close()
        body = fetch(viewer, "/api/events")[1]
        assert body["run_id"] == new["run_id"] and seqs(body) == [1, 2, 3]


def test_a_finished_run_says_so(server: ViewerServer, bus: Any) -> None:
    assert fetch(server, "/api/events?limit=1")[1]["finished"] is False
    stream = Stream(server, "since=100")
    try:
        assert stream.next()["event"] == "hello"
        publish_world(bus, 2, start=100)
        server.finish()
        message = stream.until("finished")
        assert json.loads(message["data"]) == {"latest_seq": 102}
        assert fetch(server, "/api/events?limit=1")[1]["finished"] is True
    finally:
        stream.close()
    # a stream opened after the end gets its events, then the news
    stream = Stream(server, "since=95")
    try:
        assert stream.next()["event"] == "hello"
        assert seqs(json.loads(stream.until("events")["data"])) == [96, 97, 98, 99, 100, 101, 102]
        assert stream.next()["event"] == "finished"
    finally:
        stream.close()
