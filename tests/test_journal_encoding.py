"""The writer's field-by-field encoding is exactly the canonical JSON of the record."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import ringbus
from ringbus.journal import JournalError, canonical_json
from ringbus.journal._format import event_canonical

text = st.text(max_size=8)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
value = st.one_of(scalar, st.lists(scalar, max_size=3).map(tuple))


@settings(max_examples=150, deadline=None)
@given(
    payload=st.dictionaries(text.filter(lambda key: key != "__truncated__"), value, max_size=6),
    ids=st.lists(st.one_of(st.none(), text), min_size=4, max_size=4),
    tags=st.lists(text, max_size=3),
    kind=text.filter(bool),
)
def test_event_canonical_matches_json_dumps(
    backend: Any, payload: dict[str, Any], ids: list[Any], tags: list[str], kind: str
) -> None:
    bus = backend.bus(max_payload_items=8)
    bus.publish(
        kind,
        3,
        1,
        polity_id=ids[0],
        ward_id=ids[1],
        actor_id=ids[2],
        subject_id=ids[3],
        payload=payload,
        tags=tuple(tags),
    )
    event = bus.pending_events()[-1]
    expected = json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert event_canonical(event) == expected == canonical_json(event.to_dict())


def test_journal_error_is_a_ringbus_error() -> None:
    assert issubclass(JournalError, ringbus.RingbusError)
