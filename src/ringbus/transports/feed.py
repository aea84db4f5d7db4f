"""A transport that serves JSON lines on a TCP port, and its reader (``ringbus feed``)."""

from __future__ import annotations

import json
import select
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any

from ._base import Record, Transform, Transport

__all__ = ["SocketFeed", "read_feed"]


class SocketFeed(Transport):
    """Serve each drain's events as JSON lines on a TCP port.

    Any process can read the feed (:func:`read_feed`, ``nc HOST PORT``). A
    reader that connects gets the last ``backlog`` lines first, then every new
    line. Accepting and writing happen at drain ends, in the loop's thread;
    a reader that cannot take a batch within ``timeout`` seconds is
    disconnected and counted in ``disconnected``.

    Parameters
    ----------
    host, port
        Where to listen; port 0 picks a free one (see :attr:`address`).
    backlog
        Lines kept for readers that connect later.
    timeout
        Seconds a write to one reader may take.
    transform, max_buffer, name
        See :class:`Transport`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        backlog: int = 1_000,
        timeout: float = 1.0,
        transform: Transform | None = None,
        max_buffer: int = 10_000,
        name: str | None = None,
    ) -> None:
        super().__init__(transform=transform, max_buffer=max_buffer, name=name or "feed")
        self._server = socket.create_server((host, port))
        self._server.setblocking(False)
        self._readers: list[socket.socket] = []
        self._backlog: deque[bytes] = deque(maxlen=backlog)
        self.timeout = float(timeout)
        self.accepted = 0
        self.disconnected = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the feed listens on."""
        host, port = self._server.getsockname()[:2]
        return str(host), int(port)

    @property
    def readers(self) -> int:
        """Readers connected now."""
        return len(self._readers)

    def accept(self) -> int:
        """Take the readers waiting to connect (also done at each drain end)."""
        taken = 0
        while select.select([self._server], [], [], 0)[0]:
            try:
                reader, _address = self._server.accept()
            except BlockingIOError:
                break
            reader.settimeout(self.timeout)
            if self._backlog and not self._write(reader, b"".join(self._backlog)):
                continue
            self._readers.append(reader)
            self.accepted += 1
            taken += 1
        return taken

    def _write(self, reader: socket.socket, data: bytes) -> bool:
        try:
            reader.sendall(data)
        except OSError as error:
            self.disconnected += 1
            self.last_error = f"reader dropped: {type(error).__name__}: {error}"
            reader.close()
            return False
        return True

    def flush(self, *, force: bool = False) -> int:
        if self._server.fileno() >= 0:
            self.accept()
        return super().flush(force=force)

    def _send(self, batch: list[tuple[int, str]]) -> int:
        lines = [(text + "\n").encode() for _seq, text in batch]
        data = b"".join(lines)
        self._readers = [reader for reader in self._readers if self._write(reader, data)]
        self._backlog.extend(lines)
        self.sent += len(batch)
        return len(batch)

    def state(self) -> str:
        return "closed" if self._server.fileno() < 0 else "ok"

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(
            readers=len(self._readers), accepted=self.accepted, disconnected=self.disconnected
        )
        return status

    def close(self) -> None:
        """Send what is buffered, detach, and close the port and every reader."""
        self.detach()
        for reader in self._readers:
            reader.close()
        self._readers = []
        self._server.close()


def read_feed(
    host: str, port: int, *, timeout: float | None = None, limit: int | None = None
) -> Iterator[Record]:
    """Yield the records a :class:`SocketFeed` serves, as dicts.

    Parameters
    ----------
    host, port
        The feed's :attr:`SocketFeed.address`.
    timeout
        Seconds to wait for the next line; ``None`` waits for ever.
    limit
        Stop after this many records.
    """
    count = 0
    with socket.create_connection((host, port), timeout=timeout) as connection:
        stream = connection.makefile("rb")
        for line in stream:
            yield json.loads(line)
            count += 1
            if limit is not None and count >= limit:
                return
