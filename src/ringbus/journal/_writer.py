"""Journal: the subscriber that appends events to a chained JSON Lines file."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from .._registry import KindSelector
from ..kinds import DAY_ROLLOVER
from ._format import (
    CHAINED_FORMAT,
    DEFAULT_CHECKPOINT_EVERY,
    FSYNC_POLICIES,
    JOURNAL_FORMAT,
    JOURNAL_VERSION,
    UNCHAINED_FORMAT,
    JournalError,
    canonical_bytes,
    encode_canonical,
    event_canonical,
    genesis_hash,
)
from ._sign import SigningKey, load_private_key

__all__ = ["Journal"]

logger = logging.getLogger("ringbus")
_sha256 = hashlib.sha256

_SNAPSHOT_FORMAT = "ringbus-snapshot"
_SNAPSHOT_VERSION = 1


def _parse(line: bytes, path: Path, what: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as error:
        raise JournalError(
            f"{path}: the {what} is not valid JSON ({str(error)[:120]}); "
            "run 'ringbus journal verify' on it"
        ) from None
    if not isinstance(record, dict):
        raise JournalError(f"{path}: the {what} is not a JSON object")
    return record


class Journal:
    """A subscriber that appends every event it receives to a chained JSON Lines file.

    Each event is encoded once; the lines of one drain are written with one
    ``write`` when the drain ends (group commit). A checkpoint line every
    ``checkpoint_every`` events and at the end of every drain that ends a
    day, and a seal line on :meth:`close`, record the event count and the
    chain head, so a cut tail is visible to the verifier.

    Parameters
    ----------
    path
        The journal file. A new or empty file gets a header; an existing
        one is resumed: its chain continues from its last line (a seal
        there stays; the lines after it are chained onto it).
    chained
        ``True`` (default): hash-chain every line (format ``ringbus-journal``).
        ``False`` writes the ``ringbus-journal-unchained`` format, which the
        verifier refuses unless told to accept it.
    kinds
        The kinds/globs to record (``None``: every kind). Used as the
        subscription filter by :meth:`attach` and written in the chained
        header; the verifier then accepts seq gaps and refuses any event of
        another kind.
    fsync
        ``"always"`` (fsync after every group commit, i.e. every drain:
        survives power loss), ``"close"`` (on :meth:`sync` and
        :meth:`close`) or ``"never"``. A killed process loses at most the
        drain being written, whatever the policy.
    truncate_torn_tail
        When resuming a file whose last line was cut short by a crash, cut
        that partial line off (logged as a warning and counted in
        :attr:`torn_bytes_dropped`); ``False`` raises :class:`JournalError`.
    checkpoint_every
        Events between two checkpoint lines (``0``: only at day ends and on
        close). ``None``: the resumed file's setting, or 1000 for a new file.
    checkpoint_on_day
        Also write a checkpoint at the end of every drain in which the day
        changed or a ``DAY_ROLLOVER`` event was journaled.
    signing_key
        An Ed25519 private key (PEM file path, PEM bytes or a
        :class:`~ringbus.journal.SigningKey`): checkpoints and the seal are
        signed with it. Needs the ``sign`` extra (``cryptography``).

    Raises
    ------
    JournalError
        The file is not a ringbus journal, was written by another format
        version, or its header records other settings than asked for.

    Notes
    -----
    A journal is appended in seq order and refuses an event older than its
    last line, so attach it with the ``"raise"`` or ``"log"`` error policy.
    A failed group commit leaves the file as it was and the chain back at
    the last committed line; the error propagates from ``drain()``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from ringbus import EventBus
    >>> from ringbus.journal import verify_journal
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
        checkpoint_every: int | None = None,
        checkpoint_on_day: bool = True,
        signing_key: str | os.PathLike[str] | bytes | SigningKey | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        if not isinstance(chained, bool):
            raise TypeError(f"chained must be a bool, got {type(chained).__name__}")
        self._checkpoint_given = checkpoint_every is not None
        if checkpoint_every is None:
            checkpoint_every = DEFAULT_CHECKPOINT_EVERY
        if (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, int)
            or not 0 <= checkpoint_every < 2**63
        ):
            raise ValueError(f"checkpoint_every must be an int >= 0, got {checkpoint_every!r}")
        if signing_key is not None and not chained:
            raise ValueError("an unchained journal cannot be signed: use chained=True")
        self._signer = None if signing_key is None else load_private_key(signing_key)
        self.path = Path(path)
        self.chained = chained
        self.fsync = fsync
        self.checkpoint_every = checkpoint_every
        self.checkpoint_on_day = bool(checkpoint_on_day)
        self._selector = None if kinds is None else KindSelector(kinds)
        self.kinds: list[str] | None = (
            None if self._selector is None else list(self._selector.selectors)
        )
        #: Bytes of a torn last line cut off when the file was resumed.
        self.torn_bytes_dropped = 0
        #: Events appended through this object.
        self.appended = 0
        #: Events in the file (all sessions), counted by checkpoints and the seal.
        self.events = 0
        self.last_seq: int | None = None
        self.last_tick: int | None = None
        self.last_day: int | None = None
        self.last_hash = ""
        self._since_mark = 0
        self._mark_day: int | None = None
        self._day_ended = False
        self._buffer: list[str] = []
        self._buffering = False
        self._committed: tuple[Any, ...] = ()
        self._bus: Any = None
        self._sub_id: int | None = None
        self._broken: str | None = None
        self._header = self._make_header()
        if self.path.is_dir():
            raise JournalError(f"{self.path} is a directory, not a journal file")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise JournalError(f"cannot open {self.path}: {error.strerror or error}") from None
        try:
            self._size = os.fstat(self._fd).st_size
            self._resume(truncate_torn_tail)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._commit_state()

    def _make_header(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "checkpoint_every": self.checkpoint_every,
            "format": CHAINED_FORMAT if self.chained else UNCHAINED_FORMAT,
            "kinds": self.kinds,
            "version": JOURNAL_VERSION,
        }
        if self.chained:
            header["signed"] = self._signer is not None
        return header

    # -- opening --------------------------------------------------------
    def _whole_end(self) -> int:
        """Offset just after the last newline (0 when there is none)."""
        end = self._size
        chunk = 4096
        while end > 0:
            start = max(0, end - chunk)
            data = os.pread(self._fd, end - start, start)
            at = data.rfind(b"\n")
            if at >= 0:
                return start + at + 1
            end = start
            chunk *= 2
        return 0

    def _tail_lines(self) -> list[bytes]:
        """Whole lines from the end back to the last mark or the header, oldest first."""
        chunk = 65536
        while True:
            start = max(0, self._size - chunk)
            data = os.pread(self._fd, self._size - start, start)
            lines = data.split(b"\n")[:-1]
            if start > 0:
                lines = lines[1:]  # possibly partial
            for index in range(len(lines) - 1, -1, -1):
                if lines[index].startswith((b'{"day":', b'{"checkpoint_every":')):
                    return lines[index:]
            if start == 0:
                return lines
            chunk *= 4

    def _resume(self, truncate_torn_tail: bool) -> None:
        if self._size:
            whole_end = self._whole_end()
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
            data = encode_canonical(self._header) + "\n"
            self._write(data.encode("ascii"))
            self.last_hash = genesis_hash(self._header) if self.chained else ""
            return
        first = os.pread(self._fd, min(self._size, 65536), 0).split(b"\n", 1)[0]
        try:
            header = _parse(first, self.path, "first line")
        except JournalError:
            header = {}
        if header.get("format") not in (CHAINED_FORMAT, UNCHAINED_FORMAT):
            raise JournalError(
                f"{self.path}: not a ringbus journal (the first line is not a "
                f'{{"format": "{JOURNAL_FORMAT}", ...}} header)'
            )
        version = header.get("version")
        if version != JOURNAL_VERSION:
            raise JournalError(
                f"{self.path}: journal format version {version!r} cannot be appended to "
                f"(this ringbus writes version {JOURNAL_VERSION}); start a new file"
            )
        if not self._checkpoint_given and type(header.get("checkpoint_every")) is int:
            self.checkpoint_every = header["checkpoint_every"]
            self._header["checkpoint_every"] = self.checkpoint_every
        if header != self._header:
            raise JournalError(
                f"{self.path}: the journal was written with other settings "
                f"({canonical_bytes(header).decode()}); open it with the same settings "
                f"(asked: {canonical_bytes(self._header).decode()}) or use a new file"
            )
        self.last_hash = genesis_hash(header) if self.chained else ""
        lines = self._tail_lines()
        for number, line in enumerate(lines):
            record = _parse(line, self.path, "line near the end")
            if "format" in record and number == 0:
                continue
            if "mark" in record:
                events = record.get("events")
                if isinstance(events, bool) or not isinstance(events, int):
                    raise JournalError(f"{self.path}: a checkpoint near the end is malformed")
                self.events = events
                self._since_mark = 0
                self._mark_day = record.get("day")
            else:
                seq = record.get("seq")
                if isinstance(seq, bool) or not isinstance(seq, int):
                    raise JournalError(f"{self.path}: a line near the end is not a journal event")
                self.events += 1
                self._since_mark += 1
            if record.get("seq") is not None:
                self.last_seq = record.get("seq")
                self.last_tick = record.get("tick")
                self.last_day = record.get("day")
            if self.chained:
                stored = record.get("hash")
                if not isinstance(stored, str) or len(stored) != 64:
                    raise JournalError(f"{self.path}: a line near the end has no chain hash")
                self.last_hash = stored

    # -- appending -------------------------------------------------------
    def _commit_state(self) -> None:
        self._committed = (
            self.last_hash,
            self.last_seq,
            self.last_tick,
            self.last_day,
            self.events,
            self._since_mark,
            self._mark_day,
            self.appended,
        )

    def _rollback_state(self) -> None:
        (
            self.last_hash,
            self.last_seq,
            self.last_tick,
            self.last_day,
            self.events,
            self._since_mark,
            self._mark_day,
            self.appended,
        ) = self._committed
        self._buffer.clear()
        self._day_ended = False

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

    def flush(self) -> None:
        """Write the buffered lines with one ``write`` (done at the end of every drain).

        If the write fails the file is cut back, the buffered lines are
        dropped and the chain returns to the last written line.
        """
        if self._day_ended:
            self._day_ended = False
            if self._since_mark:
                self._add_mark("checkpoint")
        if not self._buffer:
            return
        data = "".join(self._buffer).encode("ascii")
        try:
            self._write(data)
        except BaseException:
            self._rollback_state()
            raise
        self._buffer.clear()
        self._commit_state()

    def _add_line(self, record: dict[str, Any]) -> None:
        self._add_text(encode_canonical(record))

    def _add_text(self, body: str) -> None:
        if self.chained:
            digest = hashlib.sha256((self.last_hash + body).encode("ascii")).hexdigest()
            self.last_hash = digest
            self._buffer.append(f'{body[:-1]},"hash":"{digest}"}}\n')
        else:
            self._buffer.append(body + "\n")

    def _add_mark(self, mark: str) -> None:
        record: dict[str, Any] = {
            "day": self.last_day,
            "events": self.events,
            "head": self.last_hash if self.chained else None,
            "mark": mark,
            "seq": self.last_seq,
            "tick": self.last_tick,
        }
        if self._signer is not None:
            record["sig"] = self._signer.sign(canonical_bytes(record))
        self._add_line(record)
        self._since_mark = 0
        self._mark_day = self.last_day

    def append(self, event: Any) -> None:
        """Append one event (the subscriber's handler).

        While attached to a bus the line is buffered and written when the
        drain ends (see :meth:`flush`); otherwise it is written at once.

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
        day = event.day
        kind = event.kind
        body = event_canonical(event)
        if self.chained:
            digest = _sha256((self.last_hash + body).encode("ascii")).hexdigest()
            self.last_hash = digest
            self._buffer.append(f'{body[:-1]},"hash":"{digest}"}}\n')
        else:
            self._buffer.append(body + "\n")
        self.last_seq = seq
        self.last_tick = event.tick
        self.last_day = day
        self.events += 1
        self.appended += 1
        self._since_mark += 1
        if self.checkpoint_on_day and (
            kind == DAY_ROLLOVER or (self._mark_day is not None and day != self._mark_day)
        ):
            self._day_ended = True
        if self._mark_day is None:
            self._mark_day = day
        if self.checkpoint_every and self._since_mark >= self.checkpoint_every:
            self._add_mark("checkpoint")
        if not self._buffering:
            self.flush()

    __call__ = append

    def attach(
        self,
        bus: Any,
        *,
        name: str = "journal",
        error_policy: str | None = None,
        resume: bool = False,
    ) -> int:
        """Subscribe :meth:`append` to ``bus`` (only this journal's kinds); return the sub id.

        Parameters
        ----------
        bus
            An :class:`~ringbus.EventBus` with ``clock_policy="monotonic"``.
        name, error_policy
            Passed to ``bus.subscribe``.
        resume
            Continue a resumed journal on a fresh bus: the bus's seq counter
            and clock move to the journal's last event (via
            ``bus.restore``), so the next event gets ``last_seq + 1``.
            Register the bus's other snapshot hooks' subscribers after this
            or restore their state separately.

        Raises
        ------
        ValueError
            The bus's clock policy is not monotonic, or ``resume`` is asked
            of a bus that has already accepted events.
        """
        if self._sub_id is not None:
            raise RuntimeError("this journal is already attached to a bus; detach() it first")
        if getattr(bus, "clock_policy", "monotonic") != "monotonic":
            raise ValueError(
                f"a journal needs a bus with clock_policy='monotonic', this one is "
                f"{bus.clock_policy!r}: the verifier refuses time that goes backwards"
            )
        if resume and self.last_seq is not None:
            bus.restore(
                {
                    "format": _SNAPSHOT_FORMAT,
                    "version": _SNAPSHOT_VERSION,
                    "seq": self.last_seq,
                    "tick": self.last_tick,
                    "day": self.last_day,
                    "pending": [],
                    "hooks": {},
                }
            )
        self._sub_id = bus.subscribe(
            self.append, kinds=self.kinds, name=name, error_policy=error_policy
        )
        self._bus = bus
        bus.add_drain_listener(self.flush)
        self._buffering = True
        return self._sub_id

    def detach(self) -> None:
        """Write what is buffered and unsubscribe from the bus :meth:`attach` subscribed to."""
        if self._sub_id is None:
            return
        bus = self._bus
        bus.unsubscribe(self._sub_id)
        bus.remove_drain_listener(self.flush)
        self._sub_id = None
        self._bus = None
        self._buffering = False
        if self._fd >= 0:
            self.flush()

    def sync(self) -> None:
        """Write what is buffered and flush it to stable storage (unless ``fsync="never"``)."""
        if self._fd < 0:
            return
        self.flush()
        if self.fsync != "never":
            os.fsync(self._fd)

    def close(self) -> None:
        """Detach, write a seal line, sync (per the fsync policy) and close; twice is fine."""
        if self._fd < 0:
            return
        try:
            self.detach()
            self.flush()
            self._add_mark("seal")
            self.flush()
            if self.fsync != "never":
                os.fsync(self._fd)
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
