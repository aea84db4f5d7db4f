"""The one event schema: what an event and its fields may hold.

Both cores normalise and check every field with these functions (the
compiled core checks the common case — exact ``str``/``int``/``None`` and a
plain ``dict`` payload of scalars — in C, by the same rules, and calls them
for everything else), so both accept, convert and reject exactly the same
input with exactly the same messages. The checks of ``to_dict()``-shaped data
that arrives from outside — transports, the Redis bridge, the journal, the
viewer — use the same rules through :func:`event_dict_problems`.
"""

from __future__ import annotations

import math
import reprlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

__all__ = [
    "CLOCK_POLICIES",
    "DROP_POLICIES",
    "EVENT_SCHEMA",
    "EventFields",
    "FIELDS",
    "MAX_CLOCK",
    "MAX_PAYLOAD_INT",
    "MIN_PAYLOAD_INT",
    "MAX_NESTING",
    "MAX_PAYLOAD_ITEMS_LIMIT",
    "MAX_PAYLOAD_TREE_ITEMS",
    "NORMAL",
    "PRIORITIES",
    "TRUNCATED_KEY",
    "URGENT",
    "check_non_negative",
    "check_option_count",
    "check_id",
    "check_kind",
    "check_lane",
    "check_limit",
    "check_positive",
    "event_args_from_dict",
    "event_dict_problems",
    "event_field_args",
    "freeze_value",
    "lane_of",
    "jsonify",
    "normalise_payload",
    "normalise_tags",
    "thaw_value",
]

#: The fields of a ``WorldEvent``, in order (and the keys of its ``to_dict()``).
FIELDS = (
    "seq",
    "tick",
    "day",
    "kind",
    "polity_id",
    "ward_id",
    "actor_id",
    "subject_id",
    "payload",
    "tags",
)


class EventFields(TypedDict, total=False):
    """The keyword fields of ``publish`` (and of every call that publishes like it:
    ``publish_urgent``, ``send``, ``schedule``), written once."""

    polity_id: str | None
    ward_id: str | None
    actor_id: str | None
    subject_id: str | None
    payload: object
    tags: object


def event_field_args(caller: str, fields: dict[str, Any]) -> tuple[Any, ...]:
    """``fields`` (an :class:`EventFields`) as the core's positional arguments:
    ``polity_id, ward_id, actor_id, subject_id, payload, tags``.

    Raises
    ------
    TypeError
        A name that is not a field of :class:`EventFields`, as Python says it.
    """
    for name in fields:
        if name not in EventFields.__annotations__:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    get = fields.get
    return (
        get("polity_id"),
        get("ward_id"),
        get("actor_id"),
        get("subject_id"),
        get("payload"),
        get("tags", ()),
    )


#: Key of the marker pair that ends a truncated payload.
TRUNCATED_KEY = "__truncated__"
#: How deep lists, tuples and mappings may nest inside a payload value.
MAX_NESTING = 8
#: How many values one payload's values may hold nested inside them, all
#: together, at any depth (the items of lists and tuples, the values of
#: nested mappings); the top-level pairs are bounded by ``max_payload_items``.
MAX_PAYLOAD_TREE_ITEMS = 4096
#: Largest accepted ``max_payload_items`` (the ring stores pairs inline).
MAX_PAYLOAD_ITEMS_LIMIT = 64
#: seq, tick and day are stored as signed 64-bit integers.
MAX_CLOCK = 2**63 - 1
#: Accepted values of ``clock_policy``: time never goes backwards, or anything goes.
CLOCK_POLICIES = ("monotonic", "free")
#: Accepted values of ``drop_policy``: overwrite the oldest event, or refuse the new one.
DROP_POLICIES = ("DROP_OLDEST", "RAISE")
#: Publish priorities, lowest first: a drain round dispatches higher ones first.
PRIORITIES = ("low", "normal", "high", "urgent")
#: The lanes of ``"normal"`` and ``"urgent"`` (a lane is an index of PRIORITIES).
NORMAL = 1
URGENT = 3
#: Payload ints are signed 64-bit integers, like the clock.
MIN_PAYLOAD_INT = -(2**63)
MAX_PAYLOAD_INT = 2**63 - 1

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def _describe(value: object) -> str:
    if type(value) is int:
        # Up to 100 digits in full; past that say how big (repr() of a huge
        # int is slow, and refused past 4300 digits).
        bits = value.bit_length()
        return str(value) if bits <= 332 else f"<int of {bits} bits>"
    return _short.repr(value)


# Subclasses of str, int and float are converted through the base type's own
# method, which copies the value: a subclass's __str__/__int__/__index__ (or
# __lt__, __hash__, __eq__) never runs, so what is checked is what is stored.
_as_str = str.__str__
_as_int = int.__int__
_as_float = float.__float__


def _refuse_unordered(what: str, value: object) -> None:
    if isinstance(value, (set, frozenset)):
        raise TypeError(
            f"{what} must be ordered, got {type(value).__name__}: a set's order changes "
            "with the hash seed, which would break same steps, same stream; "
            "use a list or a tuple"
        )


def lane_of(priority: object) -> int:
    """The lane (index in :data:`PRIORITIES`) of a ``publish(priority=...)`` value.

    Checked before the event is stored: a bad value takes no seq.

    Raises
    ------
    ValueError
        ``priority`` is not one of :data:`PRIORITIES`.
    """
    if isinstance(priority, str):
        name = str.__str__(priority)  # a str subclass's own __eq__ never runs
        if name in PRIORITIES:
            return PRIORITIES.index(name)
    raise ValueError(
        f"priority must be one of {', '.join(map(repr, PRIORITIES))}, got {_short.repr(priority)}"
    )


def check_lane(lane: object) -> None:
    """Refuse a lane that is not an index of :data:`PRIORITIES` (core-internal)."""
    if type(lane) is not int or not 0 <= lane < len(PRIORITIES):
        raise ValueError(f"lane must be an int from 0 to {len(PRIORITIES) - 1}, got {lane!r}")


def check_kind(kind: object) -> str:
    """Return ``kind`` as a plain ``str`` or raise naming what was wrong."""
    if type(kind) is not str:
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a str, got {type(kind).__name__}")
        kind = _as_str(kind)
    if not kind:
        raise ValueError("kind must be a non-empty string")
    return kind


def check_non_negative(name: str, value: object) -> int:
    """Return a non-negative 64-bit ``int`` (``seq``, ``tick``, ``day``)."""
    if type(value) is int:
        number = value
    elif isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    else:
        number = _as_int(value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {_describe(number)}")
    if number > MAX_CLOCK:
        raise ValueError(f"{name} must be < 2**63, got {_describe(number)}")
    return number


def check_positive(name: str, value: object, maximum: int = sys.maxsize) -> int:
    """Return ``value`` as an ``int`` from 1 to ``maximum`` (sizes and bounds)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    number = _as_int(value)
    if number < 1:
        raise ValueError(f"{name} must be >= 1, got {_describe(number)}")
    if number > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {_describe(number)}")
    return number


def check_option_count(name: str, value: object) -> int:
    """Return an option that counts something (``max_buffer``, ``batch_size``...) as an
    ``int`` >= 1, or raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or _as_int(value) < 1:
        raise ValueError(f"{name} must be an int >= 1, got {_describe(value)}")
    return _as_int(value)


def event_args_from_dict(data: object, fields: tuple[str, ...]) -> tuple[object, ...]:
    """Check a ``to_dict()``-shaped dict and return its values in field order."""
    if not isinstance(data, dict):
        raise TypeError(f"from_dict() takes a dict, got {type(data).__name__}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise ValueError(f"event dict is missing {', '.join(missing)}")
    extra = sorted(str(key) for key in data if key not in fields)
    if extra:
        raise ValueError(f"event dict has unknown fields {', '.join(extra)}")
    return tuple(data[name] for name in fields)


def check_limit(limit: object) -> int | None:
    """Validate the ``limit`` argument of ``get_since``."""
    if limit is None:
        return None
    return check_non_negative("limit", limit)


def check_id(name: str, value: object) -> str | None:
    """Return an id field (``polity_id``, ``ward_id``, ...) as ``str`` or ``None``."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return _as_str(value)
    raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")


def _check_int(key: str, value: int) -> int:
    if not MIN_PAYLOAD_INT <= value <= MAX_PAYLOAD_INT:
        raise ValueError(
            f"payload value for {key!r} is outside the signed 64-bit range "
            f"(-2**63 .. 2**63-1), got {_describe(value)}"
        )
    return value


def freeze_value(
    key: str, value: object, depth: int = 0, budget: list[int] | None = None
) -> object:
    """Return ``value`` as an immutable, JSON-ready payload value.

    Accepted: ``None``, ``bool``, ``int`` in the signed 64-bit range, finite
    ``float``, ``str``, lists/tuples of these (lists become tuples) and
    mappings with ``str`` keys (they become tuples of ``(key, value)`` pairs,
    in their order), nested up to :data:`MAX_NESTING` levels. Subclasses
    (``IntEnum``, ``StrEnum``) become the plain built-in value (converted
    first, then checked) so that events stay deterministic. Sets are refused:
    their order changes with the hash seed.

    ``budget`` (a one-item list) counts down the nested values still allowed
    in the payload (:data:`MAX_PAYLOAD_TREE_ITEMS`).
    """
    if depth and budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(
                f"payload holds more than {MAX_PAYLOAD_TREE_ITEMS} values nested in its "
                f"values (at {key!r})"
            )
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        if MIN_PAYLOAD_INT <= value <= MAX_PAYLOAD_INT:  # type: ignore[operator]
            return value
        return _check_int(key, value)  # type: ignore[arg-type]
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"payload value for {key!r} must be a finite float, got {value!r}")
        return value
    if kind is tuple or kind is list:
        if depth >= MAX_NESTING:
            raise ValueError(
                f"payload value for {key!r} is nested deeper than {MAX_NESTING} levels"
            )
        return tuple([freeze_value(key, item, depth + 1, budget) for item in value])  # type: ignore[attr-defined]
    if isinstance(value, Mapping):
        return _freeze_mapping(key, value, depth, budget)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _check_int(key, _as_int(value))
    if isinstance(value, float):
        return freeze_value(key, _as_float(value), depth, budget)
    if isinstance(value, str):
        return _as_str(value)
    if isinstance(value, (list, tuple)):
        # Copy through the base type: a subclass's __iter__ does not run.
        items = (
            list.copy(value) if isinstance(value, list) else tuple.__getitem__(value, slice(None))
        )
        return freeze_value(key, list(items), depth, budget)
    if isinstance(value, (set, frozenset)):
        raise TypeError(
            f"payload value for {key!r} has unsupported type {kind.__name__}: a set's order "
            "changes with the hash seed, which would break same steps, same stream; "
            "use a list or a tuple"
        )
    raise TypeError(
        f"payload value for {key!r} has unsupported type {kind.__name__}: "
        "use None, bool, int, float, str, or a list/tuple or a str-keyed dict of them"
    )


def _freeze_mapping(
    key: str, value: Mapping[Any, Any], depth: int, budget: list[int] | None
) -> tuple[tuple[str, object], ...]:
    """A nested mapping as a tuple of ``(str, frozen value)`` pairs, in its order."""
    if depth >= MAX_NESTING:
        raise ValueError(f"payload value for {key!r} is nested deeper than {MAX_NESTING} levels")
    # A dict (or subclass) is read through the base type: no __iter__ of ours runs.
    items = list(dict.items(value)) if isinstance(value, dict) else list(value.items())
    pairs: list[tuple[str, object]] = []
    seen: set[str] = set()
    for inner_key, inner_value in items:
        if type(inner_key) is not str:
            if not isinstance(inner_key, str):
                raise TypeError(
                    f"payload key {_describe(inner_key)} inside {key!r} is not a str "
                    f"(got {type(inner_key).__name__}): payload keys must be str"
                )
            inner_key = _as_str(inner_key)
        if inner_key in seen:
            raise ValueError(f"payload key {inner_key!r} appears more than once inside {key!r}")
        seen.add(inner_key)
        pairs.append(
            (inner_key, freeze_value(f"{key}.{inner_key}", inner_value, depth + 1, budget))
        )
    return tuple(pairs)


def thaw_value(value: object) -> object:
    """A payload value with its nested mappings as dicts again (for ``payload_dict``).

    A tuple whose items are all ``(str, value)`` pairs with distinct keys is
    what a nested mapping freezes to, and becomes a dict; other tuples stay
    tuples (their items thawed). A list of such pairs freezes the same way,
    so it reads back as a dict too.
    """
    if type(value) is not tuple:
        return value
    items: tuple[Any, ...] = value
    if items and all(
        type(item) is tuple and len(item) == 2 and type(item[0]) is str for item in items
    ):
        thawed = {item[0]: thaw_value(item[1]) for item in items}
        if len(thawed) == len(items):
            return thawed
    return tuple([thaw_value(item) for item in items])


def normalise_payload(payload: object, max_items: int | None) -> tuple[tuple[str, object], ...]:
    """Turn ``payload`` into a tuple of ``(str, value)`` pairs.

    Parameters
    ----------
    payload
        A mapping, an iterable of ``(key, value)`` pairs, or ``None``. Sets
        are refused (no stable order).
    max_items
        Keep at most this many pairs: a longer payload keeps its first
        ``max_items - 1`` pairs and ends with ``("__truncated__", True)``.
        The key ``"__truncated__"`` is reserved for that marker and refused
        in the payload. ``None`` keeps everything and accepts the marker as
        the last pair, with the value ``True`` (an event being rebuilt).
    """
    if payload is None:
        return ()
    items: Iterable[Any]
    from_mapping = isinstance(payload, Mapping)
    if from_mapping:
        items = payload.items()  # type: ignore[attr-defined]
    elif isinstance(payload, (str, bytes, bytearray)):
        raise TypeError(
            "payload must be a dict, an iterable of (key, value) pairs or None, "
            f"got {type(payload).__name__}"
        )
    else:
        _refuse_unordered("payload", payload)
        try:
            items = iter(payload)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                "payload must be a dict, an iterable of (key, value) pairs or None, "
                f"got {type(payload).__name__}"
            ) from None
    pairs: list[tuple[str, object]] = []
    seen: set[str] = set()
    budget = [MAX_PAYLOAD_TREE_ITEMS]
    for item in items:
        if not from_mapping and (not isinstance(item, (tuple, list)) or len(item) != 2):
            raise TypeError(f"payload item {_describe(item)} is not a (key, value) pair")
        key, value = item
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(
                    f"payload key {_describe(key)} is not a str "
                    f"(got {type(key).__name__}): payload keys must be str"
                )
            key = _as_str(key)
        if key in seen:
            raise ValueError(f"payload key {key!r} appears more than once")
        seen.add(key)
        pairs.append((key, freeze_value(key, value, 0, budget)))
    if TRUNCATED_KEY in seen:
        last_key, last_value = pairs[-1]
        if max_items is not None or last_key != TRUNCATED_KEY or last_value is not True:
            raise ValueError(
                f"payload key {TRUNCATED_KEY!r} is reserved: the bus adds "
                f"({TRUNCATED_KEY!r}, True) as the last pair of a truncated payload; "
                "rename the key"
            )
    if max_items is not None and len(pairs) > max_items:
        del pairs[max_items - 1 :]
        pairs.append((TRUNCATED_KEY, True))
    return tuple(pairs)


def normalise_tags(tags: object) -> tuple[str, ...]:
    """Return ``tags`` as a tuple of plain ``str`` (sets are refused: no stable order)."""
    if type(tags) is tuple and all(type(tag) is str for tag in tags):
        return tags
    if isinstance(tags, (str, bytes, bytearray)):
        raise TypeError("tags must be an iterable of str, not a single string")
    _refuse_unordered("tags", tags)
    try:
        items: tuple[object, ...] = tuple(tags)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"tags must be an iterable of str, got {type(tags).__name__}") from None
    for tag in items:
        if not isinstance(tag, str):
            raise TypeError(
                f"tag {_describe(tag)} is not a str (got {type(tag).__name__}): tags must be str"
            )
    return tuple([_as_str(tag) for tag in items])


def jsonify(value: object) -> object:
    """Return a payload value in JSON shape (tuples become lists)."""
    if type(value) is tuple:
        return [jsonify(item) for item in value]
    return value


#: JSON Schema (draft 2020-12) of :meth:`WorldEvent.to_dict` output. It states
#: the shape; :func:`event_dict_problems` also applies what JSON Schema cannot
#: say (nesting depth, the reserved key).
EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ringbus WorldEvent",
    "type": "object",
    "required": list(FIELDS),
    "additionalProperties": False,
    "properties": {
        "seq": {"type": "integer", "minimum": 0, "maximum": MAX_CLOCK},
        "tick": {"type": "integer", "minimum": 0, "maximum": MAX_CLOCK},
        "day": {"type": "integer", "minimum": 0, "maximum": MAX_CLOCK},
        "kind": {"type": "string", "minLength": 1},
        "polity_id": {"type": ["string", "null"]},
        "ward_id": {"type": ["string", "null"]},
        "actor_id": {"type": ["string", "null"]},
        "subject_id": {"type": ["string", "null"]},
        "payload": {"type": "object", "additionalProperties": {"$ref": "#/$defs/value"}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "$defs": {
        "value": {
            "anyOf": [
                {"type": ["null", "boolean", "string", "number"]},
                {"type": "integer", "minimum": MIN_PAYLOAD_INT, "maximum": MAX_PAYLOAD_INT},
                {"type": "array", "items": {"$ref": "#/$defs/value"}},
                {"type": "object", "additionalProperties": {"$ref": "#/$defs/value"}},
            ]
        }
    },
}

_ID_FIELDS = ("polity_id", "ward_id", "actor_id", "subject_id")


def event_dict_problems(data: object) -> list[str]:
    """Check ``to_dict()``-shaped data by the rules of :data:`EVENT_SCHEMA`.

    The same rules as an event built by either core: counts are signed
    64-bit and not negative, payload values are what :func:`freeze_value`
    accepts (64-bit ints, finite floats, objects with str keys, nesting up to
    :data:`MAX_NESTING`, at most :data:`MAX_PAYLOAD_TREE_ITEMS` values in all),
    the marker key only as the last pair.

    Parameters
    ----------
    data
        What :meth:`WorldEvent.to_dict` returns, or a decoded JSON object.

    Returns
    -------
    list of str
        The problems, each naming its field; empty when ``data`` is valid.
    """
    if not isinstance(data, dict):
        return [f"event must be a JSON object, got {type(data).__name__}"]
    problems: list[str] = []
    fields = FIELDS
    missing = [name for name in fields if name not in data]
    if missing:
        problems.append(f"missing fields: {', '.join(missing)}")
    extra = sorted(str(key) for key in data if key not in fields)
    if extra:
        problems.append(f"unknown fields: {', '.join(extra)}")
    for name in ("seq", "tick", "day"):
        if name in data:
            value = data[name]
            if isinstance(value, bool) or type(value) is not int or not 0 <= value <= MAX_CLOCK:
                problems.append(f"{name} must be an int >= 0 (below 2**63), got {_describe(value)}")
    if "kind" in data and (not isinstance(data["kind"], str) or not data["kind"]):
        problems.append(f"kind must be a non-empty str, got {_describe(data['kind'])}")
    for name in _ID_FIELDS:
        if name in data and data[name] is not None and not isinstance(data[name], str):
            problems.append(f"{name} must be a str or null, got {type(data[name]).__name__}")
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        problems.append(f"payload must be an object, got {type(payload).__name__}")
    else:
        budget = [MAX_PAYLOAD_TREE_ITEMS]
        for key, value in payload.items():
            if not isinstance(key, str):
                problems.append(f"payload key {_describe(key)} is not a str")
                continue
            try:
                freeze_value(key, value, 0, budget)
            except (TypeError, ValueError) as error:
                problems.append(f"payload value of {key!r} is not valid: {error}")
        if TRUNCATED_KEY in payload:
            keys = list(payload)
            if keys[-1] != TRUNCATED_KEY or payload[TRUNCATED_KEY] is not True:
                problems.append(
                    f"payload key {TRUNCATED_KEY!r} is reserved for the truncation marker "
                    "(the last pair, with the value true)"
                )
    tags = data.get("tags", [])
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        problems.append("tags must be a list of str")
    return problems
