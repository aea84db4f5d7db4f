"""The shape every part of a bus's snapshot shares."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

__all__ = ["SnapshotPart"]


class SnapshotPart(abc.ABC):
    """One part of a bus's state that travels in its snapshot.

    :meth:`to_state` gives the part's state as JSON-ready data;
    :meth:`prepare_load` checks such data and returns the step that loads
    it, which cannot fail, so a restore can check every part before it
    changes any.
    """

    @abc.abstractmethod
    def to_state(self) -> Any:
        """The part's state, JSON-ready."""

    @abc.abstractmethod
    def prepare_load(self, state: Any) -> Callable[[], None]:
        """Check what :meth:`to_state` returned and return what loads it.

        Nothing changes until the returned function is called, and that
        function cannot fail.

        Raises
        ------
        ValueError
            The state is malformed.
        """

    def load_state(self, state: Any) -> None:
        """Replace the part's state with ``state``: all of it, or nothing on error."""
        self.prepare_load(state)()
