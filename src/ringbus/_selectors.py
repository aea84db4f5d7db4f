"""The kind selector engine: exact kinds, globs, prefixes and segment globs.

One selector is a set of patterns; a kind matches the selector when it
matches any of them. Each pattern takes one form, decided by its text:

``"DEPOT_BUILT"``
    An exact kind: no glob character (``*``, ``?``, ``[``) and no trailing
    ``/``.
``"cognition/"``
    A prefix on slash-separated keys: it ends with ``/`` and matches every
    kind that starts with it (``cognition/audit.refusal``), not the bare
    ``cognition``. A prefix may not contain glob characters.
``"data:*:created"``, ``"agent:**"``
    A segment glob: it contains ``:`` and a glob character. The pattern and
    the kind are split on ``:``; ``*`` is exactly one segment, ``**`` any
    number of segments (zero included, so ``agent:**`` matches ``agent``,
    ``agent:7`` and ``agent:7:moved``), and any other segment is matched by
    fnmatch rules within that one segment (``data:user*:created``).
``"DELIVERY_*"``
    An fnmatch glob on the whole kind (every other pattern with a glob
    character).

Matching is done when a kind is first routed, never per event: the bus
keeps per-kind dispatch tables. ``kind in selector`` caches its answers
(bounded) for callers such as ``get_since(kinds=...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

__all__ = ["KindSelector"]

_GLOB_CHARS = frozenset("*?[")
_CACHE_LIMIT = 4096


def _has_glob(text: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(text)


def _segments_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether ``parts`` (a kind split on ``:``) matches the segment ``pattern``."""
    # Dynamic programming over (pattern index, part index): linear in both.
    width = len(parts) + 1
    reach = [False] * width
    reach[0] = True
    for segment in pattern:
        nxt = [False] * width
        if segment == "**":
            seen = False
            for j in range(width):
                seen = seen or reach[j]
                nxt[j] = seen
        else:
            for j in range(1, width):
                if reach[j - 1] and (segment == "*" or fnmatchcase(parts[j - 1], segment)):
                    nxt[j] = True
        reach = nxt
        if not any(reach):
            return False
    return reach[-1]


class KindSelector:
    """A set of kind patterns; ``kind in selector`` tests a kind.

    Parameters
    ----------
    kinds
        An iterable of patterns, or a single string: exact kinds, fnmatch
        globs (``"DELIVERY_*"``), prefixes ending in ``/`` (``"cognition/"``)
        and colon segment globs (``"data:*:created"``, ``"agent:**"``); see
        :mod:`ringbus._selectors` for the rules.

    Raises
    ------
    TypeError
        A pattern is not a non-empty str.
    ValueError
        A prefix pattern contains glob characters, or a segment glob has an
        empty segment.
    """

    __slots__ = ("_cache", "exact", "globs", "prefixes", "segment_globs", "selectors")

    def __init__(self, kinds: Iterable[str] | str) -> None:
        items = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        for item in items:
            if not isinstance(item, str) or not item:
                raise TypeError(f"kind selectors must be non-empty str, got {item!r}")
        self.selectors: tuple[str, ...] = tuple(dict.fromkeys(items))
        exact: list[str] = []
        globs: list[str] = []
        prefixes: list[str] = []
        segment_globs: list[tuple[str, ...]] = []
        for item in self.selectors:
            if item.endswith("/"):
                if _has_glob(item):
                    raise ValueError(
                        f"prefix selector {item!r} contains a glob character; a prefix ends "
                        "with '/' and matches literally (use a glob without the trailing '/')"
                    )
                prefixes.append(item)
            elif not _has_glob(item):
                exact.append(item)
            elif ":" in item:
                parts = tuple(item.split(":"))
                if "" in parts:
                    raise ValueError(
                        f"segment selector {item!r} has an empty segment; write segments "
                        "between single ':' (e.g. 'data:*:created')"
                    )
                segment_globs.append(parts)
            else:
                globs.append(item)
        self.exact = frozenset(exact)
        self.globs = tuple(globs)
        self.prefixes = tuple(prefixes)
        self.segment_globs = tuple(segment_globs)
        self._cache: dict[str, bool] = {}

    def matches(self, kind: str) -> bool:
        """Whether ``kind`` matches any pattern (uncached)."""
        if kind in self.exact:
            return True
        if any(kind.startswith(prefix) for prefix in self.prefixes):
            return True
        if any(fnmatchcase(kind, glob) for glob in self.globs):
            return True
        if self.segment_globs:
            parts = tuple(kind.split(":"))
            return any(_segments_match(pattern, parts) for pattern in self.segment_globs)
        return False

    def __contains__(self, kind: object) -> bool:
        if kind in self.exact:
            return True
        if not isinstance(kind, str) or len(self.exact) == len(self.selectors):
            return False
        hit = self._cache.get(kind)
        if hit is None:
            if len(self._cache) > _CACHE_LIMIT:  # many distinct kinds: keep memory bounded
                self._cache.clear()
            hit = self.matches(kind)
            self._cache[kind] = hit
        return hit

    def __repr__(self) -> str:
        return f"KindSelector({list(self.selectors)!r})"
