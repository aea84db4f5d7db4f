"""The journal file format: canonical encoding, line shapes and the hash chain.

Format v2 (written by this version)
-----------------------------------
Line 1 is the header, a JSON object without a hash::

    {"checkpoint_every":1000,"format":"ringbus-journal","kinds":null,"signed":false,"version":2}

Every further line is an event (the fields of :meth:`WorldEvent.to_dict`)
or a mark (``{"mark": "checkpoint" | "seal", "events": N, "seq": S, "tick":
T, "day": D, "head": H}``, plus ``"sig"`` in a signed journal), each with a
``"hash"`` member. With ``canonical(x) = json.dumps(x, sort_keys=True,
separators=(",", ":"), ensure_ascii=True).encode()``::

    genesis = sha256(canonical(header)).hexdigest()
    hash    = sha256(prev.encode("ascii") + canonical(line without "hash")).hexdigest()

where ``prev`` is the previous line's hash (``genesis`` for the first line
after the header). Every written field is covered, the header included.

An unchained journal has ``"format": "ringbus-journal-unchained"`` and no
hashes; it is a different format that a verifier refuses unless told.

Format v1 (read only)
---------------------
Header ``{"chained":true,"format":"ringbus-journal","kinds":null,"version":1}``;
each event line's hash is ``sha256(f"{seq}|{tick}|{json(kind)}|{canonical(payload)}|{prev}")``
with 64 zeros as genesis: day, ids, tags and the header are not covered.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from collections.abc import Callable
from typing import Any

from .._errors import RingbusError

__all__ = [
    "CHAINED_FORMAT",
    "DEFAULT_CHECKPOINT_EVERY",
    "FSYNC_POLICIES",
    "GENESIS_HASH",
    "JOURNAL_FORMAT",
    "JOURNAL_VERSION",
    "MARK_KINDS",
    "UNCHAINED_FORMAT",
    "V1_UNPROTECTED",
    "JournalError",
    "canonical_bytes",
    "canonical_json",
    "chain_hash",
    "chain_input",
    "genesis_hash",
    "line_hash",
    "mark_message",
]

JOURNAL_FORMAT = "ringbus-journal"
#: ``format`` of a chained journal (the default).
CHAINED_FORMAT = JOURNAL_FORMAT
#: ``format`` of an unchained journal: no hashes, refused by the verifier unless allowed.
UNCHAINED_FORMAT = "ringbus-journal-unchained"
#: The format version this ringbus writes; version 1 stays readable.
JOURNAL_VERSION = 2
#: ``prev`` of the first event of a format v1 journal (v2 derives it from the header).
GENESIS_HASH = "0" * 64
#: ``"always"``: fsync after every group commit (one per drain); ``"close"``: on
#: :meth:`Journal.sync` and :meth:`Journal.close`; ``"never"``: leave it to the OS.
FSYNC_POLICIES = ("always", "close", "never")
DEFAULT_CHECKPOINT_EVERY = 1000
MARK_KINDS = ("checkpoint", "seal")
#: What a format v1 journal leaves outside its chain.
V1_UNPROTECTED = ("day", "polity_id", "ward_id", "actor_id", "subject_id", "tags", "the header")


class JournalError(RingbusError):
    """A journal cannot be opened, written, read or replayed as asked.

    Attributes
    ----------
    problems
        When a replay was refused because verification found problems: those
        problems (verify problems, each with its line); else empty.
    """

    problems: tuple[Any, ...] = ()


def _make_encoder(sort_keys: bool) -> Callable[[object], str]:
    """A compiled JSON encoder made once (``json.dumps`` with options builds one per call)."""
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        encoder = json.JSONEncoder(
            sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
        return encoder.encode

    def _refuse(value: object) -> object:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    encode = make(
        None,
        _refuse,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        sort_keys,
        False,
        False,
    )

    def encode_text(value: object) -> str:
        return "".join(encode(value, 0))

    return encode_text


#: ``canonical_json`` without the per-call encoder construction.
encode_canonical: Callable[[object], str] = _make_encoder(True)


_escape: Callable[[str], str] = json.encoder.encode_basestring_ascii
_int_text = int.__repr__


def _value_text(value: object) -> str:
    kind = type(value)
    if kind is str:
        return _escape(value)  # type: ignore[arg-type]
    if kind is int:
        return _int_text(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return encode_canonical(value)  # floats (NaN refused) and tuples


def event_canonical(event: Any) -> str:
    """Return the canonical JSON of an event's record, built field by field.

    Byte for byte the same as ``canonical_json(event.to_dict())`` (a test
    checks it), without building the dict: the keys are in sorted order
    already, and a bus event holds only str, int, float, bool, None and
    tuples of them.
    """
    payload = event.payload
    body = (
        ",".join(
            [
                _escape(key) + ":" + (_escape(value) if type(value) is str else _value_text(value))
                for key, value in sorted(payload)
            ]
        )
        if payload
        else ""
    )
    actor, polity, subject, ward = event.actor_id, event.polity_id, event.subject_id, event.ward_id
    return (
        f'{{"actor_id":{"null" if actor is None else _escape(actor)},"day":{event.day},'
        f'"kind":{_escape(event.kind)},"payload":{{{body}}},'
        f'"polity_id":{"null" if polity is None else _escape(polity)},"seq":{event.seq},'
        f'"subject_id":{"null" if subject is None else _escape(subject)},'
        f'"tags":[{",".join(map(_escape, event.tags))}],"tick":{event.tick},'
        f'"ward_id":{"null" if ward is None else _escape(ward)}}}'
    )


def canonical_json(value: object) -> str:
    """Return the canonical JSON text of ``value`` (sorted keys, compact, ASCII, no NaN).

    Parameters
    ----------
    value
        JSON-serialisable data (tuples are written as lists).

    Returns
    -------
    str
        ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``.
    """
    return encode_canonical(value)


def canonical_bytes(value: object) -> bytes:
    """Return :func:`canonical_json` of ``value`` as ASCII bytes."""
    return encode_canonical(value).encode("ascii")


def genesis_hash(header: dict[str, Any]) -> str:
    """Return the chain's starting hash: SHA-256 of the header's canonical bytes (v2)."""
    return hashlib.sha256(canonical_bytes(header)).hexdigest()


def line_hash(prev: str, record: dict[str, Any]) -> str:
    """Return the v2 hash of a line: SHA-256 of ``prev`` and the record without ``hash``.

    Parameters
    ----------
    prev
        The previous line's hash (hex), or the genesis hash.
    record
        The line's JSON object; a ``"hash"`` member is left out.
    """
    if "hash" in record:
        record = {name: value for name, value in record.items() if name != "hash"}
    return hashlib.sha256(prev.encode("ascii") + canonical_bytes(record)).hexdigest()


def mark_message(mark: dict[str, Any]) -> bytes:
    """Return the bytes a checkpoint or seal signature covers.

    The canonical bytes of the mark without ``sig`` and ``hash``: its
    ``head`` is the chain hash of the line before it, so the signature
    covers the header and every line up to the mark.
    """
    return canonical_bytes(
        {name: value for name, value in mark.items() if name not in ("sig", "hash")}
    )


def chain_input(seq: int, tick: int, kind: str, payload: object, prev: str) -> bytes:
    """Return the bytes a format v1 chain hash is computed over."""
    text = f"{seq}|{tick}|{canonical_json(kind)}|{canonical_json(payload)}|{prev}"
    return text.encode("ascii")


def chain_hash(seq: int, tick: int, kind: str, payload: object, prev: str) -> str:
    """Return the format v1 chain hash (hex) of one event given the previous hash."""
    return hashlib.sha256(chain_input(seq, tick, kind, payload, prev)).hexdigest()
