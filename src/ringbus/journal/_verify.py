"""Checking a journal: the chain, marks, signatures, order, gaps, clock and tail."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import json.scanner
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import isfinite
from pathlib import Path
from typing import IO, Any

from .._backend import FIELDS
from .._normalise import event_dict_problems
from .._registry import KindSelector
from ._format import (
    CHAINED_FORMAT,
    GENESIS_HASH,
    JOURNAL_VERSION,
    MARK_KINDS,
    UNCHAINED_FORMAT,
    V1_UNPROTECTED,
    JournalError,
    chain_hash,
    encode_canonical,
    genesis_hash,
    mark_message,
    read_event_line,
)
from ._sign import VerifyKey, load_public_key

__all__ = [
    "JournalProblem",
    "JournalReport",
    "check_event_record",
    "open_journal_file",
    "read_journal",
    "verify_journal",
]

_INT_MAX = 2**63 - 1
_INT_MIN = -(2**63)
_EVENT_FIELDS = FIELDS
_EVENT_FIELD_SET = frozenset(FIELDS)


@dataclass(frozen=True)
class JournalProblem:
    """One problem found in a journal.

    Attributes
    ----------
    line
        1-based line number in the file.
    kind
        ``"chain"``, ``"gap"``, ``"order"``, ``"clock"``, ``"malformed"``,
        ``"header"``, ``"version"``, ``"unchained"``, ``"kind"``,
        ``"checkpoint"``, ``"signature"``, ``"torn"``, ``"unsealed"``,
        ``"empty"`` or ``"expect"``.
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
    version
        The header's format version (``None`` without a readable header).
    lines
        Lines read (the header and a torn last line included).
    events
        Event lines read.
    chained, kinds, signed
        From the header.
    gaps_checked
        Whether sequence gaps counted as problems.
    first_seq, last_seq
        Of the event lines read.
    last_hash
        The chain head: the hash of the last whole line.
    sealed
        The journal ends with a seal whose count and head match.
    checkpoint_line, checkpoint_events
        The last checkpoint or seal line and the events it covers.
    signatures_checked
        Signed marks checked against the public key given.
    notes
        Things to know that are not problems (e.g. what format v1 leaves
        unprotected).
    problems
        Every problem, in line order; empty means the journal is intact.
    """

    path: str
    version: int | None = None
    lines: int = 0
    events: int = 0
    chained: bool = False
    kinds: list[str] | None = None
    signed: bool = False
    gaps_checked: bool = True
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    sealed: bool = False
    checkpoint_line: int | None = None
    checkpoint_events: int = 0
    signatures_checked: int = 0
    notes: list[str] = field(default_factory=list)
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

    @property
    def status(self) -> str:
        """``"sealed"``, ``"unsealed"``, ``"torn"`` or ``"v1"`` (no marks in format v1)."""
        if self.torn:
            return "torn"
        if self.version == 1:
            return "v1"
        return "sealed" if self.sealed else "unsealed"

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        data["status"] = self.status
        return data


def _int_fault(value: object, depth: int = 0) -> bool:
    """Whether ``value`` holds an int outside signed 64 bits (or is nested too deep)."""
    if type(value) is int:
        return not _INT_MIN <= value <= _INT_MAX
    if type(value) is list:
        if depth > 32:
            return True
        return any(_int_fault(item, depth + 1) for item in value)
    return False


_CHAINED_KEYS = _EVENT_FIELD_SET | {"hash"}
_SCALARS = (str, bool, type(None))


def _looks_right(record: dict[str, Any]) -> bool:
    """The common case, checked quickly: a well-formed chained event line."""
    if record.keys() != _CHAINED_KEYS:
        return False
    seq, tick, day, kind = record["seq"], record["tick"], record["day"], record["kind"]
    if not (
        type(seq) is int
        and type(tick) is int
        and type(day) is int
        and 0 <= seq <= _INT_MAX
        and 0 <= tick <= _INT_MAX
        and 0 <= day <= _INT_MAX
        and type(kind) is str
        and kind
        and type(record["hash"]) is str
        and len(record["hash"]) == 64
    ):
        return False
    payload = record["payload"]
    if type(payload) is not dict:
        return False
    for value in payload.values():
        kind_of = type(value)
        if kind_of is int:
            if not _INT_MIN <= value <= _INT_MAX:
                return False
        elif kind_of is float:
            if not isfinite(value):
                return False
        elif kind_of not in _SCALARS:
            return False
    polity, ward, actor, subject = (
        record["polity_id"],
        record["ward_id"],
        record["actor_id"],
        record["subject_id"],
    )
    if not (
        (polity is None or type(polity) is str)
        and (ward is None or type(ward) is str)
        and (actor is None or type(actor) is str)
        and (subject is None or type(subject) is str)
    ):
        return False
    tags = record["tags"]
    if type(tags) is not list:
        return False
    return not tags or all(type(tag) is str for tag in tags)


def check_event_record(record: object, chained: bool) -> str | None:
    """Return what is wrong with an event line's JSON, or ``None``.

    The rules are the event schema's (:func:`ringbus._normalise.event_dict_problems`),
    the same the cores apply to every event; the common case is checked
    quickly first.
    """
    if chained and type(record) is dict and _looks_right(record):
        return None
    if not isinstance(record, dict):
        return "not a JSON object"
    fields = {name: value for name, value in record.items() if name != "hash"}
    problems = event_dict_problems(fields)
    if problems:
        return problems[0]
    if chained:
        digest = record.get("hash")
        if not isinstance(digest, str) or len(digest) != 64:
            return "missing or malformed chain hash"
    return None


def open_journal_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a journal for reading, or raise a :class:`JournalError` naming the path."""
    target = Path(path)
    if target.is_dir():
        raise JournalError(f"{target} is a directory, not a journal file")
    try:
        return target.open("rb")
    except FileNotFoundError:
        raise JournalError(f"{target}: no such file") from None
    except OSError as error:
        raise JournalError(f"cannot read {target}: {error.strerror or error}") from None


def _parse(line: bytes) -> tuple[Any, str | None]:
    """The JSON value of one line, or an explanation of why there is none."""
    if not line.isascii():
        return None, "not ASCII: a journal line is ASCII JSON (invalid UTF-8 or raw bytes)"
    try:
        return json.loads(line), None
    except RecursionError:
        return None, "nested too deeply to be a journal line"
    except ValueError as error:
        return None, f"not valid JSON ({str(error)[:120]})"


_make_scanner: Any = getattr(json.scanner, "c_make_scanner", None) or json.scanner.make_scanner
_scan_once: Any = _make_scanner(json.JSONDecoder())


def _lines(file: IO[bytes]) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line number, line without newline, whole)`` for every line."""
    for number, raw in enumerate(file, start=1):
        if raw[-1:] == b"\n":
            yield number, raw[:-1], True
        else:
            yield number, raw, False


def _header_fault(header: dict[str, Any]) -> str | None:
    kinds = header.get("kinds")
    if kinds is not None and (
        not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds)
    ):
        return "kinds is not null or a list of strings"
    if header.get("version") == 1:
        if not isinstance(header.get("chained"), bool):
            return "chained is not true or false"
        return None
    every = header.get("checkpoint_every")
    if type(every) is not int or every < 0:
        return "checkpoint_every is not an int >= 0"
    if header.get("format") == CHAINED_FORMAT and not isinstance(header.get("signed"), bool):
        return "signed is not true or false"
    return None


def verify_journal(
    path: str | os.PathLike[str],
    *,
    check_gaps: bool | None = None,
    allow_unchained: bool = False,
    allow_empty: bool = False,
    allow_unsealed: bool = False,
    expect_head: str | None = None,
    expect_count: int | None = None,
    public_key: str | os.PathLike[str] | bytes | VerifyKey | None = None,
    strict: bool = False,
) -> JournalReport:
    """Check a journal line by line and report every problem with its line number.

    Parameters
    ----------
    path
        The journal file.
    check_gaps
        Count a seq that is not the previous + 1 as a problem. ``None``
        (default): when the header says the journal records every kind. A
        journal of some kinds has gaps by design; its (chained) header says
        which kinds, an event of another kind is a problem, and a removed
        event breaks the chain.
    allow_unchained
        Accept an unchained journal (only its structure is checked).
    allow_empty
        Accept a 0-byte file or a journal without events.
    allow_unsealed
        Accept a journal without a final seal (still being written, or a
        crashed writer); a torn last line is still a problem.
    expect_head, expect_count
        The chain head and event count kept elsewhere (e.g. from
        ``Journal.last_hash`` and ``Journal.events`` at close): a mismatch
        is a problem.
    public_key
        An Ed25519 public key (PEM path, PEM bytes or
        :class:`~ringbus.journal.VerifyKey`): every checkpoint and the seal
        must carry a valid signature by it, so a rewritten chain is refused
        even when every hash is consistent. Needs the ``sign`` extra.
    strict
        Also require every event line to be exactly the canonical bytes of
        its record. Without it, a line laid out as the writer lays it out is
        checked by hashing its bytes as they are, which is the same hash for
        every line a writer produced and spares an encode per line; a line
        whose stored hash matches its bytes but not their canonical form can
        only come from rewriting the chain, which only signatures or a head
        kept elsewhere reveal, with or without ``strict``.

    Returns
    -------
    JournalReport
        ``report.ok`` is ``True`` when nothing is wrong; otherwise
        ``report.problems`` lists each problem in line order.

    Raises
    ------
    JournalError
        The file cannot be read (missing, a directory, no permission), or
        the public key cannot be loaded.
    """
    key = None if public_key is None else load_public_key(public_key)
    with open_journal_file(path) as file:
        return _verify(
            file,
            JournalReport(path=str(path)),
            check_gaps=check_gaps,
            allow_unchained=allow_unchained,
            allow_empty=allow_empty,
            allow_unsealed=allow_unsealed,
            expect_head=expect_head,
            expect_count=expect_count,
            key=key,
            strict=strict,
        )


def _verify(
    file: IO[bytes],
    report: JournalReport,
    *,
    check_gaps: bool | None,
    allow_unchained: bool,
    allow_empty: bool,
    allow_unsealed: bool,
    expect_head: str | None,
    expect_count: int | None,
    key: VerifyKey | None,
    strict: bool,
) -> JournalReport:
    problems = report.problems
    add = problems.append
    prev: str | None = None
    last_seq: int | None = None
    last_tick = last_day = -1
    version = JOURNAL_VERSION
    selector: KindSelector | None = None
    sha256 = hashlib.sha256
    encode = encode_canonical
    scan_once = _scan_once
    read_line = read_event_line
    line_number = 0
    events = 0
    # Lines exactly as the writer lays them out (nearly all) are read by
    # read_event_line, which checks their form and hash in one pass; any
    # other line takes the general path below, which explains what is wrong.
    fast = False
    for number, raw in enumerate(file, start=1):
        line_number = number
        if fast and prev is not None and raw[-1:] == b"\n":
            hit = read_line(raw[:-1], prev)
            if hit is not None:
                seq, tick, day, kind, prev = hit
                events += 1
                report.sealed = False
                report.last_hash = prev
                if last_seq is None:
                    if report.first_seq is None:
                        report.first_seq = seq
                elif seq <= last_seq or (report.gaps_checked and seq != last_seq + 1):
                    _order_problem(number, seq, last_seq, add)
                if selector is not None and kind not in selector:
                    _kind_problem(number, kind, report, add)
                if tick < last_tick or day < last_day:
                    _clock_problem(number, tick, day, last_tick, last_day, add)
                last_seq = seq
                last_tick, last_day = tick, day
                continue
        if raw[-1:] != b"\n":
            line = raw
            report.lines = number
            report.events = events
            add(
                JournalProblem(
                    number,
                    "torn",
                    f"the last line is incomplete ({len(line)} bytes without a newline): a "
                    "write was cut short, e.g. by a crash; the journal is whole up to line "
                    f"{number - 1}{_coverage(report)}, and reopening it with Journal() cuts "
                    "the partial line off",
                )
            )
            break
        line = raw[:-1]
        try:
            text = line.decode("ascii")
            record, end = scan_once(text, 0)
            if end != len(text):
                record = None
        except (ValueError, RecursionError, StopIteration):
            record = None
        if type(record) is not dict:
            _value, why = _parse(line)
            add(JournalProblem(number, "malformed", why or "not a JSON object"))
            prev = None
            continue
        if number == 1:
            if "format" in record:
                if not _read_header(record, report, add, check_gaps, allow_unchained, key):
                    report.lines = 1
                    return report
                version = report.version or JOURNAL_VERSION
                if report.kinds is not None and version >= 2:
                    selector = KindSelector(report.kinds)
                prev = (
                    (GENESIS_HASH if version == 1 else genesis_hash(record))
                    if report.chained
                    else None
                )
                report.last_hash = prev
                fast = report.chained and version >= 2
                continue
            add(
                JournalProblem(
                    1,
                    "header",
                    "the first line is not a journal header: the header was deleted or "
                    "replaced, or this is not a ringbus journal",
                )
            )
            report.version = JOURNAL_VERSION
            report.chained = "hash" in record
            report.gaps_checked = True if check_gaps is None else check_gaps
        elif "format" in record:
            add(JournalProblem(number, "header", "a header line in the middle"))
            prev = None
            continue
        chained = report.chained
        if "mark" in record and version >= 2:
            report.events = events
            prev = _check_mark(number, record, report, prev, last_seq, key, add)
            continue
        fault = check_event_record(record, chained)
        if fault is not None:
            add(JournalProblem(number, "malformed", f"not a journal event: {fault}"))
            prev = None
            continue
        if not chained and "hash" in record:
            add(
                JournalProblem(
                    number,
                    "header",
                    "a chain hash in an unchained journal: the header was edited to turn "
                    "the chain off",
                )
            )
        seq, tick, day = record["seq"], record["tick"], record["day"]
        events += 1
        report.sealed = False
        if last_seq is None and report.first_seq is None:
            report.first_seq = seq
        if chained:
            stored = record.pop("hash")
            if prev is not None:
                expected = ""
                if version >= 2 and line[-75:-66] == b',"hash":"':
                    # The line as the writer lays it out: its canonical bytes with the
                    # hash member last. Hashing those bytes as they are spares an encode;
                    # strict also checks they are canonical (see verify_journal).
                    body = line[:-75] + b"}"
                    expected = sha256(prev.encode("ascii") + body).hexdigest()
                    if strict and expected == stored and body != encode(record).encode():
                        expected = ""
                if expected != stored:
                    try:
                        if version == 1:
                            expected = chain_hash(
                                seq, tick, record["kind"], record["payload"], prev
                            )
                        else:
                            expected = sha256((prev + encode(record)).encode("ascii")).hexdigest()
                    except (TypeError, ValueError, RecursionError) as error:
                        expected = f"(cannot be computed: {error})"
                if stored != expected:
                    add(
                        JournalProblem(
                            number,
                            "chain",
                            f"chain broken at seq {seq}: the stored hash does not match this "
                            "line and the line before it; this line was altered, or a line "
                            "before it was removed, inserted or moved",
                        )
                    )
            prev = stored
            report.last_hash = stored
        if selector is not None and record["kind"] not in selector:
            _kind_problem(number, record["kind"], report, add)
        if last_seq is not None:
            _order_problem(number, seq, last_seq, add, report.gaps_checked)
        _clock_problem(number, tick, day, last_tick, last_day, add)
        last_seq = seq
        last_tick, last_day = tick, day
    report.lines = line_number
    report.events = events
    report.last_seq = last_seq
    _finish(report, line_number, allow_empty, allow_unsealed, expect_head, expect_count, key)
    return report


def _kind_problem(number: int, kind: str, report: JournalReport, add: Any) -> None:
    add(
        JournalProblem(
            number,
            "kind",
            f"kind {kind!r} is not one the header says this journal records ({report.kinds})",
        )
    )


def _order_problem(
    number: int, seq: int, last_seq: int, add: Any, gaps_checked: bool = True
) -> None:
    """Report a seq that does not increase, or (``gaps_checked``) skips some."""
    if seq <= last_seq:
        add(
            JournalProblem(
                number,
                "order",
                f"seq {seq} does not increase (previous line has seq {last_seq}): "
                "lines were swapped, duplicated or moved",
            )
        )
    elif gaps_checked and seq != last_seq + 1:
        add(
            JournalProblem(
                number,
                "gap",
                f"sequence gap: seq {seq} follows seq {last_seq} "
                f"({seq - last_seq - 1} event(s) missing)",
            )
        )


def _clock_problem(
    number: int, tick: int, day: int, last_tick: int, last_day: int, add: Any
) -> None:
    """Report a tick, or else a day, that went backwards."""
    if tick < last_tick:
        add(JournalProblem(number, "clock", f"tick went backwards from {last_tick} to {tick}"))
    elif day < last_day:
        add(JournalProblem(number, "clock", f"day went backwards from {last_day} to {day}"))


def _coverage(report: JournalReport) -> str:
    if report.version == 1 or report.checkpoint_line is None:
        return ""
    return (
        f" (the last checkpoint, line {report.checkpoint_line}, covers "
        f"{report.checkpoint_events} events; {report.events - report.checkpoint_events} "
        "whole event line(s) follow it)"
    )


def _read_header(
    header: dict[str, Any],
    report: JournalReport,
    add: Any,
    check_gaps: bool | None,
    allow_unchained: bool,
    key: VerifyKey | None,
) -> bool:
    """Take the header's settings into the report; ``False`` when reading must stop."""
    fmt = header.get("format")
    version = header.get("version")
    if fmt not in (CHAINED_FORMAT, UNCHAINED_FORMAT):
        add(JournalProblem(1, "header", f"not a ringbus journal header (format {fmt!r})"))
        return False
    if type(version) is not int or version < 1:
        add(JournalProblem(1, "header", f"the header's version is not an int >= 1: {version!r}"))
        return False
    if version > JOURNAL_VERSION:
        add(
            JournalProblem(
                1,
                "version",
                f"written by a newer format version {version} (this ringbus reads versions "
                f"1..{JOURNAL_VERSION}): upgrade ringbus to verify it",
            )
        )
        return False
    report.version = version
    fault = _header_fault(header)
    if fault is not None:
        add(JournalProblem(1, "header", f"malformed header: {fault}"))
        return False
    kinds = header.get("kinds")
    report.kinds = list(kinds) if isinstance(kinds, list) else None
    if version == 1:
        report.chained = header.get("chained") is True and fmt == CHAINED_FORMAT
        report.notes.append(
            "format v1: the chain covers seq, tick, kind and payload only; "
            f"{', '.join(V1_UNPROTECTED)} are not protected, and a cut tail is not "
            "detectable (no checkpoints or seal)"
        )
    else:
        report.chained = fmt == CHAINED_FORMAT
        report.signed = header.get("signed") is True
    report.gaps_checked = report.kinds is None if check_gaps is None else check_gaps
    if not report.chained and not allow_unchained:
        add(
            JournalProblem(
                1,
                "unchained",
                "an unchained journal: nothing protects its lines from edits; verify it "
                "with allow_unchained (--allow-unchained) to check its structure only",
            )
        )
    if key is not None and not report.signed:
        add(
            JournalProblem(
                1,
                "signature",
                "a public key was given but the journal is not signed: a rewritten chain "
                "cannot be told from the original",
            )
        )
    return True


def _check_mark(
    number: int,
    record: dict[str, Any],
    report: JournalReport,
    prev: str | None,
    last_seq: int | None,
    key: VerifyKey | None,
    add: Any,
) -> str | None:
    """Check a checkpoint or seal line; return the new chain head."""
    mark = record.get("mark")
    events = record.get("events")
    stored = record.get("hash")
    if (
        mark not in MARK_KINDS
        or type(events) is not int
        or (report.chained and (not isinstance(stored, str) or len(stored) != 64))
        or not set(record) <= {"day", "events", "hash", "head", "mark", "seq", "sig", "tick"}
    ):
        add(JournalProblem(number, "malformed", "not a valid checkpoint or seal line"))
        return None
    if report.chained:
        body = {name: value for name, value in record.items() if name != "hash"}
        if prev is not None:
            expected = hashlib.sha256((prev + encode_canonical(body)).encode("ascii")).hexdigest()
            if stored != expected:
                add(
                    JournalProblem(
                        number,
                        "chain",
                        f"chain broken at this {mark}: the stored hash does not match this "
                        "line and the line before it",
                    )
                )
        if record.get("head") != report.last_hash and report.last_hash is not None:
            add(
                JournalProblem(
                    number,
                    "checkpoint",
                    f"the {mark}'s head is not the hash of the line before it",
                )
            )
        if report.signed:
            signature = record.get("sig")
            if signature is None:
                add(
                    JournalProblem(
                        number, "signature", f"the {mark} of a signed journal has no signature"
                    )
                )
            elif key is not None:
                if key.verify(mark_message(record), signature):
                    report.signatures_checked += 1
                else:
                    add(
                        JournalProblem(
                            number,
                            "signature",
                            f"the {mark}'s signature does not match the public key: the chain "
                            "up to here was rewritten, or signed with another key",
                        )
                    )
    if events != report.events:
        add(
            JournalProblem(
                number,
                "checkpoint",
                f"the {mark} counts {events} events but {report.events} event lines precede "
                "it: event lines were removed or inserted",
            )
        )
    if record.get("seq") != last_seq:
        add(
            JournalProblem(
                number,
                "checkpoint",
                f"the {mark} names seq {record.get('seq')} as the last event but the line "
                f"before has seq {last_seq}",
            )
        )
    report.checkpoint_line = number
    report.checkpoint_events = report.events
    report.sealed = mark == "seal"
    if report.chained:
        report.last_hash = stored
        return stored if isinstance(stored, str) else None
    return None


def _finish(
    report: JournalReport,
    last_line: int,
    allow_empty: bool,
    allow_unsealed: bool,
    expect_head: str | None,
    expect_count: int | None,
    key: VerifyKey | None,
) -> None:
    add = report.problems.append
    if last_line == 0:
        if not allow_empty:
            add(
                JournalProblem(
                    1,
                    "empty",
                    "the file is empty (0 bytes): no header, no events "
                    "(allow_empty / --allow-empty accepts it)",
                )
            )
        return
    if report.events == 0 and not allow_empty:
        add(
            JournalProblem(
                last_line,
                "empty",
                "the journal holds no events (allow_empty / --allow-empty accepts it)",
            )
        )
    if (
        report.version is not None
        and report.version >= 2
        and not report.torn
        and not report.sealed
        and not allow_unsealed
    ):
        where = (
            f"the last checkpoint (line {report.checkpoint_line}) covers "
            f"{report.checkpoint_events} events and "
            f"{report.events - report.checkpoint_events} event line(s) follow it"
            if report.checkpoint_line is not None
            else f"there is no checkpoint: none of the {report.events} events is covered"
        )
        add(
            JournalProblem(
                last_line,
                "unsealed",
                "the journal does not end with a seal: the writer did not close it "
                f"(crashed, or still writing) or its tail was cut; {where}",
            )
        )
    if key is not None and report.signed and not report.sealed and report.checkpoint_line is None:
        add(JournalProblem(last_line, "signature", "no signed checkpoint or seal"))
    if expect_count is not None and report.events != expect_count:
        add(
            JournalProblem(
                last_line,
                "expect",
                f"{report.events} events, expected {expect_count}: events were removed or added",
            )
        )
    if expect_head is not None and report.last_hash != expect_head:
        add(
            JournalProblem(
                last_line,
                "expect",
                f"the chain head is {report.last_hash}, expected {expect_head}: the journal "
                "was rewritten or cut",
            )
        )
    report.problems.sort(key=lambda problem: problem.line)


def read_journal(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, event dict)`` for every whole event line of a journal.

    The header, checkpoints and the seal are skipped, the ``hash`` key
    removed, and a torn last line (from a crash) ignored; use
    :func:`verify_journal` to check the file.

    Raises
    ------
    JournalError
        The file cannot be read, or a whole line is not valid JSON or not an event.
    """
    with open_journal_file(path) as file:
        for number, line, whole in _lines(file):
            if not whole:
                return
            record, why = _parse(line)
            if why is not None:
                raise JournalError(f"{path}, line {number}: {why}")
            if isinstance(record, dict) and (
                (number == 1 and "format" in record) or "mark" in record
            ):
                continue
            fault = check_event_record(record, False)
            if fault is not None:
                raise JournalError(f"{path}, line {number}: not a journal event: {fault}")
            record.pop("hash", None)
            yield number, record
