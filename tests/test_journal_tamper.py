"""Tampering with a format v2 journal: every mutation is reported at its line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _journals import SRC, kill_writer, run_world
from ringbus import kinds
from ringbus.__main__ import main as ringbus_main
from ringbus.journal import (
    Journal,
    JournalError,
    generate_keypair,
    load_private_key,
    read_journal,
    replay_journal,
    verify_journal,
)


def write(backend: Any, path: Path, **options: Any) -> Journal:
    """Header, 30 events (ticks 0..9, 3 per drain), checkpoints as asked, a seal."""
    options.setdefault("checkpoint_every", 0)
    options.setdefault("checkpoint_on_day", False)
    bus = backend.bus()
    with Journal(path, **options) as journal:
        journal.attach(bus)
        run_world(bus, every_field=True)
    return journal


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def save(path: Path, lines: list[bytes], name: str = "tampered.jsonl") -> Path:
    out = path.with_name(name)
    out.write_bytes(b"".join(lines))
    return out


def found(path: Path, **options: Any) -> list[tuple[int, str]]:
    return [(p.line, p.kind) for p in verify_journal(path, **options).problems]


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def rehash(lines: list[bytes], key: Any = None) -> list[bytes]:
    """Recompute every hash, head and (with a key) signature: a forger's rewrite."""
    prev = hashlib.sha256(canonical(json.loads(lines[0]))).hexdigest()
    out = [lines[0]]
    for line in lines[1:]:
        record = json.loads(line)
        record.pop("hash", None)
        if "mark" in record:
            record["head"] = prev
            record.pop("sig", None)
            if key is not None:
                record["sig"] = key.sign(canonical(record))
        prev = hashlib.sha256(prev.encode() + canonical(record)).hexdigest()
        record["hash"] = prev
        out.append(canonical(record) + b"\n")
    return out


@pytest.fixture
def journal_file(backend: Any, tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    write(backend, path)
    assert found(path) == []
    return path


# -- every field of a record is protected -------------------------------------------
@pytest.mark.parametrize(
    "field",
    [
        *("seq", "tick", "day", "kind", "polity_id", "ward_id", "actor_id", "subject_id"),
        *("payload", "tags", "hash"),
    ],
)
def test_flipping_a_byte_in_any_field_is_reported_at_its_line(
    journal_file: Path, field: str
) -> None:
    lines = lines_of(journal_file)
    line = 12
    anchor = f'"{field}":'.encode()
    at = lines[line - 1].index(anchor) + len(anchor)
    while lines[line - 1][at : at + 1] in b'["{':
        at += 1
    while lines[line - 1][at + 1 : at + 2].isdigit():
        at += 1  # the last digit of a number: no leading zero appears
    flipped = bytearray(lines[line - 1])
    flipped[at] ^= 0x01  # a digit stays a digit, a letter a letter
    lines[line - 1] = bytes(flipped)
    problems = found(save(journal_file, lines))
    assert problems, field
    assert problems[0] == (line, "chain"), problems


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ((b'"day":1,', b'"day":2,'), (18, "chain")),
        ((b'"polity_id":"p1"', b'"polity_id":"p9"'), (6, "chain")),
        ((b'"tags":["t","u"]', b'"tags":["t"]'), (6, "chain")),
    ],
)
def test_edits_to_day_ids_and_tags_break_the_chain(
    journal_file: Path, edit: tuple[bytes, bytes], expected: tuple[int, str]
) -> None:
    lines = lines_of(journal_file)
    assert edit[0] in lines[expected[0] - 1]
    lines[expected[0] - 1] = lines[expected[0] - 1].replace(*edit)
    assert found(save(journal_file, lines))[0] == expected


def test_swapping_and_duplicating_lines(journal_file: Path) -> None:
    lines = lines_of(journal_file)
    swapped = [*lines]
    swapped[14], swapped[15] = swapped[15], swapped[14]
    problems = found(save(journal_file, swapped))
    assert problems[0] == (15, "chain") and (16, "order") in problems
    duplicated = [*lines[:10], lines[9], *lines[10:]]
    problems = found(save(journal_file, duplicated))
    assert problems[0] == (11, "chain") and (11, "order") in problems
    assert (33, "checkpoint") in problems  # the seal counts 30 events, 31 precede it


# -- the header is chained ------------------------------------------------------------
@pytest.mark.parametrize(
    "header_edit",
    [
        (b'"signed":false', b'"signed":false,"chained":false'),
        (b'"kinds":null', b'"kinds":["DELIVERY_*"]'),
        (b'"checkpoint_every":0', b'"checkpoint_every":5'),
    ],
)
def test_editing_the_header_breaks_the_first_line(
    journal_file: Path, header_edit: tuple[bytes, bytes]
) -> None:
    lines = lines_of(journal_file)
    lines[0] = lines[0].replace(*header_edit)
    assert found(save(journal_file, lines))[0] == (2, "chain")


def test_deleting_or_replacing_the_header(backend: Any, journal_file: Path) -> None:
    lines = lines_of(journal_file)
    assert found(save(journal_file, lines[1:]))[0] == (1, "header")
    other = journal_file.with_name("other.jsonl")
    write(backend, other, kinds={"DELIVERY_*"})
    replaced = [lines_of(other)[0], *lines[1:]]
    assert found(save(journal_file, replaced))[0] == (2, "chain")


def test_turning_the_chain_off_in_the_header_is_refused(journal_file: Path) -> None:
    lines = lines_of(journal_file)
    lines[0] = lines[0].replace(
        b'"format":"ringbus-journal"', b'"format":"ringbus-journal-unchained"'
    )
    bad = save(journal_file, lines)
    assert found(bad)[0] == (1, "unchained")
    # Even when told to accept unchained journals, the hashes give the edit away.
    assert found(bad, allow_unchained=True)[0] == (2, "header")
    assert ringbus_main(["journal", "verify", str(bad)]) == 1


# -- truncation -----------------------------------------------------------------------
def test_cutting_whole_lines_off_the_end_is_visible(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    bus = backend.bus()
    with Journal(path, checkpoint_every=100, checkpoint_on_day=False) as journal:
        journal.attach(bus)
        for tick in range(120):
            bus.set_clock(tick, tick // 40)
            for i in range(5):
                bus.publish(kinds.DELIVERY_COMPLETED, payload={"i": i})
            bus.drain()
    lines = lines_of(path)
    assert verify_journal(path).sealed
    cut1 = verify_journal(save(path, lines[:-1]))
    assert [(p.line, p.kind) for p in cut1.problems] == [(len(lines) - 1, "unsealed")]
    assert cut1.status == "unsealed"
    assert "covers 600 events and 0 event line(s) follow it" in cut1.problems[0].message
    cut500 = verify_journal(save(path, lines[:-500]))
    assert [p.kind for p in cut500.problems] == ["unsealed"]
    assert "covers 100 events and 6 event line(s) follow it" in cut500.problems[0].message
    assert cut500.events == 106 and cut500.checkpoint_events == 100
    assert verify_journal(save(path, lines[:-500]), allow_unsealed=True).ok


def test_cut_at_every_byte_of_the_last_three_lines(journal_file: Path) -> None:
    data = journal_file.read_bytes()
    lines = lines_of(journal_file)
    start = len(data) - sum(len(line) for line in lines[-3:])
    out = journal_file.with_name("cut.jsonl")
    for end in range(start, len(data)):
        out.write_bytes(data[:end])
        report = verify_journal(out)
        whole = data[:end].count(b"\n")
        if data[end - 1 : end] == b"\n":
            assert [(p.line, p.kind) for p in report.problems] == [(whole, "unsealed")], end
        else:
            assert [(p.line, p.kind) for p in report.problems] == [(whole + 1, "torn")], end


def test_zero_bytes_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert found(empty) == [(1, "empty")]
    assert found(empty, allow_empty=True) == []
    assert ringbus_main(["journal", "verify", str(empty)]) == 1
    header_only = tmp_path / "header.jsonl"
    Journal(header_only).close()
    save(header_only, lines_of(header_only)[:1], "header-only.jsonl")
    assert found(tmp_path / "header-only.jsonl") == [(1, "empty"), (1, "unsealed")]
    assert found(header_only) == [(2, "empty")]
    assert found(header_only, allow_empty=True) == []


def test_expected_head_and_count(journal_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = json.loads(lines_of(journal_file)[-1])["hash"]
    assert found(journal_file, expect_head=head, expect_count=30) == []
    assert found(journal_file, expect_head="0" * 64) == [(32, "expect")]
    assert found(journal_file, expect_count=31) == [(32, "expect")]
    argv = ["journal", "verify", "--expect-head", head, "--expect-count", "30", str(journal_file)]
    assert ringbus_main(argv) == 0
    assert head in capsys.readouterr().out


def test_a_rewritten_chain_is_caught_by_the_head_kept_elsewhere(journal_file: Path) -> None:
    lines = lines_of(journal_file)
    head = json.loads(lines[-1])["hash"]
    lines[5] = lines[5].replace(b'"n":', b'"n":1')
    forged = save(journal_file, rehash(lines))
    assert found(forged) == []  # every hash is consistent: only something kept elsewhere helps
    assert found(forged, expect_head=head) == [(32, "expect")]


# -- signatures -----------------------------------------------------------------------
def test_signed_journal_refuses_a_rewritten_chain(backend: Any, tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "key.pem")
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    path = tmp_path / "signed.jsonl"
    write(backend, path, signing_key=private, checkpoint_every=10)
    assert json.loads(lines_of(path)[0])["signed"] is True
    report = verify_journal(path, public_key=public)
    assert report.ok and report.signatures_checked == 4  # 3 checkpoints and the seal
    lines = lines_of(path)
    lines[5] = lines[5].replace(b'"n":', b'"n":1')
    # Re-hashed without the key: the signatures no longer match.
    forged = save(path, rehash(lines))
    problems = found(forged, public_key=public)
    assert problems[0] == (12, "signature")  # the first checkpoint after the edit
    # Without the public key, the missing signatures of a signed journal still show.
    assert found(forged) == [(line, "signature") for line in (12, 23, 34, 35)]
    # Re-hashed and re-signed with another key: refused all the same.
    other, _ = generate_keypair(tmp_path / "other.pem")
    forged = save(path, rehash(lines, load_private_key(other)), "forged2.jsonl")
    assert found(forged) == []
    assert found(forged, public_key=public)[0] == (12, "signature")
    # Claiming to be unsigned does not help either.
    unsigned = [lines[0].replace(b'"signed":true', b'"signed":false'), *lines[1:]]
    forged = save(path, rehash(unsigned), "forged3.jsonl")
    assert found(forged, public_key=public) == [(1, "signature")]
    assert ringbus_main(["journal", "verify", "--public-key", str(public), str(forged)]) == 1
    assert ringbus_main(["journal", "verify", "--public-key", str(public), str(path)]) == 0


def test_keygen_cli_and_signing_from_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k.pem"
    assert ringbus_main(["journal", "keygen", str(key)]) == 0
    assert "public key" in capsys.readouterr().out
    assert ringbus_main(["journal", "keygen", str(key)]) == 2  # never overwrites a key
    run = tmp_path / "demo.jsonl"
    argv = ["demo", "--days", "2", "--quiet", "--journal", str(run), "--sign-key", str(key)]
    assert ringbus_main(argv) == 0
    capsys.readouterr()
    public = f"{key}.pub"
    assert ringbus_main(["journal", "verify", "--public-key", public, str(run)]) == 0
    assert "OK: sealed and intact" in capsys.readouterr().out
    assert ringbus_main(["journal", "replay", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["replay"]["sealed"] is True
    assert ringbus_main(argv) == 2  # a new run never appends to an old run's journal
    assert "already holds events" in capsys.readouterr().err
    assert (
        ringbus_main(["journal", "verify", "--public-key", str(tmp_path / "no.pub"), str(key)]) == 2
    )


def test_signing_without_the_extra_names_it(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {SRC!r})
        sys.modules["cryptography"] = None
        from ringbus.journal import Journal, JournalError, verify_journal
        try:
            Journal({str(tmp_path / "x.jsonl")!r}, signing_key=b"pem")
        except JournalError as error:
            print(error)
        with Journal({str(tmp_path / "y.jsonl")!r}) as journal:
            pass
        print(verify_journal({str(tmp_path / "y.jsonl")!r}, allow_empty=True).ok)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "install the 'sign' extra" in result.stdout and "True" in result.stdout


# -- malformed input ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad_line", "why"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"seq":' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"\xff\xfe{}", "not ASCII"),
        (b'{"seq":1,\x00"tick":2}', "not valid JSON"),
        (b'{"seq": 1}', "missing fields"),
    ],
)
def test_malformed_lines_are_problems_with_their_line_not_tracebacks(
    backend: Any, journal_file: Path, bad_line: bytes, why: str
) -> None:
    lines = lines_of(journal_file)
    lines.insert(7, bad_line + b"\n")
    bad = save(journal_file, lines)
    report = verify_journal(bad)
    assert report.problems[0].line == 8 and report.problems[0].kind == "malformed"
    assert why in report.problems[0].message
    with pytest.raises(JournalError, match="line 8"):
        list(read_journal(bad))
    with pytest.raises(JournalError, match="line 8"):
        replay_journal(bad, backend.bus())
    assert ringbus_main(["journal", "verify", str(bad)]) == 1
    # As the last line, it stops a resume with a clear error.
    last = save(journal_file, [*lines_of(journal_file), bad_line + b"\n"], "last.jsonl")
    with pytest.raises(JournalError):
        Journal(last)


def test_ints_beyond_64_bits_are_malformed(journal_file: Path) -> None:
    lines = lines_of(journal_file)
    lines[3] = lines[3].replace(b'"seq":3,', b'"seq":18446744073709551616,')
    lines[5] = lines[5].replace(b'"n":', b'"n":1000000000000000000000')
    problems = verify_journal(save(journal_file, lines)).problems
    assert (problems[0].line, problems[0].kind) == (4, "malformed")
    assert "seq must be an int >= 0 (below 2**63)" in problems[0].message
    assert any(p.line == 6 and "outside the signed 64-bit range" in p.message for p in problems)


def test_missing_file_directory_and_newer_version(
    tmp_path: Path, journal_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(JournalError, match="no such file"):
        verify_journal(tmp_path / "missing.jsonl")
    with pytest.raises(JournalError, match="is a directory"):
        verify_journal(tmp_path)
    with pytest.raises(JournalError, match="is a directory"):
        Journal(tmp_path)
    with pytest.raises(JournalError, match="no such file"):
        list(read_journal(tmp_path / "missing.jsonl"))
    lines = lines_of(journal_file)
    lines[0] = lines[0].replace(b'"version":2', b'"version":3')
    newer = save(journal_file, lines)
    report = verify_journal(newer)
    assert [(p.line, p.kind) for p in report.problems] == [(1, "version")]
    assert "newer format version 3" in report.problems[0].message
    with pytest.raises(JournalError, match="version 3 cannot be appended"):
        Journal(newer)
    assert ringbus_main(["journal", "verify", str(newer)]) == 1
    assert ringbus_main(["journal", "verify", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


# -- kinds: gaps are judged against what the header says was recorded ------------------
def test_a_journal_of_some_kinds(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "deliveries.jsonl"
    write(backend, path, kinds={"DELIVERY_*"})
    report = verify_journal(path)
    assert report.ok and not report.gaps_checked and report.kinds == ["DELIVERY_*"]
    lines = lines_of(path)
    del lines[5]  # an event of a recorded kind removed: the chain says so
    assert found(save(path, lines))[0] == (6, "chain")
    # An event of another kind, even re-hashed in, is refused by the header's kinds.
    lines = lines_of(path)
    record = json.loads(lines[5])
    record["kind"] = kinds.DEPOT_BUILT
    lines[5] = canonical(record) + b"\n"
    assert (6, "kind") in found(save(path, rehash(lines)))


# -- crashes ----------------------------------------------------------------------------
WRITER = """
import importlib, sys
sys.path.insert(0, {src!r})
import ringbus
from ringbus.journal import Journal
from ringbus._bus import bus_class_for
core = importlib.import_module({core!r})
bus = bus_class_for(core)(ringbus.EventBusConfig(max_pending=4096))
journal = Journal({path!r}, fsync="never", checkpoint_every=500)
journal.attach(bus, resume=True)
tick = journal.last_tick or 0
limit = {limit}
while limit is None or bus.latest_seq() < limit:
    tick += 1
    bus.set_clock(tick, tick // 10)
    for i in range(2000 if limit is None else 1):
        bus.publish("DELIVERY_COMPLETED", payload={{"n": tick, "i": i, "pad": "x" * 200}})
    bus.drain()
    if tick == 2:
        print("running", flush=True)
journal.close()
"""


def test_sigkill_during_group_commit_then_resume(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl"
    code = WRITER.format(src=SRC, core=backend.core.__name__, path=str(path), limit=None)
    kill_writer(code, 0.3)
    report = verify_journal(path)
    assert [p.kind for p in report.problems] in (["torn"], ["unsealed"]), report.problems[:3]
    assert report.events >= 4000 and report.checkpoint_events >= 4000
    if report.torn:
        assert "the last checkpoint, line" in report.problems[0].message
    # Group commit: a whole drain (2000 events and its checkpoints) or a cut last line.
    whole = report.last_seq
    assert whole is not None and (report.torn or whole % 2000 == 0)
    code = WRITER.format(src=SRC, core=backend.core.__name__, path=str(path), limit=whole + 5)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    resumed = verify_journal(path)
    assert resumed.ok and resumed.sealed, resumed.problems[:3]
    assert resumed.last_seq == resumed.events == whole + 5


def test_a_failed_group_commit_leaves_file_and_chain_as_they_were(
    backend: Any, tmp_path: Path
) -> None:
    path = tmp_path / "limited.jsonl"
    code = textwrap.dedent(
        f"""
        import importlib, os, resource, signal, sys
        sys.path.insert(0, {SRC!r})
        import ringbus
        from ringbus._bus import bus_class_for
        from ringbus.journal import Journal
        core = importlib.import_module({backend.core.__name__!r})
        bus = bus_class_for(core)(ringbus.EventBusConfig(max_payload_items=64))
        journal = Journal({str(path)!r}, fsync="always")
        journal.attach(bus)
        bus.publish("SMALL", payload={{"n": 1}})
        bus.drain()
        size, head, seq = os.path.getsize({str(path)!r}), journal.last_hash, journal.last_seq
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50_000, resource.RLIM_INFINITY))
        for n in range(5):
            bus.publish("BIG", payload={{"blob": "x" * 20_000}})
        try:
            bus.drain()
        except OSError as error:
            print("failed:", error.errno)
        assert os.path.getsize({str(path)!r}) == size, "the partial drain was not rolled back"
        assert (journal.last_hash, journal.last_seq) == (head, seq), "the chain advanced"
        bus.publish("SMALL", payload={{"n": 7}})
        bus.drain()
        journal.close()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "failed: 27" in result.stdout  # EFBIG
    assert [record["seq"] for _n, record in read_journal(path)] == [1, 7]
    assert found(path) == [(3, "gap")]  # the drain that could not be written is visible
    assert found(path, check_gaps=False) == []


def test_cli_replay_exit_codes(
    journal_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ringbus_main(["journal", "replay", str(tmp_path / "missing.jsonl")]) == 2
    assert ringbus_main(["journal", "replay", str(tmp_path)]) == 2
    lines = lines_of(journal_file)
    lines[3] = lines[3].replace(b'"n":', b'"n":1')
    assert ringbus_main(["journal", "replay", str(save(journal_file, lines))]) == 1
    err = capsys.readouterr().err
    assert "line 4: chain" in err and "Traceback" not in err


def test_strict_checks_that_lines_are_canonical(journal_file: Path) -> None:
    lines = lines_of(journal_file)
    # A reformatted line (same record, other bytes, hash unchanged) keeps the
    # documented rule: its canonical bytes still hash to the stored value.
    record = json.loads(lines[4])
    spaced = json.dumps(record, separators=(", ", ": ")).encode() + b"\n"
    assert spaced != lines[4]
    assert found(save(journal_file, [*lines[:4], spaced, *lines[5:]])) == []
    # A rewritten chain whose line 5 hashes its own non-canonical bytes: only
    # strict (or a signature, or a head kept elsewhere) refuses it.
    prev = json.loads(lines[3])["hash"]
    body = lines[4][: lines[4].rindex(b',"hash":"')] + b"}"
    body = body.replace(b'"kind":"', b'"kind":"\\u0044', 1).replace(
        b'"kind":"\\u0044D', b'"kind":"\\u0044'
    )
    assert json.loads(body)["kind"] == json.loads(lines[4])["kind"]
    digest = hashlib.sha256(prev.encode() + body).hexdigest()
    forged = [*lines[:4], body[:-1] + f',"hash":"{digest}"}}\n'.encode()]
    for line in lines[5:]:
        record = json.loads(line)
        record.pop("hash")
        if "mark" in record:
            record["head"] = digest
        digest = hashlib.sha256(digest.encode() + canonical(record)).hexdigest()
        forged.append(canonical({**record, "hash": digest}) + b"\n")
    bad = save(journal_file, forged)
    assert found(bad) == []
    assert found(bad, strict=True) == [(5, "chain")]
    assert ringbus_main(["journal", "verify", "--strict", str(bad)]) == 1
