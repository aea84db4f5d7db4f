"""Stateful property test: producers, drains and snapshots against a model, on both cores.

Hypothesis interleaves the owner's publishes, producers' publishes (from the
owner or from a worker thread that is joined), closing producers, drains
(sync and async) and snapshot+restore onto a fresh bus. After every step
the bus and the model agree on the producers, their inboxes, the pending
queue and the stream a subscriber received.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from ringbus import PendingOverflowError, ProducerClosedError

NAMES = st.sampled_from(["a", "b", "c"])
KINDS = st.sampled_from(["K", "L"])
MAX_PENDING = 8

SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Event = tuple[str, str]  # kind, subject


def make_machine(backend: Any) -> type[RuleBasedStateMachine]:
    class ProducerMachine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.received: list[tuple[int, str, str]] = []
            self.bus = self.new_bus()
            # The model: producers in order with their inboxes, closed names,
            # the owner's pending events and the next seq.
            self.inboxes: dict[str, list[Event]] = {}
            self.closed: set[str] = set()
            self.pending: list[tuple[int, str, str]] = []
            self.seq = 0
            self.count = 0
            self.loop = asyncio.new_event_loop()

        def teardown(self) -> None:
            if hasattr(self, "loop"):
                self.loop.close()

        def new_bus(self) -> Any:
            bus = backend.bus(max_pending=MAX_PENDING)
            bus.subscribe(lambda e: self.received.append((e.seq, e.kind, e.subject_id)))
            return bus

        def subject(self) -> str:
            self.count += 1
            return f"s{self.count}"

        @rule(name=NAMES)
        def get_producer(self, name: str) -> None:
            if name in self.closed:
                try:
                    self.bus.producer(name)
                except ValueError as error:
                    assert "is closed" in str(error)
                    return
                raise AssertionError("a closed producer with events was handed out")
            assert self.bus.producer(name).name == name
            self.inboxes.setdefault(name, [])

        @rule(name=NAMES, kinds=st.lists(KINDS, min_size=1, max_size=4), threaded=st.booleans())
        def producer_publish(self, name: str, kinds: list[str], threaded: bool) -> None:
            if name not in self.inboxes:
                return
            producer = next(p for p in self.bus.producers() if p.name == name)
            events = [(kind, self.subject()) for kind in kinds]
            errors: list[BaseException] = []

            def work() -> None:
                for kind, subject in events:
                    try:
                        producer.publish(kind, subject_id=subject)
                    except ProducerClosedError as error:
                        errors.append(error)

            if threaded:
                thread = threading.Thread(target=work)
                thread.start()
                thread.join()
            else:
                work()
            if name in self.closed:
                assert len(errors) == len(events)
            else:
                assert errors == []
                self.inboxes[name].extend(events)

        @rule(kind=KINDS)
        def owner_publish(self, kind: str) -> None:
            subject = self.subject()
            if len(self.pending) >= MAX_PENDING:
                try:
                    self.bus.publish(kind, subject_id=subject)
                except PendingOverflowError:
                    return
                raise AssertionError("publish past max_pending was accepted")
            self.seq += 1
            assert self.bus.publish(kind, subject_id=subject) == self.seq
            self.pending.append((self.seq, kind, subject))

        def model_drain(self) -> int:
            # Inboxes enter in producer order while the pending queue has room.
            full = False
            for inbox in self.inboxes.values():
                while inbox and not full:
                    if len(self.pending) >= MAX_PENDING:
                        full = True
                        break
                    kind, subject = inbox.pop(0)
                    self.seq += 1
                    self.pending.append((self.seq, kind, subject))
            drained = len(self.pending)
            self.received_expected.extend(self.pending)
            self.pending = []
            for name in [n for n, inbox in self.inboxes.items() if n in self.closed and not inbox]:
                del self.inboxes[name]
                self.closed.discard(name)
            return drained

        @property
        def received_expected(self) -> list[tuple[int, str, str]]:
            if not hasattr(self, "_expected"):
                self._expected: list[tuple[int, str, str]] = []
            return self._expected

        @rule(asynchronous=st.booleans())
        def drain(self, asynchronous: bool) -> None:
            expected = self.model_drain()
            if asynchronous:
                assert self.loop.run_until_complete(self.bus.drain_async()) == expected
            else:
                assert self.bus.drain() == expected

        @rule()
        def close_producers(self) -> None:
            waiting = sum(len(inbox) for inbox in self.inboxes.values())
            assert self.bus.close_producers() == waiting
            for name in list(self.inboxes):
                if self.inboxes[name]:
                    self.closed.add(name)
                else:
                    del self.inboxes[name]

        @rule()
        def snapshot_and_restore(self) -> None:
            snapshot = self.bus.snapshot()
            restored = self.new_bus()
            restored.restore(snapshot)
            self.bus = restored
            # Inboxes travel; the producers come back open, and only those with events.
            self.inboxes = {name: inbox for name, inbox in self.inboxes.items() if inbox}
            self.closed = set()

        @invariant()
        def agrees(self) -> None:
            bus = self.bus
            assert [(p.name, len(p)) for p in bus.producers()] == [
                (name, len(inbox)) for name, inbox in self.inboxes.items()
            ]
            assert [p.name for p in bus.producers() if p.closed] == [
                name for name in self.inboxes if name in self.closed
            ]
            assert [(e.seq, e.kind, e.subject_id) for e in bus.pending_events()] == self.pending
            assert bus.latest_seq() == self.seq
            assert self.received == self.received_expected

    return ProducerMachine


def test_producers_drains_and_snapshots_agree_with_the_model(backend: Any) -> None:
    run_state_machine_as_test(make_machine(backend), settings=SETTINGS)
