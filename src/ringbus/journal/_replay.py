"""Replay: feed a journal back through a bus to rebuild subscriber state."""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._format import JournalError, canonical_json
from ._verify import read_journal, verify_journal

__all__ = ["ReplayReport", "replay_journal"]

#: Problems a replay accepts: the events there are whole and chained.
_REPLAYABLE = ("torn", "unsealed")


@dataclass
class ReplayReport:
    """What :func:`replay_journal` did.

    Attributes
    ----------
    events
        Events fed to the bus.
    first_seq, last_seq
        Of those events.
    republished
        ``publish`` calls made by subscribers during the replay that matched
        an event already in the journal (they return its original seq).
    unmatched
        ``publish`` calls with no matching event in the journal (a journal
        that records only some kinds); they stored nothing and returned 0.
    torn
        The journal ended with a torn line, which was left out.
    sealed
        The journal ended with a seal (``False``: a crashed or still running
        writer, or a cut tail; the events there were replayed).
    """

    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    republished: int = 0
    unmatched: int = 0
    torn: bool = False
    sealed: bool = False


def _content_key(record: dict[str, Any]) -> str:
    return canonical_json({name: value for name, value in record.items() if name != "seq"})


class _ReplayPublish:
    """Stands in for ``bus.publish`` during a replay (see :func:`replay_journal`)."""

    def __init__(self, bus: Any, records: Sequence[dict[str, Any]], report: ReplayReport) -> None:
        self._bus = bus
        self._report = report
        self._seqs: dict[str, deque[int]] = {}
        for record in records:
            self._seqs.setdefault(_content_key(record), deque()).append(record["seq"])
        config = dataclasses.replace(bus.config, max_events=1, max_pending=1, enabled=True)
        self._scratch = type(bus)(config)
        #: Seq of the first event of the batch being drained: an event a
        #: handler publishes now got a later seq in the live run.
        self.floor = 0

    def __call__(
        self, kind: str, tick: int | None = None, day: int | None = None, **fields: Any
    ) -> int:
        scratch = self._scratch
        scratch.set_clock(self._bus.tick, self._bus.day)
        scratch.publish(kind, tick, day, **fields)
        event = scratch.pending_events()[-1]
        scratch.drain()
        seqs = self._seqs.get(_content_key(event.to_dict()))
        while seqs and seqs[0] <= self.floor:
            seqs.popleft()
        if not seqs:
            self._report.unmatched += 1
            return 0
        self._report.republished += 1
        return seqs.popleft()


def replay_journal(
    source: str | os.PathLike[str], bus: Any, *, verify: bool = True
) -> ReplayReport:
    """Feed a journal's events through ``bus``, keeping their seqs, to rebuild subscriber state.

    Attach the subscribers to a fresh bus, then replay. For each event the
    bus clock is set to the event's tick and day, the event is ingested
    with its original seq (gaps are fine), and the bus is drained whenever
    the tick changes and at the end, like a sim loop.

    While the replay runs, ``bus.publish`` stores nothing: an event that a
    subscriber publishes from its handler (e.g. ``EVIDENCE_RAISED``) was
    published in the live run too and is already in the journal, where the
    replay delivers it at its original seq. The call returns that original
    seq, so state that keeps it (an evidence item's ``event_seq``) matches
    the live run: the match is the first journal event with the same
    fields (all but seq), not matched before, whose seq is after the first
    event of the batch being drained. A publish with no match (the journal
    records only some kinds) returns 0 and is counted in
    ``report.unmatched``.

    Parameters
    ----------
    source
        The journal file.
    bus
        The bus to feed; its ``latest_seq()`` must be below the journal's
        first seq.
    verify
        Refuse a journal with problems (see :func:`verify_journal`) other
        than a torn last line, which is left out, and a missing seal.

    Notes
    -----
    The journal's events are read into memory first (to match what
    subscribers publish); split very long runs into several journals.

    Raises
    ------
    JournalError
        The journal has problems, or a subscriber published through
        something other than ``bus.publish`` during the replay.
    ValueError
        An event's seq is not after the bus's ``latest_seq()``.
    """
    report = ReplayReport()
    if verify:
        checked = verify_journal(source, allow_empty=True, allow_unchained=True)
        report.torn = checked.torn
        report.sealed = checked.sealed
        serious = [problem for problem in checked.problems if problem.kind not in _REPLAYABLE]
        if serious:
            refused = JournalError(
                f"{source}: refusing to replay a journal with problems, first: {serious[0]} "
                "(pass verify=False to replay it anyway)"
            )
            refused.problems = tuple(serious)
            raise refused
    numbered = list(read_journal(source))
    publish = _ReplayPublish(bus, [record for _number, record in numbered], report)
    expected = bus.latest_seq()

    def check_untouched() -> None:
        if bus.latest_seq() != expected:
            raise JournalError(
                "a subscriber published an event during the replay without going through "
                f"bus.publish (latest_seq moved from {expected} to {bus.latest_seq()}); "
                "the replay cannot keep the journal's seqs"
            )

    batch_first: int | None = None

    def drain() -> None:
        nonlocal batch_first
        if batch_first is not None:
            publish.floor = batch_first
        batch_first = None
        bus.drain()
        check_untouched()

    bus.publish = publish
    try:
        tick: int | None = None
        for number, record in numbered:
            try:
                event = bus.event_from_dict(record)
            except (TypeError, ValueError) as error:
                raise JournalError(f"{source}, line {number}: {error}") from None
            if event.tick != tick:
                if tick is not None:
                    drain()
                tick = event.tick
            bus.set_clock(event.tick, event.day)
            check_untouched()
            try:
                bus.ingest(event)
            except ValueError as error:
                raise ValueError(f"{source}, line {number}: {error}") from error
            expected = event.seq
            if batch_first is None:
                batch_first = event.seq
            report.events += 1
            if report.first_seq is None:
                report.first_seq = event.seq
            report.last_seq = event.seq
            if bus.pending_count() >= bus.max_pending:
                drain()
        drain()
    finally:
        del bus.publish
    return report
