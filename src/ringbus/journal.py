"""Append-only JSON Lines journal of events, optionally hash-chained, with a verifier and replay.

File format
-----------
The first line is a header::

    {"chained":true,"format":"ringbus-journal","kinds":null,"version":1}

``kinds`` is the list of kinds/globs the journal records, or ``null`` for
every kind. Every further line is one event, :meth:`WorldEvent.to_dict`
serialised as compact JSON (ASCII only: non-ASCII text is ``\\uXXXX``
escaped, so a line is the same bytes on every platform), plus, in a chained
journal, ``"hash"``: the chain hash of that event.

Chain
-----
``hash = sha256(chain_input).hexdigest()`` with::

    chain_input = f"{seq}|{tick}|{canonical_json(kind)}|{canonical_json(payload)}|{prev}"

encoded as ASCII, where ``canonical_json(x) = json.dumps(x, sort_keys=True,
separators=(",", ":"), ensure_ascii=True, allow_nan=False)``, ``payload`` is
the event's payload as a JSON object (tuples as lists), and ``prev`` is the
previous event line's hash (64 zeros for the first event). The kind is
JSON-quoted so that a ``|`` inside a kind cannot make two different records
hash alike. The chain covers seq, tick, kind and payload (SPEC §6); day, the
ids and the tags are recorded but not chained.

Verification
------------
:func:`verify_journal` (and ``ringbus journal verify FILE``) reports, with
line numbers: a broken chain link (a line altered, inserted or removed), a
sequence gap (seq not exactly the previous + 1), a seq that does not
increase (lines swapped or duplicated), a tick or day that went backwards,
a malformed line, and a torn last line (no final newline: a write cut
short by a crash). A journal that records only some kinds (header
``kinds`` not ``null``) has gaps by design, so gaps are checked only when
it records every kind, unless ``check_gaps`` says otherwise.

Replay
------
:func:`replay_journal` feeds a journal back through a bus, keeping the
original seqs. Subscribers that publish from their handler (the evidence
subscriber's ``EVIDENCE_RAISED``) did so in the live run too, and the
journal holds those events with their original seqs: during replay
``publish`` stores nothing and returns the seq the same event has in the
journal, so the journal's copy is the only one delivered.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ._backend import FIELDS
from ._registry import KindSelector

__all__ = [
    "FSYNC_POLICIES",
    "GENESIS_HASH",
    "JOURNAL_FORMAT",
    "JOURNAL_VERSION",
    "Journal",
    "JournalError",
    "JournalProblem",
    "JournalReport",
    "ReplayReport",
    "canonical_json",
    "chain_hash",
    "chain_input",
    "main",
    "read_journal",
    "replay_journal",
    "verify_journal",
]

logger = logging.getLogger("ringbus")

JOURNAL_FORMAT = "ringbus-journal"
JOURNAL_VERSION = 1
#: ``prev`` of the first event of a chained journal.
GENESIS_HASH = "0" * 64
#: ``"always"``: fsync after every append; ``"close"``: on :meth:`Journal.sync`
#: and :meth:`Journal.close`; ``"never"``: leave it to the OS.
FSYNC_POLICIES = ("always", "close", "never")

_EVENT_FIELDS = FIELDS


class JournalError(Exception):
    """A journal cannot be opened, written, read or replayed as asked."""


def canonical_json(value: object) -> str:
    """Return the canonical JSON text of ``value`` (sorted keys, compact, ASCII)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def chain_input(seq: int, tick: int, kind: str, payload: object, prev: str) -> bytes:
    """Return the bytes a chain hash is computed over (see the module docs)."""
    text = f"{seq}|{tick}|{canonical_json(kind)}|{canonical_json(payload)}|{prev}"
    return text.encode("ascii")


def chain_hash(seq: int, tick: int, kind: str, payload: object, prev: str) -> str:
    """Return the SHA-256 chain hash (hex) of one event given the previous hash."""
    return hashlib.sha256(chain_input(seq, tick, kind, payload, prev)).hexdigest()


def _dumps_line(record: dict[str, Any]) -> bytes:
    return (
        json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False) + "\n"
    ).encode("ascii")


def _header(chained: bool, kinds: list[str] | None) -> dict[str, Any]:
    return {
        "chained": chained,
        "format": JOURNAL_FORMAT,
        "kinds": kinds,
        "version": JOURNAL_VERSION,
    }


def _is_header(record: object) -> bool:
    return isinstance(record, dict) and record.get("format") == JOURNAL_FORMAT


# -- writing ------------------------------------------------------------------
class Journal:
    """A subscriber that appends every event it receives to a JSON Lines file.

    Parameters
    ----------
    path
        The journal file. A new or empty file gets a header; an existing one
        is resumed: its chain continues from its last line.
    chained
        Add a SHA-256 chain hash to every line (see the module docs).
    kinds
        The kinds/globs to record (``None``: every kind). Used as the
        subscription filter by :meth:`attach` and written in the header.
    fsync
        ``"always"`` (fsync after every append: survives power loss),
        ``"close"`` (fsync on :meth:`sync` and :meth:`close`) or ``"never"``.
        Every append is one ``write`` of a whole line, so a killed process
        loses nothing already appended whatever the policy.
    truncate_torn_tail
        When resuming a file whose last line was cut short by a crash, cut
        that partial line off (logged as a warning and counted in
        :attr:`torn_bytes_dropped`); ``False`` raises :class:`JournalError`.

    Raises
    ------
    JournalError
        The file is not a ringbus journal, or its header records other
        ``chained``/``kinds`` settings than asked for.

    Notes
    -----
    A journal is appended in seq order and refuses an event older than its
    last line, so attach it with the ``"raise"`` or ``"log"`` error policy:
    a ``"dead_letter"`` retry would arrive after newer events. A failed
    append (disk full) leaves the file and the chain as they were.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from ringbus import EventBus
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.jsonl"
    >>> bus = EventBus()
    >>> with Journal(path) as journal:
    ...     _ = journal.attach(bus)
    ...     _ = bus.publish("DEPOT_BUILT", subject_id="depot-1")
    ...     _ = bus.drain()
    >>> verify_journal(path).ok
    True
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chained: bool = True,
        kinds: Iterable[str] | str | None = None,
        fsync: str = "close",
        truncate_torn_tail: bool = True,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        if not isinstance(chained, bool):
            raise TypeError(f"chained must be a bool, got {type(chained).__name__}")
        self.path = Path(path)
        self.chained = chained
        self.fsync = fsync
        self._selector = None if kinds is None else KindSelector(kinds)
        self.kinds: list[str] | None = (
            None if self._selector is None else list(self._selector.selectors)
        )
        #: Bytes of a torn last line cut off when the file was resumed.
        self.torn_bytes_dropped = 0
        #: Events appended through this object.
        self.appended = 0
        self.last_seq: int | None = None
        self.last_tick: int | None = None
        self.last_hash = GENESIS_HASH
        self._bus: Any = None
        self._sub_id: int | None = None
        self._broken: str | None = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self._size = os.fstat(self._fd).st_size
            self._resume(truncate_torn_tail)
        except BaseException:
            os.close(self._fd)
            raise

    # -- opening --------------------------------------------------------
    def _tail(self) -> tuple[bytes, int]:
        """The last whole line (without newline) and where the whole lines end."""
        size = self._size
        chunk = 4096
        end = size
        buffer = b""
        # Find the end of the last whole line, then its start.
        while True:
            start = max(0, end - chunk)
            buffer = os.pread(self._fd, end - start, start) + buffer
            end = start
            if buffer.count(b"\n") >= 2 or start == 0:
                break
            chunk *= 2
        whole_end = end + buffer.rfind(b"\n") + 1 if b"\n" in buffer else 0
        body = buffer[: whole_end - end - 1] if whole_end else b""
        last_start = body.rfind(b"\n") + 1
        return body[last_start:], whole_end

    def _resume(self, truncate_torn_tail: bool) -> None:
        if self._size:
            last, whole_end = self._tail()
            if whole_end < self._size:
                torn = self._size - whole_end
                if not truncate_torn_tail:
                    raise JournalError(
                        f"{self.path}: the last line is incomplete ({torn} bytes without a "
                        "newline, a write cut short by a crash); open with "
                        "truncate_torn_tail=True to cut it off and resume"
                    )
                os.ftruncate(self._fd, whole_end)
                self._size = whole_end
                self.torn_bytes_dropped = torn
                logger.warning(
                    "journal %s: cut off an incomplete last line (%d bytes) left by a crash; "
                    "the journal resumes after its last whole line",
                    self.path,
                    torn,
                )
        if not self._size:
            self._write(_dumps_line(_header(self.chained, self.kinds)))
            return
        header = self._read_header()
        if header.get("version") != JOURNAL_VERSION:
            raise JournalError(
                f"{self.path}: journal version {header.get('version')!r} is not supported "
                f"(this ringbus writes version {JOURNAL_VERSION})"
            )
        if header.get("chained") != self.chained or header.get("kinds") != self.kinds:
            raise JournalError(
                f"{self.path}: the journal was written with chained={header.get('chained')!r}, "
                f"kinds={header.get('kinds')!r}; open it with the same settings "
                f"(asked: chained={self.chained!r}, kinds={self.kinds!r}) or use a new file"
            )
        try:
            record = json.loads(last)
        except ValueError as error:
            raise JournalError(
                f"{self.path}: the last line is not valid JSON ({error}); "
                "run 'ringbus journal verify' on it"
            ) from None
        if _is_header(record):
            return
        if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
            raise JournalError(f"{self.path}: the last line is not a journal event")
        self.last_seq = record["seq"]
        self.last_tick = record.get("tick")
        if self.chained:
            stored = record.get("hash")
            if not isinstance(stored, str) or len(stored) != 64:
                raise JournalError(f"{self.path}: the last line has no chain hash")
            self.last_hash = stored

    def _read_header(self) -> dict[str, Any]:
        first = os.pread(self._fd, min(self._size, 65536), 0).split(b"\n", 1)[0]
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if not _is_header(header):
            raise JournalError(
                f"{self.path}: not a ringbus journal (the first line is not a "
                f'{{"format": "{JOURNAL_FORMAT}", ...}} header)'
            )
        assert isinstance(header, dict)
        return header

    # -- appending -------------------------------------------------------
    def _write(self, data: bytes) -> None:
        """Append ``data`` whole, or roll the file back and raise."""
        if self._broken is not None:
            raise JournalError(self._broken)
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
            if self.fsync == "always":
                os.fsync(self._fd)
        except BaseException as error:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as rollback:
                self._broken = (
                    f"{self.path}: an append failed ({error}) and could not be rolled back "
                    f"({rollback}); the file may end with a partial line: reopen the journal "
                    "(a torn last line is cut off then) before appending again"
                )
            raise
        self._size += len(data)

    def append(self, event: Any) -> None:
        """Append one event (the subscriber's handler).

        The line is written with one ``write``; if the write fails the file
        is cut back to where it was and the chain does not advance, so the
        same event can be appended again later.

        Raises
        ------
        ValueError
            The event's seq is not after the last appended one, or its kind
            is not one this journal records.
        JournalError
            The journal is closed.
        OSError
            The write failed (the journal is unchanged).
        """
        if self._fd < 0:
            raise JournalError(f"{self.path}: the journal is closed")
        if self._selector is not None and event.kind not in self._selector:
            raise ValueError(
                f"event kind {event.kind!r} is not recorded by this journal (kinds={self.kinds!r})"
            )
        seq = event.seq
        if self.last_seq is not None and seq <= self.last_seq:
            raise ValueError(
                f"event seq {seq} is not after the last journaled seq {self.last_seq}: "
                "a journal is appended in seq order"
            )
        record = event.to_dict()
        if self.chained:
            digest = chain_hash(
                seq, record["tick"], record["kind"], record["payload"], self.last_hash
            )
            record["hash"] = digest
        self._write(_dumps_line(record))
        self.last_seq = seq
        self.last_tick = record["tick"]
        if self.chained:
            self.last_hash = digest
        self.appended += 1

    __call__ = append

    def attach(self, bus: Any, *, name: str = "journal", error_policy: str | None = None) -> int:
        """Subscribe :meth:`append` to ``bus`` (only this journal's kinds); return the sub id."""
        if self._sub_id is not None:
            raise RuntimeError("this journal is already attached to a bus; detach() it first")
        if getattr(bus, "clock_policy", "monotonic") != "monotonic":
            raise ValueError(
                f"a journal needs a bus with clock_policy='monotonic', this one is "
                f"{bus.clock_policy!r}: the verifier refuses time that goes backwards"
            )
        self._sub_id = bus.subscribe(
            self.append, kinds=self.kinds, name=name, error_policy=error_policy
        )
        self._bus = bus
        return self._sub_id

    def detach(self) -> None:
        """Unsubscribe from the bus :meth:`attach` subscribed to."""
        if self._sub_id is not None:
            self._bus.unsubscribe(self._sub_id)
            self._sub_id = None
            self._bus = None

    def sync(self) -> None:
        """Flush the appended lines to stable storage (unless ``fsync="never"``)."""
        if self._fd >= 0 and self.fsync != "never":
            os.fsync(self._fd)

    def close(self) -> None:
        """Detach, sync (per the fsync policy) and close the file; closing twice is fine."""
        if self._fd < 0:
            return
        self.detach()
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._fd < 0

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Journal {str(self.path)!r} chained={self.chained} last_seq={self.last_seq} "
            f"{'closed' if self.closed else 'open'}>"
        )


# -- verifying ----------------------------------------------------------------
@dataclass(frozen=True)
class JournalProblem:
    """One problem found in a journal.

    Attributes
    ----------
    line
        1-based line number in the file.
    kind
        ``"chain"``, ``"gap"``, ``"order"``, ``"clock"``, ``"malformed"``,
        ``"header"`` or ``"torn"``.
    message
        What is wrong, in words.
    """

    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"


@dataclass
class JournalReport:
    """What :func:`verify_journal` found.

    Attributes
    ----------
    path
        The file.
    lines
        Lines read (the header and a torn last line included).
    events
        Event lines read.
    chained, kinds
        From the header (``chained`` guessed from the first event when there
        is no header).
    gaps_checked
        Whether sequence gaps counted as problems.
    first_seq, last_seq, last_hash
        Of the event lines read.
    problems
        Every problem, in line order; empty means the journal is intact.
    """

    path: str
    lines: int = 0
    events: int = 0
    chained: bool = False
    kinds: list[str] | None = None
    gaps_checked: bool = True
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    problems: list[JournalProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    @property
    def first_problem(self) -> JournalProblem | None:
        """The first problem in line order, or ``None``."""
        return self.problems[0] if self.problems else None

    @property
    def torn(self) -> bool:
        """Whether the last line is incomplete (a write cut short by a crash)."""
        return any(problem.kind == "torn" for problem in self.problems)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        return data


def _check_event_record(record: object, chained: bool) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name in _EVENT_FIELDS if name not in record]
    if missing:
        return f"missing fields {', '.join(missing)}"
    for name in ("seq", "tick", "day"):
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name} is not an int >= 0: {value!r}"
    if not isinstance(record["kind"], str) or not record["kind"]:
        return "kind is not a non-empty string"
    if not isinstance(record["payload"], dict):
        return "payload is not a JSON object"
    if chained:
        digest = record.get("hash")
        if not isinstance(digest, str) or len(digest) != 64:
            return "missing or malformed chain hash"
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line number, line without newline, whole)`` for every line."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            whole = raw.endswith(b"\n")
            yield number, raw[:-1] if whole else raw, whole


def verify_journal(
    path: str | os.PathLike[str], *, check_gaps: bool | None = None
) -> JournalReport:
    """Check a journal line by line and report every problem with its line number.

    Parameters
    ----------
    path
        The journal file.
    check_gaps
        Count a seq that is not the previous + 1 as a problem. ``None``
        (default): only when the header says the journal records every
        kind (or there is no header).

    Returns
    -------
    JournalReport
        ``report.ok`` is ``True`` when nothing is wrong; otherwise
        ``report.problems`` lists each broken chain link, gap, seq out of
        order, tick/day that went backwards, malformed line, and a torn
        last line, in line order.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    path = Path(path)
    report = JournalReport(path=str(path))
    problems = report.problems
    prev_hash: str | None = GENESIS_HASH
    last_seq: int | None = None
    last_tick = last_day = -1
    for number, line, whole in _lines(path):
        report.lines = number
        if not whole:
            problems.append(
                JournalProblem(
                    number,
                    "torn",
                    f"the last line is incomplete ({len(line)} bytes without a newline): a "
                    "write was cut short, e.g. by a crash; the journal is whole up to line "
                    f"{number - 1}, and reopening it with Journal() cuts the partial line off",
                )
            )
            break
        try:
            record = json.loads(line)
        except ValueError as error:
            problems.append(JournalProblem(number, "malformed", f"not valid JSON ({error})"))
            prev_hash = None
            continue
        if number == 1:
            if _is_header(record):
                if record.get("version") != JOURNAL_VERSION:
                    problems.append(
                        JournalProblem(
                            1, "header", f"unsupported journal version {record.get('version')!r}"
                        )
                    )
                report.chained = bool(record.get("chained"))
                kinds = record.get("kinds")
                report.kinds = list(kinds) if isinstance(kinds, list) else None
                report.gaps_checked = report.kinds is None if check_gaps is None else check_gaps
                continue
            report.chained = isinstance(record, dict) and "hash" in record
            report.gaps_checked = True if check_gaps is None else check_gaps
        elif _is_header(record):
            problems.append(JournalProblem(number, "header", "a header line in the middle"))
            continue
        fault = _check_event_record(record, report.chained)
        if fault is not None:
            problems.append(JournalProblem(number, "malformed", f"not a journal event: {fault}"))
            prev_hash = None
            continue
        seq, tick, day = record["seq"], record["tick"], record["day"]
        report.events += 1
        if report.first_seq is None:
            report.first_seq = seq
        if report.chained:
            stored = record["hash"]
            if prev_hash is not None:
                try:
                    expected = chain_hash(seq, tick, record["kind"], record["payload"], prev_hash)
                except (TypeError, ValueError) as error:
                    expected = f"(cannot be computed: {error})"
                if stored != expected:
                    problems.append(
                        JournalProblem(
                            number,
                            "chain",
                            f"chain broken at seq {seq}: the stored hash does not match this "
                            "line and the line before it; this line was altered, or a line "
                            "before it was removed, inserted or moved",
                        )
                    )
            prev_hash = stored
            report.last_hash = stored
        if last_seq is not None:
            if seq <= last_seq:
                problems.append(
                    JournalProblem(
                        number,
                        "order",
                        f"seq {seq} does not increase (previous line has seq {last_seq}): "
                        "lines were swapped, duplicated or moved",
                    )
                )
            elif report.gaps_checked and seq != last_seq + 1:
                problems.append(
                    JournalProblem(
                        number,
                        "gap",
                        f"sequence gap: seq {seq} follows seq {last_seq} "
                        f"({seq - last_seq - 1} event(s) missing)",
                    )
                )
        if tick < last_tick:
            problems.append(
                JournalProblem(number, "clock", f"tick went backwards from {last_tick} to {tick}")
            )
        elif day < last_day:
            problems.append(
                JournalProblem(number, "clock", f"day went backwards from {last_day} to {day}")
            )
        last_seq = seq
        report.last_seq = seq
        last_tick, last_day = tick, day
    return report


def read_journal(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, event dict)`` for every whole event line of a journal.

    The header is skipped, the ``hash`` key removed, and a torn last line
    (from a crash) ignored; use :func:`verify_journal` to check the file.

    Raises
    ------
    JournalError
        A whole line is not valid JSON or not an event.
    """
    for number, line, whole in _lines(Path(path)):
        if not whole:
            return
        try:
            record = json.loads(line)
        except ValueError as error:
            raise JournalError(f"{path}, line {number}: not valid JSON ({error})") from None
        if _is_header(record):
            continue
        fault = _check_event_record(record, False)
        if fault is not None:
            raise JournalError(f"{path}, line {number}: not a journal event: {fault}")
        record.pop("hash", None)
        yield number, record


# -- replaying ----------------------------------------------------------------
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
    """

    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    republished: int = 0
    unmatched: int = 0
    torn: bool = False


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
        than a torn last line, which is left out.

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
        checked = verify_journal(source)
        report.torn = checked.torn
        serious = [problem for problem in checked.problems if problem.kind != "torn"]
        if serious:
            raise JournalError(
                f"{source}: refusing to replay a journal with problems, first: {serious[0]} "
                "(pass verify=False to replay it anyway)"
            )
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
            event = bus.event_from_dict(record)
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


# -- command line -------------------------------------------------------------
def _verify_command(args: argparse.Namespace) -> int:
    try:
        report = verify_journal(args.file, check_gaps=args.gaps)
    except OSError as error:
        print(f"ringbus journal verify: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    if report.ok:
        chain = "chain intact" if report.chained else "not chained"
        print(
            f"{args.file}: OK, {report.events} events, seq {report.first_seq}..{report.last_seq}, "
            f"{chain}, gaps {'checked' if report.gaps_checked else 'not checked'}"
        )
        return 0
    print(
        f"{args.file}: {len(report.problems)} problem(s); first at line {report.problems[0].line}"
    )
    for problem in report.problems[: args.max_problems]:
        print(f"  {problem}")
    if len(report.problems) > args.max_problems:
        print(f"  ... and {len(report.problems) - args.max_problems} more")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``ringbus journal verify FILE`` (exit 1 on any problem) or ``replay FILE``."""
    parser = argparse.ArgumentParser(
        prog="ringbus journal", description="Work with ringbus event journals (JSON Lines)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="check the chain, seq order and gaps, the clock, and a torn last line",
        description="Check a journal; print each problem with its line number. "
        "Exit 0 when intact, 1 on any problem, 2 when the file cannot be read.",
    )
    verify.add_argument("file", help="the journal file")
    gaps = verify.add_mutually_exclusive_group()
    gaps.add_argument(
        "--gaps",
        dest="gaps",
        action="store_const",
        const=True,
        default=None,
        help="report seq gaps even if the journal records only some kinds",
    )
    gaps.add_argument(
        "--no-gaps", dest="gaps", action="store_const", const=False, help="do not report seq gaps"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--max-problems", type=int, default=20, help="problems to print (default 20)"
    )
    replay = commands.add_parser(
        "replay",
        help="feed a journal through a fresh bus and print the KPIs it rebuilds",
        description="Replay a journal into a bus with a KPI subscriber and print "
        "the replay report and the KPI summary as JSON. Exit 1 if the journal has "
        "problems (a torn last line is left out), 2 if it cannot be read.",
    )
    replay.add_argument("file", help="the journal file")
    replay.add_argument(
        "--no-verify", action="store_true", help="replay even if the journal has problems"
    )
    replay.add_argument("--days", type=int, default=7, help="closed days to show (default 7)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "replay":
        return _replay_command(args)
    return _verify_command(args)


def _replay_command(args: argparse.Namespace) -> int:
    from . import EventBus, EventBusConfig
    from .kpi import KpiSubscriber

    bus = EventBus(EventBusConfig(max_events=1024, name="replay"))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    try:
        report = replay_journal(args.file, bus, verify=not args.no_verify)
    except OSError as error:
        print(f"ringbus journal replay: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    except (JournalError, ValueError) as error:
        print(f"ringbus journal replay: {error}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"replay": dataclasses.asdict(report), "kpi": kpi.summary(last_days=args.days)},
            indent=2,
        )
    )
    return 0
