"""Load-balanced groups: each event goes to exactly one member.

Subscriptions made with ``subscribe(..., group="name")`` join the group.
For each kind the group is ONE entry of the route, placed where its first
member matching the kind subscribed (and, with priorities, at the highest
priority among those members). When an event reaches the entry, one of the
*candidates* — the live members whose selector matches the event's kind,
in subscription order — is chosen:

Round-robin (no ``group_key``)
    The group counts the events it has dispatched (its *turn*, across all
    kinds, in dispatch order, which is seq order). Event number ``turn``
    goes to ``candidates[turn % len(candidates)]``. The turn travels in
    snapshots.
By key (``group_key="subject_id"``, any event field name, or a callable)
    Rendezvous hashing: each candidate scores
    ``blake2b(member id + key)`` and the highest score wins, where the
    member id is its name (or ``#<sub_id>`` when it has none). The same key
    always lands on the same member while the candidates stay the same; a
    member leaving moves only its own keys, a member joining takes only the
    keys it now wins. Events whose key is ``None`` fall back to round-robin.
    Hashing is stable across processes (never Python's salted ``hash()``).

Candidates are taken when the route is built, and routes are rebuilt after
every subscribe/unsubscribe, so events still pending when a member leaves
go to the members live at drain time: none is lost while the group has a
member for the kind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

__all__ = ["GROUP_KEY_FIELDS", "Group", "GroupDispatch"]

GROUP_KEY_FIELDS = ("kind", "polity_id", "ward_id", "actor_id", "subject_id", "tick", "day")

GroupKey = str | Callable[[Any], object] | None


def check_group_key(group_key: object) -> GroupKey:
    """Validate a ``group_key`` argument and return it."""
    if group_key is None or callable(group_key):
        return group_key
    if isinstance(group_key, str) and group_key in GROUP_KEY_FIELDS:
        return group_key
    raise ValueError(
        f"group_key must be None, a callable taking the event, or one of "
        f"{', '.join(GROUP_KEY_FIELDS)}; got {group_key!r}"
    )


class Group:
    """A named load-balanced group: its key rule, size and rotation state.

    Attributes
    ----------
    name
        The group name.
    key
        ``None`` (round-robin), an event field name or a callable.
    size
        Live members.
    turn
        Events the group has dispatched (drives round-robin).
    current
        The member the group is delivering to right now (error reports).
    """

    __slots__ = ("current", "key", "name", "size", "turn")

    def __init__(self, name: str, key: GroupKey = None) -> None:
        self.name = name
        self.key = key
        self.size = 0
        self.turn = 0
        self.current: Any = None

    def key_of(self, event: Any) -> object:
        """The key of ``event`` under this group's rule (``None``: round-robin)."""
        key = self.key
        if key is None:
            return None
        if isinstance(key, str):
            return getattr(event, key)
        return key(event)

    def __repr__(self) -> str:
        return f"<Group {self.name!r} members={self.size} turn={self.turn}>"


def _score(token: bytes, key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(token + b"\x00" + key, digest_size=8).digest(), "big")


class GroupDispatch:
    """The route entry handler of one group for one kind."""

    __slots__ = ("group", "members", "tokens", "tracker")

    def __init__(self, group: Group, members: tuple[Any, ...], tracker: Any = None) -> None:
        self.group = group
        self.members = members
        self.tokens = tuple(
            (m.name if m.name is not None else f"#{m.sub_id}").encode() for m in members
        )
        self.tracker = tracker

    def choose(self, event: Any) -> Any:
        """The member that receives ``event`` (advances round-robin)."""
        group = self.group
        members = self.members
        key = group.key_of(event) if group.key is not None else None
        if key is None or len(members) == 1:
            member = members[group.turn % len(members)]
        else:
            data = str(key).encode()
            best = -1
            member = members[0]
            for candidate, token in zip(members, self.tokens, strict=True):
                score = _score(token, data)
                if score > best:
                    best, member = score, candidate
        group.turn += 1
        return member

    def __call__(self, event: Any) -> object:
        member = self.choose(event)
        self.group.current = member
        if self.tracker is None:
            return member.handler(event)
        return self.tracker.call(member, member.handler, event)

    def __repr__(self) -> str:
        return f"<dispatch to group {self.group.name!r}>"
