"""Handler error policies (raise, log, dead_letter), the dead-letter queue, and backpressure."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import ringbus
from ringbus import EventBusConfig, PendingOverflowError


class Flaky:
    """A handler that fails its first ``failures`` calls, recording the bus tick of each call."""

    def __init__(self, bus: Any, failures: int = 10**9, name: str = "flaky") -> None:
        self.bus = bus
        self.failures = failures
        self.calls: list[tuple[int, int]] = []
        self.name = name

    def __call__(self, event: Any) -> None:
        self.calls.append((event.seq, self.bus.tick))
        if len(self.calls) <= self.failures:
            raise RuntimeError(f"{self.name} failed on seq {event.seq}")


def run_ticks(bus: Any, first: int, last: int) -> None:
    for tick in range(first, last + 1):
        bus.set_clock(tick)
        bus.drain()


# -- raise and log ------------------------------------------------------------------
def test_raise_delivers_to_everyone_then_raises_all_errors(backend: Any) -> None:
    bus = backend.bus()
    seen: list[int] = []
    bus.subscribe(Flaky(bus, name="a"), name="a")
    bus.subscribe(lambda e: seen.append(e.seq))
    bus.subscribe(Flaky(bus, name="b"), name="b")
    bus.publish("X")
    bus.publish("Y")
    with pytest.raises(ExceptionGroup) as caught:
        bus.drain()
    assert seen == [1, 2]
    messages = [str(error) for error in caught.value.exceptions]
    assert messages == [
        "a failed on seq 1",
        "b failed on seq 1",
        "a failed on seq 2",
        "b failed on seq 2",
    ]
    notes = caught.value.exceptions[0].__notes__
    assert "seq=1 kind='X'" in notes[0] and "'a'" in notes[0]
    assert bus.pending_count() == 0
    assert bus.dead_letters.stats()["failures"] == 0


def test_log_policy_logs_and_does_not_raise(backend: Any, caplog: pytest.LogCaptureFixture) -> None:
    bus = backend.bus(error_policy="log")
    bus.subscribe(Flaky(bus), name="noisy")
    bus.publish("X")
    with caplog.at_level(logging.ERROR, logger="ringbus"):
        assert bus.drain() == 1
    assert len(caplog.records) == 1
    assert "seq=1 kind=X" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is not None


def test_subscription_overrides_the_bus_policy(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bus = backend.bus()  # "raise"
    quiet = Flaky(bus, name="quiet")
    loud = Flaky(bus, name="loud")
    bus.subscribe(quiet, error_policy="log")
    bus.subscribe(loud)
    bus.publish("X")
    with caplog.at_level(logging.ERROR, logger="ringbus"), pytest.raises(ExceptionGroup) as caught:
        bus.drain()
    assert [str(e) for e in caught.value.exceptions] == ["loud failed on seq 1"]
    assert len(caplog.records) == 1

    logging_bus = backend.bus(error_policy="log")
    logging_bus.subscribe(Flaky(logging_bus, name="strict"), error_policy="raise")
    logging_bus.publish("X")
    with pytest.raises(ExceptionGroup):
        logging_bus.drain()


def test_bad_policies_are_clear_errors(backend: Any) -> None:
    bus = backend.bus()
    with pytest.raises(ValueError, match="error_policy must be one of raise, log, dead_letter"):
        bus.subscribe(print, error_policy="ignore")
    assert bus.subscriptions() == []
    with pytest.raises(ValueError, match="error_policy must be one of"):
        EventBusConfig(error_policy="retry")
    with pytest.raises(ValueError, match="max_retries must be 0 to 64"):
        EventBusConfig(max_retries=-1)
    with pytest.raises(TypeError, match="max_retries must be an int"):
        EventBusConfig(max_retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_backoff_ticks must be >= 1"):
        EventBusConfig(retry_backoff_ticks=0)
    with pytest.raises(ValueError, match="dead_letter_limit must be >= 1"):
        EventBusConfig(dead_letter_limit=0)


# -- dead_letter: retries with backoff ------------------------------------------------
def test_retries_back_off_exponentially_in_ticks_then_dead_letter(backend: Any) -> None:
    bus = backend.bus(error_policy="dead_letter", max_retries=3, retry_backoff_ticks=2)
    flaky = Flaky(bus)
    others: list[int] = []
    sub = bus.subscribe(flaky, name="flaky")
    bus.subscribe(lambda e: others.append(e.seq))
    bus.set_clock(10, 1)
    bus.publish("DELIVERY_FAILED", payload={"n": 1})
    assert bus.drain() == 1  # no raise
    assert others == [1]
    [retry] = bus.dead_letters.pending_retries()
    assert (retry.attempts, retry.due_tick, retry.first_tick) == (1, 12, 10)
    for _ in range(3):
        bus.drain()  # same tick: nothing is due
    assert len(flaky.calls) == 1
    run_ticks(bus, 11, 40)
    # first try at 10, retries at 10+2, 12+4, 16+8: then it is a dead letter
    assert flaky.calls == [(1, 10), (1, 12), (1, 16), (1, 24)]
    assert bus.dead_letters.pending_retries() == []
    [letter] = bus.dead_letters.list()
    assert letter.event.seq == 1 and letter.event.payload == (("n", 1),)
    assert letter.sub_id == sub and letter.name == "flaky"
    assert "flaky" in letter.subscriber
    assert letter.attempts == 4 and (letter.first_tick, letter.last_tick) == (10, 24)
    assert isinstance(letter.error, RuntimeError) and str(letter.error) == "flaky failed on seq 1"
    assert (letter.error_type, letter.reason) == ("RuntimeError", "retries exhausted")
    assert bus.dead_letters.stats() == {
        "failures": 1,
        "retrying": 0,
        "dead": 1,
        "dropped": 0,
        "recovered": 0,
        "limit": 1000,
    }
    assert others == [1]  # the others got it once, on time


def test_a_retry_that_succeeds_recovers_the_delivery(backend: Any) -> None:
    bus = backend.bus(error_policy="dead_letter", max_retries=5)
    flaky = Flaky(bus, failures=2)
    bus.subscribe(flaky)
    bus.publish("X")
    bus.publish("Y")
    bus.drain()
    run_ticks(bus, 1, 20)
    # the first two calls fail (seq 1 and 2 at tick 0); both retries at tick 1 get through
    assert flaky.calls == [(1, 0), (2, 0), (1, 1), (2, 1)]
    assert bus.dead_letters.list() == []
    assert bus.dead_letters.stats()["recovered"] == 2


def test_zero_retries_dead_letters_at_once(backend: Any) -> None:
    bus = backend.bus(error_policy="dead_letter", max_retries=0)
    bus.subscribe(Flaky(bus))
    bus.publish("X")
    bus.drain()
    assert [letter.attempts for letter in bus.dead_letters.list()] == [1]
    assert bus.dead_letters.pending_retries() == []


def test_only_the_dead_letter_subscription_is_retried(backend: Any) -> None:
    bus = backend.bus()  # raise by default
    patient = Flaky(bus, name="patient")
    strict = Flaky(bus, failures=1, name="strict")
    bus.subscribe(patient, error_policy="dead_letter")
    bus.subscribe(strict)
    bus.publish("X")
    with pytest.raises(ExceptionGroup) as caught:
        bus.drain()
    assert [str(e) for e in caught.value.exceptions] == ["strict failed on seq 1"]
    bus.set_clock(1)
    bus.publish("Y")
    bus.drain()  # retries run after the drain: patient gets Y, then the retry of X
    assert patient.calls == [(1, 0), (2, 1), (1, 1)]
    assert [(r.event.seq, r.attempts, r.due_tick) for r in bus.dead_letters.pending_retries()] == [
        (2, 1, 2),
        (1, 2, 3),
    ]


def test_retries_still_run_when_the_drain_raises(backend: Any) -> None:
    bus = backend.bus()
    patient = Flaky(bus, failures=1)
    bus.subscribe(patient, error_policy="dead_letter")
    bus.publish("X")
    bus.drain()
    bus.subscribe(Flaky(bus, name="strict"))
    bus.set_clock(1)
    bus.publish("Y")
    with pytest.raises(ExceptionGroup):
        bus.drain()
    assert patient.calls == [(1, 0), (2, 1), (1, 1)]
    assert bus.dead_letters.stats()["recovered"] == 1


def test_a_removed_subscription_dead_letters_its_retries(backend: Any) -> None:
    bus = backend.bus(error_policy="dead_letter")
    sub = bus.subscribe(Flaky(bus))
    bus.publish("X")
    bus.drain()
    bus.unsubscribe(sub)
    run_ticks(bus, 1, 3)
    [letter] = bus.dead_letters.list()
    assert letter.reason == "subscription removed" and letter.attempts == 1


def test_retry_order_is_deterministic_and_the_same_on_both_cores(
    both_backends: tuple[Any, ...],
) -> None:
    def trace(backend: Any) -> list[tuple[str, int, int]]:
        bus = backend.bus(error_policy="dead_letter", max_retries=4, retry_backoff_ticks=1)
        log: list[tuple[str, int, int]] = []
        for name, failures in (("a", 3), ("b", 1), ("c", 9)):

            def handler(event: Any, name: str = name, failures: int = failures) -> None:
                log.append((name, event.seq, bus.tick))
                if sum(1 for entry in log if entry[:2] == (name, event.seq)) <= failures:
                    raise ValueError(name)

            bus.subscribe(handler, name=name)
        for tick in range(20):
            bus.set_clock(tick)
            if tick < 3:
                bus.publish("K", payload={"t": tick})
            bus.drain()
        log.append(("dead", len(bus.dead_letters), bus.dead_letters.stats()["recovered"]))
        return log

    traces = [trace(backend) for backend in both_backends]
    assert all(t == traces[0] for t in traces)
    assert traces[0][-1] == ("dead", 3, 6)


# -- the dead-letter queue ------------------------------------------------------------
def test_overflowing_the_queue_is_counted_and_logged(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bus = backend.bus(error_policy="dead_letter", max_retries=0, dead_letter_limit=2)
    bus.subscribe(Flaky(bus))
    for _ in range(5):
        bus.publish("X")
    with caplog.at_level(logging.WARNING, logger="ringbus"):
        bus.drain()
    assert [letter.event.seq for letter in bus.dead_letters.list()] == [4, 5]
    stats = bus.dead_letters.stats()
    assert (stats["dead"], stats["dropped"], stats["limit"]) == (2, 3, 2)
    full = [r.getMessage() for r in caplog.records if "dead-letter queue is full" in r.getMessage()]
    assert len(full) == 3
    assert "dead_letter_limit=2" in full[0] and "seq=1" in full[0]
    assert "3 dropped so far" in full[-1]
    assert "dropped=3" in repr(bus.dead_letters)


def test_dead_letters_can_be_listed_retried_and_purged(backend: Any) -> None:
    bus = backend.bus(error_policy="dead_letter", max_retries=0)
    first = Flaky(bus, failures=2, name="first")
    second = Flaky(bus, name="second")
    sub_first = bus.subscribe(first, name="first")
    sub_second = bus.subscribe(second, name="second")
    bus.publish("X")
    bus.publish("Y")
    bus.drain()
    queue = bus.dead_letters
    assert len(queue) == 4
    assert [(d.sub_id, d.event.seq) for d in queue.list()] == [
        (sub_first, 1),
        (sub_second, 1),
        (sub_first, 2),
        (sub_second, 2),
    ]
    assert [d.event.seq for d in queue.list(sub_id=sub_second)] == [1, 2]
    # first now succeeds; second keeps failing and stays, with one more attempt
    assert queue.retry() == 2
    assert [(d.sub_id, d.attempts, d.reason) for d in queue.list()] == [
        (sub_second, 2, "manual retry failed"),
        (sub_second, 2, "manual retry failed"),
    ]
    assert queue.retry(sub_id=sub_first) == 0
    assert queue.purge(sub_id=sub_first) == 0
    assert queue.purge(sub_id=sub_second) == 2
    assert len(queue) == 0 and queue.stats()["recovered"] == 2
    bus.publish("Z")
    bus.drain()
    assert queue.purge() == 1


def test_dead_letter_state_survives_snapshot_and_restore(backend: Any) -> None:
    config = {"error_policy": "dead_letter", "max_retries": 2, "retry_backoff_ticks": 3}
    bus = backend.bus(**config)
    bus.subscribe(Flaky(bus), name="worker")
    bus.set_clock(5)
    bus.publish("X", payload={"a": [1, 2]})
    bus.publish("Y")
    bus.drain()
    run_ticks(bus, 6, 8)  # both retried once at 8, next due at 14
    bus.publish("Z")
    bus.drain()
    snapshot = json.loads(json.dumps(bus.snapshot()))
    assert len(snapshot["dead_letters"]["retrying"]) == 3

    restored = backend.bus(**config)
    worker = Flaky(restored, failures=1)
    restored.subscribe(worker, name="worker")
    restored.restore(snapshot)
    assert [
        (r.event.seq, r.attempts, r.due_tick) for r in restored.dead_letters.pending_retries()
    ] == [
        (3, 1, 11),
        (1, 2, 14),
        (2, 2, 14),
    ]
    assert restored.dead_letters.pending_retries()[0].error is None
    run_ticks(restored, 9, 30)
    assert worker.calls == [(3, 11), (1, 14), (2, 14), (3, 17)]
    assert restored.dead_letters.list() == []
    assert restored.dead_letters.stats()["recovered"] == 3

    # the same for dead letters already buried
    bus.dead_letters.purge()
    run_ticks(bus, 9, 40)
    assert len(bus.dead_letters) == 3
    again = backend.bus(**config)
    again.restore(json.loads(json.dumps(bus.snapshot())))
    assert [d.to_dict() for d in again.dead_letters.list()] == [
        d.to_dict() for d in bus.dead_letters.list()
    ]
    assert again.dead_letters.stats() == bus.dead_letters.stats()


def test_snapshot_without_dead_letter_state_has_no_key(backend: Any) -> None:
    bus = backend.bus(error_policy="dead_letter")
    bus.publish("X")
    bus.drain()
    assert "dead_letters" not in bus.snapshot()


def test_no_error_path_costs_nothing_extra(backend: Any) -> None:
    """A bus that never dead-letters adds no drain listener."""
    bus = backend.bus()
    bus.subscribe(lambda e: None)
    assert not bus.dead_letters.listening
    bus.subscribe(lambda e: None, error_policy="dead_letter")
    assert bus.dead_letters.listening


# -- backpressure -----------------------------------------------------------------------
def test_pending_overflow_raises_with_advice_and_keeps_what_was_accepted(backend: Any) -> None:
    bus = backend.bus(max_pending=3)
    seen: list[Any] = []
    bus.subscribe(seen.append)
    for n in range(3):
        assert bus.publish("X", payload={"n": n}) == n + 1
    before = [event.to_dict() for event in bus.pending_events()]
    with pytest.raises(PendingOverflowError) as caught:
        bus.publish("X", payload={"n": 3})
    message = str(caught.value)
    assert "3 events are waiting for drain()" in message
    assert "drain() more often" in message and "max_pending" in message
    assert isinstance(caught.value, ringbus.RingbusError)
    assert bus.latest_seq() == 3 and bus.pending_count() == 3
    assert [event.to_dict() for event in bus.pending_events()] == before
    with pytest.raises(PendingOverflowError):
        bus.ingest(bus.event_from_dict({**before[0], "seq": 10}))
    assert bus.drain() == 3
    assert [event.to_dict() for event in seen] == before
    assert bus.publish("X", payload={"n": 3}) == 4  # no seq was used up by the refusals
    assert bus.stats()["published"] == 4
