"""The cores' journal lines: canonical JSON, SHA-256, the chain and the line reader.

Both cores must give the same bytes, the same results and the same errors;
the canonical JSON must be exactly ``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=True)`` and the digest exactly
:mod:`hashlib`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _journals import run_world
from ringbus import kinds
from ringbus.journal import Journal, verify_journal
from ringbus.journal import _writer as writer_module
from ringbus.journal._format import encode_canonical


def dumps(value: object) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def outcome(function: Any, *args: Any) -> tuple[str, object]:
    """What a call gives: its result, or its exception's type and message."""
    try:
        return "value", function(*args)
    except Exception as error:
        return type(error).__name__, str(error)


everything = st.text(st.characters(codec=None, categories=None), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    everything,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(everything, inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_encode_value_is_json_dumps(backend: Any, value: object) -> None:
    assert outcome(backend.core.encode_value, value) == outcome(dumps, value)


@pytest.mark.parametrize(
    "value",
    [
        -0.0,
        float("nan"),
        float("inf"),
        -math.inf,
        5e-324,
        1e16,
        1.7976931348623157e308,
        2**63,
        -(2**63) - 1,
        10**400,
        "\ud800\udfff\U0001f600\x7f\x00\u2028",
        '\b\f\n\r\t\\"/\x01\x1f ~',
        "caf\u00e9 \u0100\uffff",
        True,
        [[[[[]]]]],
        list(range(3)),
        {"b": 1, "a": [1.5, None]},
        {1: 2},
        {"a": 1, 2: 3},
        object(),
        b"bytes",
    ],
)
def test_encode_value_edges(backend: Any, value: object) -> None:
    assert outcome(backend.core.encode_value, value) == outcome(dumps, value)


def test_encode_value_deep_nesting_fails_as_json_does(backend: Any) -> None:
    deep: object = 0
    for _ in range(100_000):
        deep = [deep]
    kind, _message = outcome(backend.core.encode_value, deep)
    assert kind == outcome(dumps, deep)[0] == "RecursionError"
    nested: object = 0
    for _ in range(200):
        nested = (nested,)
    assert backend.core.encode_value(nested) == dumps(nested)


@pytest.mark.parametrize("size", [*range(200), 247, 248, 255, 256, 1000, 65_537])
def test_sha256_hex_is_hashlib(backend: Any, size: int) -> None:
    data = bytes((i * 131 + size) % 256 for i in range(size))
    expected = hashlib.sha256(data).hexdigest()
    assert backend.core.sha256_hex(data) == expected
    assert backend.core.sha256_hex(data, portable=True) == expected


def test_chain_and_digest_arguments_fail_alike(both_backends: Any) -> None:
    calls = [
        lambda core: core.sha256_hex("text"),
        lambda core: core.sha256_hex(bytearray(b"x")),
        lambda core: core.JournalChain(True, -1, True, "DAY_ROLLOVER", print),
        lambda core: core.JournalChain(True, "5", True, "DAY_ROLLOVER", print),
        lambda core: core.JournalChain(True, 5, True, "", print),
        lambda core: core.JournalChain(True, 5, True, "DAY_ROLLOVER", None),
    ]
    for call in calls:
        results = {outcome(call, backend.core) for backend in both_backends}
        assert len(results) == 1, results
        assert next(iter(results))[0] in ("TypeError", "ValueError")


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=600))
def test_sha256_hex_of_any_bytes(backend: Any, data: bytes) -> None:
    expected = hashlib.sha256(data).hexdigest()
    assert backend.core.sha256_hex(data) == backend.core.sha256_hex(data, True) == expected


text = st.text(max_size=8)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    everything,
)
payload_value = st.one_of(scalar, st.lists(scalar, max_size=3).map(tuple))
events = st.fixed_dictionaries(
    {
        "payload": st.dictionaries(
            everything.filter(lambda key: key != "__truncated__"), payload_value, max_size=6
        ),
        "ids": st.lists(st.one_of(st.none(), everything), min_size=4, max_size=4),
        "tags": st.lists(everything, max_size=3),
        "kind": everything.filter(bool),
    }
)


def publish(backend: Any, spec: dict[str, Any]) -> Any:
    bus = backend.bus(max_payload_items=8)
    ids = spec["ids"]
    bus.publish(
        spec["kind"],
        3,
        1,
        polity_id=ids[0],
        ward_id=ids[1],
        actor_id=ids[2],
        subject_id=ids[3],
        payload=spec["payload"],
        tags=tuple(spec["tags"]),
    )
    return bus.pending_events()[-1]


@settings(max_examples=150, deadline=None)
@given(spec=events)
def test_encode_event_is_the_record_dumped_on_both_cores(
    both_backends: Any, spec: dict[str, Any]
) -> None:
    for source in both_backends:
        event = publish(source, spec)
        expected = dumps(event.to_dict())
        for encoder in both_backends:
            assert encoder.core.encode_event(event) == expected


def test_encode_event_of_a_view_and_of_a_copy(backend: Any) -> None:
    bus = backend.bus(max_events=4)
    seen: list[str] = []
    bus.subscribe(lambda event: seen.append(backend.core.encode_event(event)))
    for n in range(12):
        bus.publish("K", payload={"z": n, "a": (1.5, "x"), "m": "\u00e9"}, tags=("t",))
        bus.drain()
    assert len(seen) == 12
    for line, n in zip(seen, range(12), strict=True):
        assert json.loads(line)["payload"] == {"z": n, "a": [1.5, "x"], "m": "\u00e9"}


def chain_lines(backend: Any, events: list[Any], chained: bool = True) -> bytes:
    marks: list[str] = []
    chain = backend.core.JournalChain(
        chained, 5, True, kinds.DAY_ROLLOVER, lambda: marks.append("due")
    )
    chain.last_hash = "ab" * 32 if chained else ""
    chain.add_text(chain.mark_text("checkpoint"))
    for event in events:
        chain.append(event)
        if marks:
            marks.clear()
            chain.add_text(chain.mark_text("checkpoint"))
    chain.add_text(chain.mark_text("seal"))
    return chain.pending()


def world_events(backend: Any) -> list[Any]:
    bus = backend.bus()
    run_world(bus, ticks=6, per_tick=4, every_field=True)
    return list(bus.get_since(0))


@pytest.mark.parametrize("chained", [True, False])
def test_both_chains_give_the_same_bytes_for_the_same_run(
    both_backends: Any, chained: bool
) -> None:
    runs = {
        (source.name, chain.name): chain_lines(chain, world_events(source), chained)
        for source in both_backends
        for chain in both_backends
    }
    assert len(set(runs.values())) == 1, runs.keys()
    prev = "ab" * 32
    for line in next(iter(runs.values())).splitlines():
        record = json.loads(line)
        if not chained:
            assert "hash" not in record and line == encode_canonical(record).encode()
            continue
        stored = record.pop("hash")
        body = encode_canonical(record).encode()
        assert line == body[:-1] + f',"hash":"{stored}"}}'.encode()
        assert stored == hashlib.sha256(prev.encode() + body).hexdigest()
        prev = stored


def test_journal_files_are_the_same_bytes_on_both_cores(
    both_backends: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = []
    for backend in both_backends:
        monkeypatch.setattr(writer_module, "JournalChain", backend.core.JournalChain)
        path = tmp_path / f"{backend.name}.jsonl"
        bus = backend.bus()
        with Journal(path, checkpoint_every=7) as journal:
            journal.attach(bus)
            run_world(bus, ticks=9, per_tick=5, every_field=True)
        assert verify_journal(path).ok
        files.append(path.read_bytes())
    assert len(set(files)) == 1


def test_mark_text_is_the_canonical_mark(backend: Any) -> None:
    for chained in (True, False):
        chain = backend.core.JournalChain(chained, 0, True, kinds.DAY_ROLLOVER, lambda: None)
        chain.last_hash = "0f" * 32 if chained else ""
        expected = {
            "day": None,
            "events": 0,
            "head": "0f" * 32 if chained else None,
            "mark": "seal",
            "seq": None,
            "tick": None,
        }
        assert chain.mark_text("seal") == encode_canonical(expected)
        chain.append(backend.WorldEvent(41, 7, 2, "K"))
        expected.update(day=2, events=1, seq=41, tick=7, mark="checkpoint")
        if chained:
            expected["head"] = chain.last_hash
        assert chain.mark_text("checkpoint") == encode_canonical(expected)
    for bad in ("", "two words", "é", 3):
        assert outcome(chain.mark_text, bad)[0] == "ValueError"


def test_chain_state_commit_rollback_and_errors(both_backends: Any) -> None:
    seen = []
    for backend in both_backends:
        chain = backend.core.JournalChain(True, 0, True, kinds.DAY_ROLLOVER, lambda: None)
        chain.last_hash = "1" * 64
        chain.append(backend.WorldEvent(1, 1, 0, "A"))
        chain.commit()
        committed = (chain.last_hash, chain.last_seq, chain.events, chain.pending_size)
        chain.append(backend.WorldEvent(2, 1, 1, "B"))
        assert chain.day_ended and chain.pending_size > 0
        chain.rollback()
        assert (chain.last_hash, chain.last_seq, chain.events, chain.pending_size) == committed
        assert not chain.day_ended
        results = [
            outcome(chain.append, backend.WorldEvent(1, 1, 0, "A")),
            outcome(setattr, chain, "last_hash", "x" * 63),
            outcome(setattr, chain, "last_hash", "\u00e9" * 64),
            outcome(chain.add_text, '{"a":"\u00e9"}'),
            outcome(chain.add_text, "[1]"),
            outcome(chain.set_last, -1, 0, 0),
            outcome(chain.append, object()),
            (chain.last_seq, chain.last_tick, chain.last_day, chain.mark_day, chain.appended),
        ]
        seen.append(results)
        assert results[0] == (
            "ValueError",
            "event seq 1 is not after the last journaled seq 1: a journal is appended in seq order",
        )
    assert all(results == seen[0] for results in seen)


def writer_lines(backend: Any) -> tuple[str, list[bytes]]:
    events = world_events(backend)
    bus = backend.bus()
    bus.publish("F", payload={"x": 0.1, "y": -0.0, "z": 1e-7, "w": 12345678901234567.0})
    events += [bus.pending_events()[-1]]
    chain = backend.core.JournalChain(True, 0, False, kinds.DAY_ROLLOVER, lambda: None)
    chain.last_hash = "c" * 64
    for seq, event in enumerate(events, start=1):
        chain.append(
            backend.WorldEvent(
                seq,
                event.tick,
                event.day,
                event.kind,
                event.polity_id,
                event.ward_id,
                event.actor_id,
                event.subject_id,
                event.payload,
                event.tags,
            )
        )
    return "c" * 64, chain.pending().splitlines()


def test_read_event_line_takes_what_the_writer_lays_out(both_backends: Any) -> None:
    for backend in both_backends:
        prev, lines = writer_lines(backend)
        for line in lines:
            record = json.loads(line)
            flat = all(type(value) is not list for value in record["payload"].values())
            got = [other.core.read_event_line(line, prev) for other in both_backends]
            assert got[0] == got[-1]
            if flat:
                assert got[0] == (
                    record["seq"],
                    record["tick"],
                    record["day"],
                    record["kind"],
                    record["hash"],
                )
            else:
                assert got[0] is None  # nested values: the verifier's general path
            prev = record["hash"]


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_read_event_line_agrees_on_any_edit(both_backends: Any, data: st.DataObject) -> None:
    backend = both_backends[0]
    prev, lines = writer_lines(backend)
    index = data.draw(st.integers(0, len(lines) - 1))
    for _ in range(index):
        prev = json.loads(lines[_])["hash"]
    line = bytearray(lines[index])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(line) - 1))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        byte = data.draw(st.sampled_from(list(b'\\"{}[],:.-+eE0159afu nultrsx\x00\x1f\x7f\xc3')))
        if action == "set":
            line[at] = byte
        elif action == "insert":
            line.insert(at, byte)
        elif len(line) > 1:
            del line[at]
    edited = bytes(line)
    if data.draw(st.booleans()) and len(edited) > 76:
        edited = rehashed(edited[:-75] + b"}", prev)  # as a rewritten chain would
    got = [other.core.read_event_line(edited, prev) for other in both_backends]
    assert got[0] == got[-1]
    if got[0] is not None:
        # Accepted: exactly canonical, and the hash is the chain's.
        record = json.loads(edited)
        stored = record.pop("hash")
        body = encode_canonical(record).encode()
        assert edited == body[:-1] + f',"hash":"{stored}"}}'.encode()
        assert stored == hashlib.sha256(prev.encode() + body).hexdigest()


def rehashed(body: bytes, prev: str) -> bytes:
    """An event line for record bytes ``body`` whose hash matches them."""
    digest = hashlib.sha256(prev.encode() + body).hexdigest()
    return body[:-1] + f',"hash":"{digest}"}}'.encode()


EVENT = (
    '{{"actor_id":null,"day":1,"kind":"K","payload":{{{}}},"polity_id":null,"seq":3,'
    '"subject_id":null,"tags":[],"tick":2,"ward_id":null}}'
)


@pytest.mark.parametrize(
    "payload",
    [
        '"a":0',
        '"a":-1,"b":9223372036854775807,"c":-9223372036854775808',
        '"":1,"a":null,"b":true,"c":false',
        '"a":0.1,"b":-0.0,"c":1e-07,"d":1.2345678901234568e+16,"e":5e-324',
        '"a":"\\u00e9\\ud83d\\ude00\\ud800\\n\\"\\\\\\u007f\\u001f"',
    ],
)
def test_read_event_line_takes_canonical_payloads(both_backends: Any, payload: str) -> None:
    prev = "d" * 64
    line = rehashed(EVENT.format(payload).encode(), prev)
    for backend in both_backends:
        assert backend.core.read_event_line(line, prev) is not None, payload


@pytest.mark.parametrize(
    "payload",
    [
        '"a":-0',
        '"a":01',
        '"a":1.0e5',
        '"a":1E+16',
        '"a":0.10',
        '"a":1e400',
        '"a":NaN',
        '"a":9223372036854775808',
        '"a":-9223372036854775809',
        '"a":"\\u0041"',
        '"a":"\\u00E9"',
        '"a":"\\/"',
        '"a":"\\u0008"',
        '"a":"\u00e9"',
        '"a":"\x7f"',
        '"b":1,"a":2',
        '"a":1,"a":2',
        '"a\\u00e9":1',
        '"a":[1]',
        '"a":{}',
        '"a": 1',
    ],
)
def test_read_event_line_refuses_what_is_not_canonical(both_backends: Any, payload: str) -> None:
    prev = "d" * 64
    line = rehashed(EVENT.format(payload).encode("utf-8"), prev)
    for backend in both_backends:
        assert backend.core.read_event_line(line, prev) is None, payload


@pytest.mark.parametrize(
    ("line", "prev"),
    [
        (b"", "a" * 64),
        (b"{}", "a" * 64),
        ("text", "a" * 64),
        (b'{"a":1,"hash":"' + b"0" * 64 + b'"}', "a" * 64),
        (b"x" * 100, "short"),
        (b"x" * 100, "\u00e9" * 64),
        (b"x" * 100, None),
    ],
)
def test_read_event_line_refuses_what_is_not_an_event_line(
    both_backends: Any, line: Any, prev: Any
) -> None:
    for backend in both_backends:
        assert backend.core.read_event_line(line, prev) is None


@pytest.mark.c_extension
def test_both_cores_document_the_journal_lines_alike() -> None:
    import inspect

    import ringbus._ringbus as compiled
    import ringbus._ringbus_py as twin

    for name in ("JournalChain", "encode_event", "encode_value", "sha256_hex", "read_event_line"):
        ours, theirs = getattr(compiled, name), getattr(twin, name)
        assert inspect.getdoc(ours) == inspect.getdoc(theirs), name
    public = {n for n in dir(twin.JournalChain) if not n.startswith("_")}
    assert public <= set(dir(compiled.JournalChain))
    for attribute in sorted(public):
        doc = inspect.getdoc(getattr(twin.JournalChain, attribute))
        assert inspect.getdoc(getattr(compiled.JournalChain, attribute)) == doc, attribute
