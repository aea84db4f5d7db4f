"""Evidence: rolling windows that notice when trouble piles up.

:class:`EvidenceSubscriber` keeps, for each :class:`EvidenceRule`, a window
of the last ``window_days`` days of matching events per ward or per polity.
When a window's count reaches the rule's threshold it produces an evidence
item (what, where, window, count, first and last seq), keeps it, and
publishes it as an ``EVIDENCE_RAISED`` event so other subscribers can react;
the window then starts afresh. Memory stays bounded however long the run:
windows hold one bucket per day, empty windows are dropped, and the item list
is capped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import kinds as k
from .._normalise import check_option_count
from .._subscriber import SnapshotSubscriber

__all__ = ["DEFAULT_RULES", "EVIDENCE_RAISED", "SCOPES", "EvidenceRule", "EvidenceSubscriber"]

#: Kind of the event that announces an evidence item.
EVIDENCE_RAISED = "EVIDENCE_RAISED"
#: What a rule groups events by.
SCOPES = ("ward", "polity")


@dataclass(frozen=True, slots=True)
class EvidenceRule:
    """When to raise evidence.

    Parameters
    ----------
    what
        The rule's name, carried by its items (``"delivery_failures"``).
    kinds
        The event kinds it counts (exact kinds, no globs).
    scope
        ``"ward"`` (group by ``ward_id``) or ``"polity"`` (by ``polity_id``);
        events without that id are not counted by this rule.
    window_days
        Width of the rolling window: an event of day ``d`` counts with the
        events of days ``d - window_days + 1`` to ``d``.
    threshold
        Count at which an item is raised; the window then starts afresh.
    """

    what: str
    kinds: tuple[str, ...]
    scope: str = "ward"
    window_days: int = 7
    threshold: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.what, str) or not self.what:
            raise ValueError(f"EvidenceRule.what must be a non-empty str, got {self.what!r}")
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        if not kinds or not all(isinstance(kind, str) and kind for kind in kinds):
            raise ValueError(f"EvidenceRule.kinds must be non-empty strs, got {self.kinds!r}")
        object.__setattr__(self, "kinds", kinds)
        if self.scope not in SCOPES:
            raise ValueError(
                f"EvidenceRule.scope must be one of {', '.join(SCOPES)}, got {self.scope!r}"
            )
        for name in ("window_days", "threshold"):
            check_option_count(f"EvidenceRule.{name}", getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        """The rule as a JSON-ready dict."""
        return {
            "what": self.what,
            "kinds": list(self.kinds),
            "scope": self.scope,
            "window_days": self.window_days,
            "threshold": self.threshold,
        }


def _default_rules(window_days: int = 7) -> tuple[EvidenceRule, ...]:
    sources = (
        ("delivery_failures", (k.DELIVERY_FAILED,), 5, 12),
        ("incidents", (k.INCIDENT_RECORDED,), 4, 10),
        ("protocol_violations", (k.PROTOCOL_VIOLATION,), 3, 8),
    )
    rules = []
    for what, kinds, ward_threshold, polity_threshold in sources:
        rules.append(EvidenceRule(what, kinds, "ward", window_days, ward_threshold))
        rules.append(EvidenceRule(what, kinds, "polity", window_days, polity_threshold))
    return tuple(rules)


#: Delivery failures, incidents and protocol violations, per ward and per polity, over 7 days.
DEFAULT_RULES: tuple[EvidenceRule, ...] = _default_rules()


class _Window:
    """Per-day buckets ``[day, count, first_seq, last_seq]`` of one rule and key."""

    __slots__ = ("buckets", "count")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.count = 0

    def prune(self, oldest_day: int) -> None:
        buckets = self.buckets
        while buckets and buckets[0][0] < oldest_day:
            self.count -= buckets.popleft()[1]

    def add(self, day: int, seq: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] == day:
            bucket = buckets[-1]
            bucket[1] += 1
            bucket[3] = seq
        else:
            buckets.append([day, 1, seq, seq])
        self.count += 1


class EvidenceSubscriber(SnapshotSubscriber):
    """Raise evidence items when rolling windows cross their thresholds.

    Parameters
    ----------
    rules
        The :class:`EvidenceRule` objects to apply (default: :data:`DEFAULT_RULES`).
    window_days
        With the default rules, their window width in days.
    max_items
        How many items to keep (the oldest is dropped first; the count of
        everything raised stays in :attr:`raised`).
    publish
        Publish each item as an :data:`EVIDENCE_RAISED` event (default ``True``).

    Notes
    -----
    Items raised during a drain are published then, so they reach other
    subscribers in the next drain round or the next drain. Windows follow
    the event days; events arriving with an older day than already seen are
    counted in the current day's bucket.
    """

    snapshot_name = "evidence"

    def __init__(
        self,
        rules: Sequence[EvidenceRule] | None = None,
        *,
        window_days: int | None = None,
        max_items: int = 1000,
        publish: bool = True,
    ) -> None:
        if rules is None:
            rules = _default_rules(7 if window_days is None else window_days)
        elif window_days is not None:
            raise ValueError("pass either rules or window_days, not both")
        rules = tuple(rules)
        if not all(isinstance(rule, EvidenceRule) for rule in rules):
            raise TypeError("rules must be EvidenceRule objects")
        check_option_count("max_items", max_items)
        self.rules: tuple[EvidenceRule, ...] = rules
        self._publish = bool(publish)
        self._by_kind: dict[str, list[int]] = {}
        for index, rule in enumerate(rules):
            for kind in rule.kinds:
                self._by_kind.setdefault(kind, []).append(index)
        self._windows: list[dict[str, _Window]] = [{} for _ in rules]
        self._items: deque[dict[str, Any]] = deque(maxlen=max_items)
        self._max_items = max_items
        self._raised = 0
        self._raised_by: dict[str, int] = {}
        self._day = 0
        self._lock = threading.Lock()

    def subscribed_kinds(self) -> list[str]:
        """The kinds the rules count (evidence items are published on the same bus)."""
        return sorted(self._by_kind)

    @property
    def raised(self) -> int:
        """How many items were raised in total (also those no longer kept)."""
        return self._raised

    def raised_by_rule(self) -> dict[str, int]:
        """Items raised per rule, keyed ``"what/scope"``, in rule order."""
        with self._lock:
            counts = dict(self._raised_by)
        keys = dict.fromkeys(f"{rule.what}/{rule.scope}" for rule in self.rules)
        return {key: counts.get(key, 0) for key in keys}

    def items(self) -> list[dict[str, Any]]:
        """The kept evidence items, oldest first (JSON-ready copies)."""
        with self._lock:
            return [dict(item) for item in self._items]

    def window_count(self, what: str, scope: str, where: str) -> int:
        """Current count of the window of rule ``(what, scope)`` for ``where``."""
        for index, rule in enumerate(self.rules):
            if rule.what == what and rule.scope == scope:
                window = self._windows[index].get(where)
                if window is None:
                    return 0
                window.prune(self._day - rule.window_days + 1)
                return window.count
        raise KeyError(f"no rule with what={what!r} and scope={scope!r}")

    def open_windows(self) -> int:
        """How many windows hold events (bounded by rules x wards/polities active)."""
        return sum(len(windows) for windows in self._windows)

    # -- events --------------------------------------------------------
    def handle(self, event: Any) -> None:
        """Count one event; raise and publish items that reach a threshold."""
        day = event.day
        if day > self._day:
            self._day = day
            self._sweep()
        day = self._day
        for index in self._by_kind.get(event.kind, ()):
            rule = self.rules[index]
            where = event.ward_id if rule.scope == "ward" else event.polity_id
            if where is None:
                continue
            windows = self._windows[index]
            window = windows.get(where)
            if window is None:
                window = windows[where] = _Window()
            else:
                window.prune(day - rule.window_days + 1)
            window.add(day, event.seq)
            if window.count >= rule.threshold:
                self._raise(rule, where, window, event)
                del windows[where]

    def _sweep(self) -> None:
        for rule, windows in zip(self.rules, self._windows, strict=True):
            oldest = self._day - rule.window_days + 1
            for where in [w for w, window in windows.items() if window.buckets[-1][0] < oldest]:
                del windows[where]

    def _raise(self, rule: EvidenceRule, where: str, window: _Window, event: Any) -> None:
        buckets = window.buckets
        item: dict[str, Any] = {
            "id": self._raised + 1,
            "what": rule.what,
            "scope": rule.scope,
            "where": where,
            "polity_id": event.polity_id,
            "ward_id": event.ward_id if rule.scope == "ward" else None,
            "window_days": rule.window_days,
            "from_day": buckets[0][0],
            "to_day": buckets[-1][0],
            "count": window.count,
            "threshold": rule.threshold,
            "first_seq": buckets[0][2],
            "last_seq": buckets[-1][3],
            "tick": event.tick,
            "day": self._day,
            "event_seq": 0,
        }
        if self._publish and self.bus is not None:
            # At the triggering event's time, or the clock's once it has
            # moved past it (time on a bus never goes backwards).
            item["event_seq"] = self.bus.publish(
                EVIDENCE_RAISED,
                max(event.tick, self.bus.tick),
                max(self._day, self.bus.day),
                polity_id=item["polity_id"],
                ward_id=item["ward_id"],
                subject_id=f"evidence-{item['id']}",
                payload={
                    "evidence_id": item["id"],
                    "what": rule.what,
                    "scope": rule.scope,
                    "where": where,
                    "window_days": rule.window_days,
                    "from_day": item["from_day"],
                    "count": item["count"],
                    "threshold": rule.threshold,
                    "first_seq": item["first_seq"],
                    "last_seq": item["last_seq"],
                },
            )
        key = f"{rule.what}/{rule.scope}"
        self._raised += 1  # only once published: a refused publish leaves the window to retry
        with self._lock:
            self._items.append(item)
            self._raised_by[key] = self._raised_by.get(key, 0) + 1

    # -- snapshots -----------------------------------------------------
    def save_state(self) -> dict[str, Any]:
        """The subscriber's state as JSON-ready data (the snapshot hook's save)."""
        with self._lock:
            items = [dict(item) for item in self._items]
        return {
            "rules": [rule.to_dict() for rule in self.rules],
            "day": self._day,
            "raised": self._raised,
            "raised_by": dict(sorted(self._raised_by.items())),
            "items": items,
            "windows": [
                {where: [list(b) for b in window.buckets] for where, window in windows.items()}
                for windows in self._windows
            ],
        }

    def load_state(self, state: Any) -> None:
        """Replace the state with what :meth:`save_state` returned.

        Raises
        ------
        ValueError
            The state is malformed or was saved with different rules.
        """
        if not isinstance(state, dict):
            raise ValueError(f"evidence state must be a dict, got {type(state).__name__}")
        rules = [rule.to_dict() for rule in self.rules]
        if state.get("rules") != rules:
            raise ValueError(
                "evidence state was saved with different rules; "
                "make the EvidenceSubscriber with the same rules before restoring"
            )
        try:
            windows_state: Iterable[dict[str, Any]] = state["windows"]
            all_windows: list[dict[str, _Window]] = []
            for windows in windows_state:
                rebuilt: dict[str, _Window] = {}
                for where, buckets in windows.items():
                    window = _Window()
                    for day, count, first, last in buckets:
                        window.buckets.append([int(day), int(count), int(first), int(last)])
                        window.count += int(count)
                    rebuilt[str(where)] = window
                all_windows.append(rebuilt)
            items = [dict(item) for item in state["items"]]
            day = int(state["day"])
            raised = int(state["raised"])
            raised_by = {str(key): int(n) for key, n in state.get("raised_by", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"malformed evidence state: {error!r}") from error
        if len(all_windows) != len(self.rules):
            raise ValueError("malformed evidence state: one window map per rule expected")
        with self._lock:
            self._windows = all_windows
            self._items = deque(items, maxlen=self._max_items)
            self._day = day
            self._raised = raised
            self._raised_by = raised_by
