"""Append-only, hash-chained JSON Lines journal of events: writer, verifier, replay.

See :mod:`ringbus.journal._format` for the exact file format. In short:
line 1 is a header; each further line is an event or a mark (checkpoint
or seal) with ``"hash"`` = SHA-256 of the previous line's hash and the
canonical JSON of the line without its hash; the chain starts from the
SHA-256 of the header's canonical JSON, so every written byte that matters
is covered. Checkpoints and a seal make a cut tail visible; Ed25519
signatures (the ``sign`` extra) make a rewritten chain detectable.
"""

from __future__ import annotations

from ._format import (
    CHAINED_FORMAT,
    DEFAULT_CHECKPOINT_EVERY,
    FSYNC_POLICIES,
    GENESIS_HASH,
    JOURNAL_FORMAT,
    JOURNAL_VERSION,
    UNCHAINED_FORMAT,
    V1_UNPROTECTED,
    JournalError,
    canonical_bytes,
    canonical_json,
    chain_hash,
    chain_input,
    genesis_hash,
    line_hash,
    mark_message,
)
from ._replay import ReplayReport, replay_journal
from ._sign import SigningKey, VerifyKey, generate_keypair, load_private_key, load_public_key
from ._verify import (
    JournalProblem,
    JournalReport,
    open_journal_file,
    read_journal,
    verify_journal,
)
from ._writer import Journal

__all__ = [
    "CHAINED_FORMAT",
    "DEFAULT_CHECKPOINT_EVERY",
    "FSYNC_POLICIES",
    "GENESIS_HASH",
    "JOURNAL_FORMAT",
    "JOURNAL_VERSION",
    "UNCHAINED_FORMAT",
    "V1_UNPROTECTED",
    "Journal",
    "JournalError",
    "JournalProblem",
    "JournalReport",
    "ReplayReport",
    "SigningKey",
    "VerifyKey",
    "canonical_bytes",
    "canonical_json",
    "chain_hash",
    "chain_input",
    "generate_keypair",
    "genesis_hash",
    "line_hash",
    "load_private_key",
    "load_public_key",
    "mark_message",
    "open_journal_file",
    "read_journal",
    "replay_journal",
    "verify_journal",
]
