"""A transport that writes JSON lines to a text stream."""

from __future__ import annotations

import sys
from typing import IO

from ._base import Transform, Transport

__all__ = ["StdoutTransport"]


class StdoutTransport(Transport):
    """Write each drain's events as JSON lines to a text stream.

    Parameters
    ----------
    stream
        Where to write; ``None`` is ``sys.stdout`` at the time of writing.
    transform, max_buffer, name
        See :class:`Transport`.

    Examples
    --------
    >>> import io
    >>> from ringbus import EventBus
    >>> from ringbus.transports import StdoutTransport
    >>> bus = EventBus()
    >>> out = io.StringIO()
    >>> transport = StdoutTransport(out).attach(bus)
    >>> bus.publish("DEPOT_BUILT", subject_id="depot-1")
    1
    >>> bus.drain()
    1
    >>> out.getvalue().startswith('{"seq":1,')
    True
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        transform: Transform | None = None,
        max_buffer: int = 10_000,
        name: str | None = None,
    ) -> None:
        super().__init__(transform=transform, max_buffer=max_buffer, name=name or "stdout")
        self.stream = stream

    def _send(self, batch: list[tuple[int, str]]) -> int:
        stream = self.stream if self.stream is not None else sys.stdout
        try:
            stream.write("".join(text + "\n" for _seq, text in batch))
            stream.flush()
        except (OSError, ValueError) as error:
            self.failed += 1
            self.last_error = f"{type(error).__name__}: {error}"
            return 0
        self.sent += len(batch)
        return len(batch)
