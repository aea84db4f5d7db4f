"""The journal: hash chain, atomic appends, resume, verifier, tampering and crashes."""

from __future__ import annotations

import hashlib
import json
import os
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
    GENESIS_HASH,
    Journal,
    JournalError,
    canonical_json,
    chain_hash,
    read_journal,
    verify_journal,
)


def write_journal(backend: Any, path: Path, **options: Any) -> list[Any]:
    """Header, one line per event, a seal: no checkpoints unless asked for."""
    options.setdefault("checkpoint_every", 0)
    options.setdefault("checkpoint_on_day", False)
    bus = backend.bus()
    seen: list[Any] = []
    with Journal(path, **options) as journal:
        journal.attach(bus)
        bus.subscribe(seen.append)
        run_world(bus)
    return seen


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def first(path: Path, **options: Any) -> tuple[int, str]:
    report = verify_journal(path, **options)
    assert report.first_problem is not None, "expected a problem"
    return report.first_problem.line, report.first_problem.kind


# -- writing and the chain -------------------------------------------------------
def test_journal_writes_header_and_one_line_per_event(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    seen = write_journal(backend, path)
    raw = lines_of(path)
    assert len(raw) == 2 + len(seen) == 32
    header = json.loads(raw[0])
    assert header == {
        "checkpoint_every": 0,
        "format": "ringbus-journal",
        "kinds": None,
        "signed": False,
        "version": 2,
    }
    seal = json.loads(raw[-1])
    assert seal["mark"] == "seal" and seal["events"] == 30 and seal["seq"] == 30
    records = [record for _n, record in read_journal(path)]
    assert records == [event.to_dict() for event in seen]
    assert all(line.endswith(b"\n") and line.isascii() for line in raw)
    report = verify_journal(path)
    assert report.ok and report.events == 30 and report.first_seq == 1 and report.last_seq == 30
    assert report.sealed and report.status == "sealed"


def test_chain_hash_is_the_documented_formula(backend: Any, tmp_path: Path) -> None:
    """The README's rule, recomputed with nothing but hashlib and json."""
    path = tmp_path / "run.jsonl"
    write_journal(backend, path, checkpoint_every=7)
    raw = lines_of(path)

    def canonical(value: object) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    prev = hashlib.sha256(canonical(json.loads(raw[0]))).hexdigest()
    marks = 0
    for line in raw[1:]:
        record = json.loads(line)
        stored = record.pop("hash")
        assert stored == hashlib.sha256(prev.encode() + canonical(record)).hexdigest()
        if "mark" in record:
            marks += 1
            assert record["head"] == prev
        prev = stored
    assert marks == 5  # 4 checkpoints (every 7 of 30 events) and the seal
    assert canonical_json({"b": 1, "a": "\u00e9"}) == '{"a":"\\u00e9","b":1}'


def write_v1_journal(path: Path, events: list[Any], chained: bool = True) -> None:
    """A journal as format v1 wrote it: seq, tick, kind and payload chained."""
    header = {"chained": chained, "format": "ringbus-journal", "kinds": None, "version": 1}
    out = [json.dumps(header, separators=(",", ":"))]
    prev = GENESIS_HASH
    for event in events:
        record = event.to_dict()
        if chained:
            prev = chain_hash(
                record["seq"], record["tick"], record["kind"], record["payload"], prev
            )
            record["hash"] = prev
        out.append(json.dumps(record, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n")


def test_v1_journals_still_verify_and_say_what_is_unprotected(
    backend: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = write_journal(backend, tmp_path / "v2.jsonl")
    path = tmp_path / "v1.jsonl"
    write_v1_journal(path, seen)
    prev = GENESIS_HASH
    for line in lines_of(path)[1:]:
        record = json.loads(line)
        payload = json.dumps(
            record["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        text = f"{record['seq']}|{record['tick']}|{json.dumps(record['kind'])}|{payload}|{prev}"
        assert record["hash"] == hashlib.sha256(text.encode("ascii")).hexdigest()
        prev = record["hash"]
    report = verify_journal(path)
    assert report.ok and report.version == 1 and report.status == "v1" and report.events == 30
    assert "day, polity_id, ward_id, actor_id, subject_id, tags, the header" in report.notes[0]
    assert [record for _n, record in read_journal(path)] == [e.to_dict() for e in seen]
    assert ringbus_main(["journal", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "intact (format v1)" in out and "are not protected" in out
    # v1's chain still catches what it covers ...
    lines = lines_of(path)
    lines[4] = lines[4].replace(b'"n":', b'"n":1')
    assert first(tampered(path, lines)) == (5, "chain")
    # ... and an unchained v1 header is refused, not a silent "checks off".
    lines = lines_of(path)
    lines[0] = lines[0].replace(b'"chained":true', b'"chained":false')
    assert first(tampered(path, lines)) == (1, "unchained")
    with pytest.raises(JournalError, match="version 1 cannot be appended"):
        Journal(path)


def test_a_pipe_in_the_kind_cannot_forge_a_collision() -> None:
    one = chain_hash(1, 2, 'A|{"k":1}', {}, GENESIS_HASH)
    two = chain_hash(1, 2, "A", {"k": 1}, GENESIS_HASH)
    assert one != two


def test_unchained_journal_has_no_hash_and_verifies(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    write_journal(backend, path, chained=False)
    assert all("hash" not in json.loads(line) for line in lines_of(path))
    assert json.loads(lines_of(path)[0])["format"] == "ringbus-journal-unchained"
    assert first(path) == (1, "unchained")
    report = verify_journal(path, allow_unchained=True)
    assert report.ok and not report.chained and report.events == 30


def test_reopening_resumes_the_chain(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    bus = backend.bus()
    journal = Journal(path)
    journal.attach(bus)
    run_world(bus, ticks=3)
    journal.close()
    journal.close()  # closing twice is fine
    last_hash = journal.last_hash  # the seal's hash: the chain head
    resumed = Journal(path)
    assert resumed.last_seq == 9 and resumed.last_tick == 2 and resumed.last_hash == last_hash
    resumed.attach(bus)
    bus.set_clock(3)
    bus.publish(kinds.DEPOT_BUILT)
    bus.drain()
    resumed.close()
    report = verify_journal(path)
    assert report.ok and report.last_seq == 10 and report.events == 10
    # One header; each session ends with its seal; the chain runs through both.
    marks = [json.loads(line).get("mark") for line in lines_of(path)]
    assert len(marks) == 13 and marks[10] == "seal" and marks[12] == "seal"


def test_reopening_with_other_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    Journal(path, kinds={"DELIVERY_*"}).close()
    with pytest.raises(JournalError, match="same settings"):
        Journal(path)
    with pytest.raises(JournalError, match="same settings"):
        Journal(path, kinds={"DELIVERY_*"}, chained=False)
    Journal(path, kinds={"DELIVERY_*"}).close()
    other = tmp_path / "other.txt"
    other.write_text("hello\n")
    with pytest.raises(JournalError, match="not a ringbus journal"):
        Journal(other)


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be one of"):
        Journal(tmp_path / "x.jsonl", fsync="sometimes")
    with pytest.raises(TypeError, match="chained must be a bool"):
        Journal(tmp_path / "x.jsonl", chained=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("fsync", ["always", "close", "never"])
def test_fsync_policies_all_write_whole_lines(backend: Any, tmp_path: Path, fsync: str) -> None:
    path = tmp_path / f"{fsync}.jsonl"
    write_journal(backend, path, fsync=fsync)
    assert verify_journal(path).ok


def test_append_refuses_out_of_order_and_foreign_kinds(backend: Any, tmp_path: Path) -> None:
    bus = backend.bus()
    with Journal(tmp_path / "run.jsonl", kinds=["DELIVERY_*"]) as journal:
        bus.publish(kinds.DELIVERY_COMPLETED)
        bus.publish(kinds.DEPOT_BUILT)
        first_event, depot = bus.pending_events()
        journal.append(first_event)
        with pytest.raises(ValueError, match="not after the last journaled seq 1"):
            journal.append(first_event)
        with pytest.raises(ValueError, match="not recorded by this journal"):
            journal.append(depot)
    with pytest.raises(JournalError, match="closed"):
        journal.append(first_event)


def test_filtered_journal_records_its_kinds_and_does_not_count_gaps(
    backend: Any, tmp_path: Path
) -> None:
    path = tmp_path / "deliveries.jsonl"
    bus = backend.bus()
    with Journal(path, kinds={"DELIVERY_*"}) as journal:
        journal.attach(bus)
        run_world(bus)
    header = json.loads(lines_of(path)[0])
    assert header["kinds"] == ["DELIVERY_*"]
    records = [record for _n, record in read_journal(path)]
    assert {record["kind"] for record in records} == {"DELIVERY_COMPLETED", "DELIVERY_FAILED"}
    report = verify_journal(path)
    assert report.ok and not report.gaps_checked
    assert first(path, check_gaps=True) == (4, "gap")


def test_a_failed_write_does_not_advance_the_chain(backend: Any, tmp_path: Path) -> None:
    """A real short write: the file size limit stops the write of a big line midway."""
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
        bus.publish("SMALL", payload={{"n": 1}})
        small = bus.pending_events()[-1]
        bus.publish("BIG", payload={{"blob": "x" * 200_000}})
        big = bus.pending_events()[-1]
        bus.publish("SMALL", payload={{"n": 3}})
        after = bus.pending_events()[-1]
        journal.append(small)
        size, chain, seq = os.path.getsize({str(path)!r}), journal.last_hash, journal.last_seq
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50_000, resource.RLIM_INFINITY))
        try:
            journal.append(big)
        except OSError as error:
            print("failed:", error.errno)
        assert os.path.getsize({str(path)!r}) == size, "the partial line was not rolled back"
        assert (journal.last_hash, journal.last_seq) == (chain, seq), "the chain advanced"
        journal.append(after)
        journal.close()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "failed: 27" in result.stdout  # EFBIG
    report = verify_journal(path, check_gaps=False)
    assert report.ok, report.problems
    assert [record["seq"] for _n, record in read_journal(path)] == [1, 3]
    assert first(path) == (3, "gap")  # the seq the failed write left out is visible


# -- tampering --------------------------------------------------------------------
def tampered(path: Path, lines: list[bytes]) -> Path:
    out = path.with_name("tampered.jsonl")
    out.write_bytes(b"".join(lines))
    return out


@pytest.mark.parametrize(
    ("field", "line"),
    [("payload", 5), ("kind", 12), ("seq", 20), ("tick", 8), ("hash", 17), ("payload", 31)],
)
def test_flipping_a_byte_is_reported_at_its_line(
    backend: Any, tmp_path: Path, field: str, line: int
) -> None:
    path = tmp_path / "run.jsonl"
    write_journal(backend, path)
    lines = lines_of(path)
    record = lines[line - 1]
    anchor = {
        "payload": b'"n":',
        "kind": b'"kind":"D',
        "seq": b'"seq":',
        "tick": b'"tick":',
        "hash": b'"hash":"',
    }[field]
    at = record.index(anchor) + len(anchor)
    if field in {"payload", "seq", "tick"}:
        at = record.index(b",", at) - 1  # the last digit: no leading zero appears
    flipped = bytearray(record)
    flipped[at] = flipped[at] ^ 0x01  # a digit stays a digit, a letter stays a letter
    lines[line - 1] = bytes(flipped)
    bad = tampered(path, lines)
    report = verify_journal(bad)
    assert not report.ok
    assert report.first_problem is not None
    assert report.first_problem.line == line
    assert report.first_problem.kind in {"chain", "order", "gap"}
    assert any(p.kind == "chain" and p.line == line for p in report.problems)
    assert ringbus_main(["journal", "verify", str(bad)]) == 1


def test_deleting_a_line_is_reported_where_the_hole_is(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_journal(backend, path)
    lines = lines_of(path)
    del lines[9]  # the line 10 (seq 9) goes; seq 10 is now on line 10
    report = verify_journal(tampered(path, lines))
    found = [(p.line, p.kind) for p in report.problems]
    assert found == [(10, "chain"), (10, "gap"), (31, "checkpoint")]
    assert "counts 30 events but 29 event lines precede it" in report.problems[2].message
    assert "seq 10 follows seq 8" in report.problems[1].message


def test_deleting_a_line_is_caught_by_the_chain_even_without_gap_checks(
    backend: Any, tmp_path: Path
) -> None:
    path = tmp_path / "run.jsonl"
    write_journal(backend, path)
    lines = lines_of(path)
    del lines[-2]  # the last event, before the seal
    del lines[3]
    report = verify_journal(tampered(path, lines), check_gaps=False)
    found = [(p.line, p.kind) for p in report.problems]
    assert found[0] == (4, "chain") and "gap" not in {kind for _l, kind in found}
    assert (30, "chain") in found and (30, "checkpoint") in found


def test_swapping_two_lines_is_reported_at_the_first(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_journal(backend, path)
    lines = lines_of(path)
    lines[14], lines[15] = lines[15], lines[14]
    report = verify_journal(tampered(path, lines))
    assert report.first_problem is not None
    assert (report.first_problem.line, report.first_problem.kind) == (15, "chain")
    assert {(p.line, p.kind) for p in report.problems} >= {(15, "chain"), (16, "order")}


def test_truncating_the_last_line_is_reported_as_torn(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_journal(backend, path)
    data = path.read_bytes()
    cut = tampered(path, [data[:-40]])
    report = verify_journal(cut)
    assert [(p.line, p.kind) for p in report.problems] == [(32, "torn")]
    assert report.torn and report.last_seq == 30 and report.status == "torn"
    assert "whole up to line 31" in report.problems[0].message
    assert ringbus_main(["journal", "verify", str(cut)]) == 1


def test_a_clock_that_goes_backwards_is_reported(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "clock.jsonl"
    # A bus never lets time go backwards: append events by hand, as another
    # writer of the format could.
    with Journal(path) as journal:
        journal.append(backend.WorldEvent(1, 5, 1, kinds.TICK))
        journal.append(backend.WorldEvent(2, 4, 1, kinds.TICK))
        journal.append(backend.WorldEvent(3, 6, 0, kinds.TICK))
    report = verify_journal(path)
    assert [(p.line, p.kind) for p in report.problems] == [(3, "clock"), (4, "clock")]
    assert "tick went backwards from 5 to 4" in report.problems[0].message
    assert "day went backwards from 1 to 0" in report.problems[1].message


def test_a_journal_needs_a_monotonic_clock(backend: Any, tmp_path: Path) -> None:
    with Journal(tmp_path / "free.jsonl") as journal:
        with pytest.raises(ValueError, match="needs a bus with clock_policy='monotonic'"):
            journal.attach(backend.bus(clock_policy="free"))
        bus = backend.bus()
        journal.attach(bus)
        bus.publish(kinds.TICK, 5)
        with pytest.raises(ValueError, match="before the bus clock's tick 5"):
            bus.publish(kinds.TICK, 4)
        bus.drain()
    assert verify_journal(tmp_path / "free.jsonl").ok


def test_malformed_lines_are_reported(backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_journal(backend, path)
    lines = lines_of(path)
    lines[5] = b"{not json\n"
    lines[7] = b'{"seq": 1}\n'
    report = verify_journal(tampered(path, lines))
    found = [(p.line, p.kind) for p in report.problems]
    assert found[0] == (6, "malformed") and (8, "malformed") in found
    with pytest.raises(JournalError, match="line 6"):
        list(read_journal(tampered(path, lines)))


# -- command line -----------------------------------------------------------------
def test_cli_verify_exit_codes_and_output(
    backend: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl"
    write_journal(backend, path)
    assert ringbus_main(["journal", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK: sealed and intact, 30 events, seq 1..30, head " in out
    assert json.loads(lines_of(path)[-1])["hash"] in out
    lines = lines_of(path)
    del lines[2]
    bad = tampered(path, lines)
    assert ringbus_main(["journal", "verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "first at line 3" in out and "line 3: chain:" in out
    assert ringbus_main(["journal", "verify", "--json", str(bad)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["problems"][0]["line"] == 3
    assert ringbus_main(["journal", "verify", "--no-gaps", str(bad)]) == 1
    assert ringbus_main(["journal", "verify", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert ringbus_main(["journal", "verify", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert ringbus_main(["journal", "verify", "--expect-count", "x", str(path)]) == 2
    assert ringbus_main(["journal", "verify", "--bogus", str(path)]) == 2


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    Journal(path).close()
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run(
        [sys.executable, "-m", "ringbus", "journal", "verify", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "FAILED" in result.stdout and "empty: the journal holds no events" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "ringbus", "journal", "verify", "--allow-empty", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK: sealed and intact, 0 events" in result.stdout


# -- crash ------------------------------------------------------------------------
WRITER = """
import importlib, sys
sys.path.insert(0, {src!r})
import ringbus
from ringbus.journal import Journal
from ringbus._bus import bus_class_for
core = importlib.import_module({core!r})
bus = bus_class_for(core)()
journal = Journal({path!r}, fsync="never")
journal.attach(bus, resume=True)
assert bus.latest_seq() == (journal.last_seq or 0)
tick = journal.last_tick or 0
limit = {limit}
while limit is None or bus.latest_seq() < limit:
    tick += 1
    bus.set_clock(tick, tick // 100)
    for i in range(5):
        payload = {{"n": tick, "i": i, "pad": "x" * 300}}
        bus.publish("DELIVERY_COMPLETED", polity_id="p", payload=payload)
    bus.drain()
    if tick == 20:
        print("running", flush=True)
journal.close()
"""


def test_a_killed_writer_leaves_a_journal_that_verifies_and_resumes(
    backend: Any, tmp_path: Path
) -> None:
    path = tmp_path / "crash.jsonl"
    code = WRITER.format(src=SRC, core=backend.core.__name__, path=str(path), limit=None)
    kill_writer(code, 0.2)
    report = verify_journal(path)
    assert [p.kind for p in report.problems] in (["torn"], ["unsealed"]), report.problems[:3]
    assert report.last_seq is not None and report.last_seq >= 100
    whole = report.last_seq
    # A crash mid-write leaves a partial last line: make sure one is there.
    with path.open("ab") as file:
        file.write(b'{"seq":')
    assert [p.kind for p in verify_journal(path).problems] == ["torn"]
    # Resume: the partial line is cut off and the chain continues.
    code = WRITER.format(src=SRC, core=backend.core.__name__, path=str(path), limit=whole + 50)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "incomplete last line" in result.stderr
    resumed = verify_journal(path)
    assert resumed.ok, resumed.problems[:3]
    assert resumed.last_seq == whole + 50 and resumed.events == whole + 50


def test_resume_can_refuse_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    Journal(path).close()
    with path.open("ab") as file:
        file.write(b'{"seq":1,')
    with pytest.raises(JournalError, match="incomplete"):
        Journal(path, truncate_torn_tail=False)
    journal = Journal(path)
    assert journal.torn_bytes_dropped == 9
    journal.close()
    assert verify_journal(path, allow_empty=True).ok
