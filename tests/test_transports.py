"""Telemetry transports: transform, batching at drain ends, HTTP retries, the feed."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _http_collector import Collector, collecting_server
from _redis_server import collect_garbage
from ringbus import kinds
from ringbus.transports import (
    EVENT_SCHEMA,
    HttpTransport,
    SocketFeed,
    StdoutTransport,
    Transform,
    validate_event_dict,
)


class CountingStream(io.StringIO):
    """A text stream that remembers how many writes it got."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


__all__ = ["collect_garbage"]  # a fixture used by every test below


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- drain listeners --------------------------------------------------------
def test_drain_listeners_run_around_every_drain(backend: Any) -> None:
    bus = backend.bus()
    calls: list[str] = []
    bus.add_drain_listener(lambda: calls.append("end"), on_start=lambda: calls.append("start"))
    bus.subscribe(lambda event: calls.append(f"event {event.seq}"))
    bus.publish(kinds.TICK)
    bus.drain()
    bus.drain()
    assert calls == ["start", "event 1", "end", "start", "end"]


def test_drain_listener_runs_when_a_handler_raises(backend: Any) -> None:
    bus = backend.bus()
    ended: list[int] = []
    bus.add_drain_listener(lambda: ended.append(bus.pending_count()))

    def broken(event: Any) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.publish(kinds.TICK)
    with pytest.raises(ExceptionGroup):
        bus.drain()
    assert ended == [0]


def test_remove_drain_listener(backend: Any) -> None:
    bus = backend.bus()
    calls: list[int] = []

    def listener() -> None:
        calls.append(1)

    bus.add_drain_listener(listener)
    bus.remove_drain_listener(listener)
    bus.drain()
    assert calls == []
    with pytest.raises(ValueError, match="was not added"):
        bus.remove_drain_listener(listener)
    with pytest.raises(TypeError, match="callable"):
        bus.add_drain_listener("not callable")  # type: ignore[arg-type]


# -- schema and transform ---------------------------------------------------
def test_every_event_dict_is_valid(backend: Any) -> None:
    bus = backend.bus()
    bus.publish(kinds.DEPOT_BUILT, 3, 1, polity_id="p1", payload={"cost": 1.5, "ids": [1, 2]})
    data = bus.get_since(0)[0].to_dict()
    assert validate_event_dict(data) == []
    assert set(EVENT_SCHEMA["required"]) == set(data)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"seq": -1}, "seq must be an int >= 0"),
        ({"kind": ""}, "kind must be a non-empty str"),
        ({"polity_id": 3}, "polity_id must be a str or null"),
        ({"payload": []}, "payload must be an object"),
        ({"payload": {"x": {"nested": {1, 2}}}}, "payload value of 'x'"),
        ({"tags": [1]}, "tags must be a list of str"),
        ({"extra": 1}, "unknown fields: extra"),
    ],
)
def test_validate_names_the_problem(backend: Any, change: dict[str, Any], problem: str) -> None:
    bus = backend.bus()
    bus.publish(kinds.TICK)
    data = bus.get_since(0)[0].to_dict() | change
    assert any(problem in text for text in validate_event_dict(data))
    assert validate_event_dict([]) == ["event must be a JSON object, got list"]
    del data["tick"]
    assert "missing fields: tick" in validate_event_dict(data)


def test_stdout_writes_one_batch_per_drain(backend: Any) -> None:
    bus = backend.bus(name="world-1")
    stream = CountingStream()
    transport = StdoutTransport(stream).attach(bus)
    for tick in range(5):
        bus.publish(kinds.DELIVERY_COMPLETED, tick, 0, subject_id=f"c{tick}")
    assert stream.writes == 0  # buffered until the drain ends
    bus.drain()
    assert stream.writes == 1
    assert [record["seq"] for record in lines(stream)] == [1, 2, 3, 4, 5]
    assert lines(stream)[0] == bus.get_since(0)[0].to_dict()
    bus.drain()  # nothing new: no write
    assert stream.writes == 1
    assert transport.status()["sent"] == 5
    assert transport.producer == "world-1"


def test_transform_selects_kinds_and_reshapes(backend: Any) -> None:
    bus = backend.bus()
    stream = io.StringIO()

    def reshape(record: dict[str, Any]) -> dict[str, Any] | None:
        if record["payload"].get("private"):
            return None
        return {"seq": record["seq"], "kind": record["kind"], "where": record["subject_id"]}

    transport = StdoutTransport(
        stream, transform=Transform(kinds={"DELIVERY_*"}, reshape=reshape)
    ).attach(bus)
    bus.publish(kinds.DELIVERY_COMPLETED, subject_id="a")
    bus.publish(kinds.DEPOT_BUILT, subject_id="b")
    bus.publish(kinds.DELIVERY_FAILED, subject_id="c", payload={"private": True})
    bus.publish(kinds.DELIVERY_FAILED, subject_id="d")
    bus.drain()
    assert lines(stream) == [
        {"seq": 1, "kind": "DELIVERY_COMPLETED", "where": "a"},
        {"seq": 4, "kind": "DELIVERY_FAILED", "where": "d"},
    ]
    status = transport.status()
    assert (status["received"], status["filtered"], status["sent"]) == (3, 1, 2)


def test_records_that_cannot_be_sent_are_counted_not_fatal(backend: Any) -> None:
    bus = backend.bus()
    stream = io.StringIO()

    def reshape(record: dict[str, Any]) -> Any:
        if record["seq"] == 1:
            return {"bad": {1, 2}}  # a set is not JSON
        if record["seq"] == 2:
            return ["not", "a", "dict"]
        return record

    transport = StdoutTransport(stream, transform=Transform(reshape=reshape)).attach(bus)
    for _ in range(3):
        bus.publish(kinds.TICK)
    assert bus.drain() == 3
    assert [record["seq"] for record in lines(stream)] == [3]
    assert transport.invalid == 2
    assert "reshape must return a dict or None, got list" in transport.last_invalid[0]


def test_a_failing_stream_keeps_a_bounded_buffer_and_counts_drops(backend: Any) -> None:
    bus = backend.bus()
    stream = io.StringIO()
    stream.close()  # writes raise ValueError
    transport = StdoutTransport(stream, max_buffer=3).attach(bus)
    for _ in range(5):
        bus.publish(kinds.TICK)
    bus.drain()
    status = transport.status()
    assert status["dropped"] == 2
    assert status["buffered"] == 3
    assert status["failed"] == 1
    assert "closed file" in status["last_error"]
    transport.stream = good = io.StringIO()
    bus.drain()
    assert [record["seq"] for record in lines(good)] == [3, 4, 5]  # oldest dropped, in order
    assert transport.buffered == 0


def test_transport_attach_twice_and_detach(backend: Any) -> None:
    bus = backend.bus()
    stream = io.StringIO()
    transport = StdoutTransport(stream).attach(bus)
    with pytest.raises(RuntimeError, match="already attached"):
        transport.attach(bus)
    bus.publish(kinds.TICK)
    bus.drain()
    transport.detach()
    bus.publish(kinds.TICK)
    bus.drain()
    assert len(lines(stream)) == 1
    with pytest.raises(ValueError, match="max_buffer"):
        StdoutTransport(max_buffer=0)


# -- HTTP -------------------------------------------------------------------
@pytest.fixture
def http_server() -> Iterator[tuple[str, Collector]]:
    with collecting_server() as served:
        yield served


def test_http_posts_batches_from_a_sender_thread(backend: Any, http_server: Any) -> None:
    url, collector = http_server
    bus = backend.bus(name="world-7")
    transport = HttpTransport(url, batch_size=3).attach(bus)
    for _ in range(7):
        bus.publish(kinds.DELIVERY_COMPLETED)
    bus.drain()
    assert transport.flush(timeout=10)
    assert all(len(body["events"]) <= 3 for body in collector.bodies)
    assert {body["producer"] for body in collector.bodies} == {"world-7"}
    seqs = [record["seq"] for body in collector.bodies for record in body["events"]]
    assert seqs == list(range(1, 8))
    status = transport.status()
    assert (status["sent"], status["failed"], status["dropped"], status["state"]) == (
        7,
        0,
        0,
        "ok",
    )
    assert status["requests"] == len(collector.bodies) >= 3
    assert transport.close(timeout=5)


def test_http_retries_with_backoff(backend: Any, http_server: Any) -> None:
    url, collector = http_server
    collector.answers = [500, 500, 503]
    bus = backend.bus()
    transport = HttpTransport(url, retry_base=0.01, retry_max=0.05).attach(bus)
    for tick in range(20):
        bus.set_clock(tick)
        bus.publish(kinds.TICK)
        bus.drain()
    assert transport.flush(timeout=10)
    seqs = [record["seq"] for body in collector.bodies for record in body["events"]]
    assert seqs == list(range(1, 21))  # nothing lost, nothing doubled, in order
    status = transport.status()
    assert (status["sent"], status["failed"], status["retries"], status["dropped"]) == (20, 3, 3, 0)
    assert status["outages"] == 1 and status["requests"] == len(collector.bodies) + 3
    assert transport.close(timeout=5)


def test_http_buffer_bound_when_the_server_is_gone(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from _redis_server import free_port
    from ringbus.sim.health import DATA_LOSS

    bus = backend.bus()
    losses: list[Any] = []
    bus.subscribe(losses.append, kinds=DATA_LOSS)
    url = f"http://127.0.0.1:{free_port()}/nothing-listens"
    transport = HttpTransport(
        url, max_buffer=4, batch_size=1, report_every=0, transform=Transform(kinds="TICK")
    ).attach(bus)
    with caplog.at_level(logging.WARNING, logger="ringbus.transports"):
        bus.publish(kinds.TICK)
        bus.drain()
        assert not transport.flush(timeout=0.2)  # bounded in time
        for tick in range(1, 6):
            bus.set_clock(tick)
            bus.publish(kinds.TICK)
            bus.drain()
        bus.drain()
    status = transport.status()
    assert status["state"] == "dropping"
    assert status["dropped"] == 2 and status["buffered"] == 4 and status["sent"] == 0
    assert status["failed"] >= 1
    assert "Connection refused" in status["last_error"] or "URLError" in status["last_error"]
    assert "lost 1 events" in caplog.text
    ticks = [event.seq for event in bus.get_since(0, kinds="TICK")]
    reported = [tuple(r) for event in losses for r in event.payload_dict()["ranges"]]
    assert reported == [(ticks[1], ticks[1]), (ticks[2], ticks[2])]  # the oldest queued ones
    assert not transport.close(timeout=0.2)  # what is left is dropped, counted and reported
    assert transport.status()["dropped"] == 6 and transport.buffered == 0
    assert "closed with 4 events unsent" in caplog.text or "closed with 4" in (
        transport.last_loss or ""
    )


def test_http_client_error_drops_the_batch_visibly(backend: Any, http_server: Any) -> None:
    url, collector = http_server
    collector.answers = [400]
    bus = backend.bus()
    transport = HttpTransport(url).attach(bus)
    bus.publish(kinds.TICK)
    bus.drain()
    assert transport.flush(timeout=10)
    bus.publish(kinds.TICK)
    bus.drain()
    assert transport.flush(timeout=10)
    status = transport.status()
    assert (status["rejected"], status["dropped"], status["sent"], status["failed"]) == (1, 1, 1, 1)
    assert status["last_error"] == f"HTTP 400 from {url}: the server refused the batch"
    assert [body["events"][0]["seq"] for body in collector.bodies] == [2]
    assert transport.close(timeout=5)


def test_http_slow_server_does_not_stall_the_loop(backend: Any, http_server: Any) -> None:
    url, collector = http_server
    collector.delay = 0.5
    bus = backend.bus()
    transport = HttpTransport(url, timeout=5).attach(bus)
    longest = 0.0
    for _ in range(20):
        bus.publish(kinds.TICK)
        started = time.perf_counter()
        bus.drain()
        longest = max(longest, time.perf_counter() - started)
    # a drain hands its events over and returns: far below one request's 0.5 s
    assert longest < 0.25, f"a drain took {longest:.3f} s"
    assert transport.buffered > 0
    collector.delay = 0.0
    assert transport.close(timeout=10)
    seqs = [record["seq"] for body in collector.bodies for record in body["events"]]
    assert seqs == list(range(1, 21))


@pytest.mark.parametrize("policy", ["block", "raise"])
def test_overflow_policies(backend: Any, http_server: Any, policy: str) -> None:
    from ringbus.transports import TransportOverflowError

    url, collector = http_server
    collector.delay = 0.3
    bus = backend.bus()
    transport = HttpTransport(
        url, max_buffer=3, batch_size=1, overflow=policy, block_timeout=5.0
    ).attach(bus)
    for _ in range(3):
        bus.publish(kinds.TICK)
    bus.drain()
    for _ in range(2):
        bus.publish(kinds.TICK)
    if policy == "raise":
        with pytest.raises(TransportOverflowError, match="max_buffer=3"):
            bus.drain()
        assert transport.dropped >= 1
    else:
        started = time.monotonic()
        bus.drain()  # waits for room instead of dropping
        assert time.monotonic() - started < 5.0
        assert transport.dropped == 0
    collector.delay = 0.0
    transport.close(timeout=10)
    sent = [record["seq"] for body in collector.bodies for record in body["events"]]
    assert len(sent) + transport.dropped == 5
    if policy == "block":
        assert sent == [1, 2, 3, 4, 5]


def test_http_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="http://"):
        HttpTransport("ftp://x")
    with pytest.raises(ValueError, match="timeout"):
        HttpTransport("http://x", timeout=0)
    with pytest.raises(ValueError, match="overflow"):
        HttpTransport("http://x", overflow="wait")
    with pytest.raises(ValueError, match="retry_base"):
        HttpTransport("http://x", retry_base=0)


# -- the streaming feed -----------------------------------------------------
FEED_ARGS = ["--limit", "4", "--timeout", "10", "--kinds", "TICK", "DEPOT_*", "DAY_*"]


def test_socket_feed_serves_another_process(backend: Any) -> None:
    bus = backend.bus()
    feed = SocketFeed(backlog=2).attach(bus)
    assert isinstance(feed, SocketFeed)
    try:
        for _ in range(3):
            bus.publish(kinds.TICK)
        bus.drain()  # no reader yet: seqs 2 and 3 stay in the backlog
        reader = subprocess.Popen(
            [sys.executable, "-m", "ringbus", "feed", f"127.0.0.1:{feed.address[1]}", *FEED_ARGS],
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not feed.readers and time.monotonic() < deadline:
            bus.drain()
            time.sleep(0.01)
        assert feed.readers == 1
        bus.publish(kinds.INCIDENT_RECORDED)  # not a kind the reader asked for
        bus.publish(kinds.DEPOT_BUILT)
        bus.publish(kinds.DAY_ROLLOVER)
        bus.drain()
        out, _ = reader.communicate(timeout=20)
        assert reader.returncode == 0
        records = [json.loads(line) for line in out.splitlines()]
        assert [(record["seq"], record["kind"]) for record in records] == [
            (2, "TICK"),
            (3, "TICK"),
            (5, "DEPOT_BUILT"),
            (6, "DAY_ROLLOVER"),
        ]
        status = feed.status()
        assert (status["sent"], status["accepted"], status["dropped"]) == (6, 1, 0)
    finally:
        feed.close()


def test_socket_feed_drops_a_reader_that_went_away(backend: Any) -> None:
    import socket

    bus = backend.bus()
    feed = SocketFeed(backlog=0).attach(bus)
    assert isinstance(feed, SocketFeed)
    try:
        reader = socket.create_connection(feed.address, timeout=5)
        deadline = time.monotonic() + 10
        while not feed.readers and time.monotonic() < deadline:
            bus.drain()
        assert feed.readers == 1
        reader.close()
        while feed.readers and time.monotonic() < deadline:
            bus.publish(kinds.TICK, payload={"padding": "x" * 1000})
            bus.drain()  # the first writes may still land in kernel buffers
        status = feed.status()
        assert (status["readers"], status["disconnected"]) == (0, 1)
        assert "reader dropped" in status["last_error"]
        assert status["state"] == "ok"
    finally:
        feed.close()
    assert feed.state() == "closed"
