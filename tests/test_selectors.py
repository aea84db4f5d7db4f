"""The kind selector engine: every pattern form, mixes, and the ordering rule."""

from __future__ import annotations

from typing import Any

import pytest

from ringbus import KindSelector

KINDS = (
    "DELIVERY_COMPLETED",
    "DELIVERY_FAILED",
    "DEPOT_BUILT",
    "cognition",
    "cognition/audit.refusal",
    "cognition/plan/step",
    "cognitionX/other",
    "data:user:created",
    "data:depot:created",
    "data:user:deleted",
    "data:user:profile:created",
    "agent",
    "agent:7",
    "agent:7:moved",
    "agents:7",
)


def matching(*patterns: str) -> list[str]:
    selector = KindSelector(patterns)
    return [kind for kind in KINDS if kind in selector]


def test_exact_kind() -> None:
    assert matching("DEPOT_BUILT") == ["DEPOT_BUILT"]
    assert matching("cognition") == ["cognition"]
    assert matching("agent:7") == ["agent:7"]


def test_fnmatch_glob() -> None:
    assert matching("DELIVERY_*") == ["DELIVERY_COMPLETED", "DELIVERY_FAILED"]
    assert matching("DE?OT_BUILT") == ["DEPOT_BUILT"]
    assert matching("DELIVERY_[C]*") == ["DELIVERY_COMPLETED"]
    # without ':' a glob spans '/' (fnmatch has no separators)
    assert matching("cognition/*") == ["cognition/audit.refusal", "cognition/plan/step"]


def test_prefix_on_slash_keys() -> None:
    assert matching("cognition/") == ["cognition/audit.refusal", "cognition/plan/step"]
    assert matching("cognition/plan/") == ["cognition/plan/step"]


def test_prefix_with_glob_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix selector 'cog\\*/'"):
        KindSelector("cog*/")


def test_segment_star_is_exactly_one_segment() -> None:
    assert matching("data:*:created") == ["data:user:created", "data:depot:created"]
    assert matching("agent:*") == ["agent:7"]
    assert matching("*:7") == ["agent:7", "agents:7"]


def test_segment_double_star_is_any_number_of_segments() -> None:
    assert matching("agent:**") == ["agent", "agent:7", "agent:7:moved"]
    assert matching("data:**:created") == [
        "data:user:created",
        "data:depot:created",
        "data:user:profile:created",
    ]
    assert matching("**:moved") == ["agent:7:moved"]


def test_segment_glob_inside_one_segment() -> None:
    assert matching("data:u*:created") == ["data:user:created"]
    assert matching("agent*:7") == ["agent:7", "agents:7"]


def test_segment_glob_with_empty_segment_is_refused() -> None:
    with pytest.raises(ValueError, match="empty segment"):
        KindSelector("data::*")


@pytest.mark.parametrize("bad", ["", 3, None])
def test_bad_patterns_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError, match="non-empty str"):
        KindSelector([bad])


def test_mixed_forms_on_one_selector() -> None:
    patterns = ("DEPOT_BUILT", "DELIVERY_F*", "cognition/", "data:*:created", "agent:**")
    assert matching(*patterns) == [
        "DELIVERY_FAILED",
        "DEPOT_BUILT",
        "cognition/audit.refusal",
        "cognition/plan/step",
        "data:user:created",
        "data:depot:created",
        "agent",
        "agent:7",
        "agent:7:moved",
    ]
    selector = KindSelector(patterns)
    assert selector.selectors == patterns
    assert all(selector.matches(kind) == (kind in selector) for kind in KINDS)


def test_single_string_and_duplicates() -> None:
    assert KindSelector("DEPOT_BUILT").selectors == ("DEPOT_BUILT",)
    assert KindSelector(["a", "a", "b"]).selectors == ("a", "b")
    assert 3 not in KindSelector("DELIVERY_*")


def test_get_since_uses_every_form(backend: Any) -> None:
    bus = backend.bus()
    for kind in KINDS:
        bus.publish(kind)
    got = bus.get_since(0, kinds=["cognition/", "agent:*", "DELIVERY_C*", "data:**:created"])
    assert [event.kind for event in got] == [
        "DELIVERY_COMPLETED",
        "cognition/audit.refusal",
        "cognition/plan/step",
        "data:user:created",
        "data:depot:created",
        "data:user:profile:created",
        "agent:7",
    ]


def test_each_subscriber_gets_each_event_once_in_seq_order(backend: Any) -> None:
    # The order a subscriber sees never depends on which pattern matched, and an
    # event matched by several of its patterns is delivered once.
    bus = backend.bus()
    seen: list[tuple[str, int]] = []
    bus.subscribe(
        lambda e: seen.append(("mixed", e.seq)),
        kinds=["agent:7", "agent:**", "agent:*", "a*", "DEPOT_BUILT"],
    )
    bus.subscribe(lambda e: seen.append(("exact", e.seq)), kinds=["agent:7", "DEPOT_BUILT"])
    bus.subscribe(lambda e: seen.append(("prefix", e.seq)), kinds="cognition/")
    for kind in ("agent:7", "cognition/x", "DEPOT_BUILT", "agent", "agent:7:moved", "agent:7"):
        bus.publish(kind)
    assert bus.drain() == 6
    assert seen == [
        ("mixed", 1),
        ("exact", 1),
        ("prefix", 2),
        ("mixed", 3),
        ("exact", 3),
        ("mixed", 4),
        ("mixed", 5),
        ("mixed", 6),
        ("exact", 6),
    ]


def test_selector_form_does_not_change_position_among_subscribers(backend: Any) -> None:
    # Subscribers are called in subscription order whatever form matched them.
    bus = backend.bus()
    order: list[str] = []
    forms = [
        ("glob", "net/*"),
        ("segment", "net/data:*:b"),
        ("prefix", "net/"),
        ("exact", "net/data:a:b"),
        ("any", None),
        ("double", "**:b"),
    ]
    for label, pattern in forms:
        bus.subscribe(lambda e, label=label: order.append(label), kinds=pattern)
    bus.publish("net/data:a:b")
    bus.drain()
    assert order == [label for label, _pattern in forms]
