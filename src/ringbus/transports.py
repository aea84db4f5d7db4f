"""Telemetry transports: subscribers that send events out of the process.

A transport is a subscriber with a transform step (validate against the
event schema, reshape, select kinds) and a bounded buffer. Its handler only
buffers; the buffer is sent as one batch when the bus's ``drain()`` ends, so
one drain costs one write, one POST or one pipeline round trip.

- :class:`StdoutTransport` writes JSON lines to a text stream.
- :class:`HttpTransport` POSTs batches with retry and backoff counted in
  ticks.
- :class:`SocketFeed` serves JSON lines on a TCP port that other processes
  read (:func:`read_feed`).

Nothing is lost silently: events past a buffer's bound are dropped oldest
first and counted in ``dropped``; every transport reports its counters with
:meth:`Transport.status`.
"""

from __future__ import annotations

import abc
import argparse
import fnmatch
import json
import logging
import select
import socket
import sys
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, Self

from ._normalise import EVENT_SCHEMA, event_dict_problems

__all__ = [
    "EVENT_SCHEMA",
    "HttpTransport",
    "SocketFeed",
    "StdoutTransport",
    "Transform",
    "Transport",
    "feed_main",
    "read_feed",
    "validate_event_dict",
]

logger = logging.getLogger("ringbus.transports")

#: The event schema (see :mod:`ringbus._normalise`): what every transport checks.
validate_event_dict = event_dict_problems


Record = dict[str, Any]
Reshape = Callable[[Record], Record | None]


class Transform:
    """What a transport does to each event before it is buffered.

    Parameters
    ----------
    validate
        Check the event's dict against :data:`EVENT_SCHEMA`; an invalid one is
        not sent and is counted in ``invalid`` (the last problems are kept).
    reshape
        ``reshape(record) -> record | None`` on the event's ``to_dict()``
        (a fresh dict it may change); ``None`` leaves the event out (counted
        in ``filtered``).
    kinds
        Kinds and fnmatch globs to send; ``None`` sends every kind. The
        transport subscribes with them, so the cost is paid at subscribe time.
    """

    __slots__ = ("kinds", "reshape", "validate")

    def __init__(
        self,
        *,
        validate: bool = True,
        reshape: Reshape | None = None,
        kinds: Iterable[str] | str | None = None,
    ) -> None:
        if reshape is not None and not callable(reshape):
            raise TypeError(f"reshape must be callable or None, got {type(reshape).__name__}")
        self.validate = bool(validate)
        self.reshape = reshape
        self.kinds: tuple[str, ...] | None
        if kinds is None:
            self.kinds = None
        elif isinstance(kinds, str):
            self.kinds = (kinds,)
        else:
            self.kinds = tuple(kinds)


class Transport(abc.ABC):
    """Base of the transports: buffer on delivery, send a batch per drain.

    Each record is serialised to compact JSON when it is buffered, so a
    record that cannot be (e.g. a reshape put a set in it) is counted in
    ``invalid`` right away instead of failing a whole batch later.
    Subclasses implement :meth:`_send`, which gets the batch (a list of
    ``(seq, json_text)`` pairs, oldest first), counts what it delivered in
    ``sent`` and returns how many records, from the front, are done with
    (delivered, or refused for good and counted); the rest stay buffered for
    the next drain.

    Parameters
    ----------
    transform
        The validate/reshape/select step; ``None`` validates only.
    max_buffer
        Largest number of records waiting to be sent; past it the oldest are
        dropped and counted in ``dropped``.
    name
        Label in :meth:`status` and health events (default: the class's).

    Attributes
    ----------
    received, sent
        Events delivered to the transport; records sent out.
    failed
        Failed send attempts (each one leaves its records buffered).
    dropped
        Records lost on purpose and counted: the buffer's bound was passed,
        or the receiver refused them for good.
    filtered, invalid
        Records the transform left out; events or records that failed
        validation or serialisation (``last_invalid`` says why).
    """

    def __init__(
        self,
        *,
        transform: Transform | None = None,
        max_buffer: int = 10_000,
        name: str | None = None,
    ) -> None:
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be an int >= 1, got {max_buffer!r}")
        self.transform = transform if transform is not None else Transform()
        self.max_buffer = max_buffer
        self.name = name or type(self).__name__
        self._buffer: deque[tuple[int, str]] = deque()
        self._bus: Any = None
        self._sub_id: int | None = None
        self.received = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.filtered = 0
        self.invalid = 0
        self.last_error: str | None = None
        self.last_invalid: list[str] = []

    # -- wiring --------------------------------------------------------
    def attach(self, bus: Any) -> Self:
        """Subscribe to ``bus`` and send at the end of each of its drains; return self."""
        if self._bus is not None:
            raise RuntimeError(f"{self.name} is already attached to a bus; detach() it first")
        self._bus = bus
        self._sub_id = bus.subscribe(self, kinds=self.transform.kinds, name=self.name)
        bus.add_drain_listener(self.flush)
        return self

    def detach(self) -> None:
        """Send what is buffered (one attempt), then stop receiving events."""
        if self._bus is None:
            return
        try:
            self.flush()
        finally:
            self._bus.unsubscribe(self._sub_id)
            self._bus.remove_drain_listener(self.flush)
            self._bus = None
            self._sub_id = None

    @property
    def producer(self) -> str:
        """The identity of the bus this transport is attached to (its config name)."""
        if self._bus is None:
            return "unattached"
        return str(self._bus.config.name)

    # -- delivery ------------------------------------------------------
    def __call__(self, event: Any) -> None:
        self.received += 1
        record: Record | None = event.to_dict()
        transform = self.transform
        if transform.validate:
            problems = validate_event_dict(record)
            if problems:
                self.invalid += 1
                self.last_invalid = problems
                return
        if transform.reshape is not None:
            record = transform.reshape(record)  # type: ignore[arg-type]
            if record is None:
                self.filtered += 1
                return
        try:
            if not isinstance(record, dict):
                raise TypeError(f"reshape must return a dict or None, got {type(record).__name__}")
            text = _dumps(record)
        except (TypeError, ValueError) as error:
            self.invalid += 1
            self.last_invalid = [f"seq {event.seq}: {error}"]
            return
        self._buffer.append((event.seq, text))
        if len(self._buffer) > self.max_buffer:
            self._buffer.popleft()
            self.dropped += 1

    def flush(self, *, force: bool = False) -> int:
        """Send what is buffered now; return how many records left the buffer.

        Runs at the end of each drain. While backing off after a failure it
        sends nothing, unless ``force`` (e.g. a final flush before exit).
        """
        if not self._buffer or not (force or self._ready()):
            return 0
        batch = list(self._buffer)
        done = self._send(batch)
        for _ in range(done):
            self._buffer.popleft()
        return done

    def _ready(self) -> bool:
        """Whether a send may be attempted now (backoff says no)."""
        return True

    @abc.abstractmethod
    def _send(self, batch: list[tuple[int, str]]) -> int:
        """Send ``batch``; return how many records, from the front, are done with."""

    @property
    def buffered(self) -> int:
        """Records waiting to be sent."""
        return len(self._buffer)

    def state(self) -> str:
        """``"ok"``, or why the transport is not sending (e.g. ``"backoff"``)."""
        return "ok"

    def status(self) -> dict[str, Any]:
        """The transport's counters and state, JSON-ready."""
        return {
            "name": self.name,
            "state": self.state(),
            "received": self.received,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "filtered": self.filtered,
            "invalid": self.invalid,
            "buffered": len(self._buffer),
            "last_error": self.last_error,
        }


def _dumps(record: Record) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


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


class _Backoff:
    """Exponential backoff counted in ticks of an injectable clock."""

    def __init__(self, clock: Callable[[], int], base_ticks: int, max_ticks: int) -> None:
        if base_ticks < 0 or max_ticks < base_ticks:
            raise ValueError(
                f"backoff needs 0 <= base_ticks <= max_ticks, got {base_ticks}, {max_ticks}"
            )
        self.clock = clock
        self.base_ticks = base_ticks
        self.max_ticks = max_ticks
        self.failures = 0
        self.retry_at = 0

    def ready(self) -> bool:
        return self.failures == 0 or self.clock() >= self.retry_at

    def failed(self) -> None:
        self.failures += 1
        delay = min(self.max_ticks, self.base_ticks * 2 ** min(self.failures - 1, 30))
        self.retry_at = self.clock() + delay

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0


class _RetryingTransport(Transport):
    """A transport whose sends can fail and are retried with a backoff in ticks.

    Ticks come from ``clock()`` when given, else from the attached bus's clock.
    """

    _clock: Callable[[], int] | None
    _backoff: _Backoff

    def _start_backoff(
        self, clock: Callable[[], int] | None, base_ticks: int, max_ticks: int
    ) -> None:
        self._clock = clock
        self._backoff = _Backoff(self._now, base_ticks, max_ticks)

    def _now(self) -> int:
        if self._clock is not None:
            return int(self._clock())
        return int(self._bus.tick) if self._bus is not None else 0

    def _ready(self) -> bool:
        return self._backoff.ready()


class HttpTransport(_RetryingTransport):
    """POST each drain's events as JSON batches, retrying with backoff.

    The body is ``{"producer": <bus name>, "events": [record, ...]}``. A
    batch that fails (connection error, timeout, a 5xx, 408 or 429) stays
    buffered; the next attempt waits ``retry_base_ticks * 2**(failures-1)``
    ticks (at most ``retry_max_ticks``) of ``clock`` — the bus clock unless
    given. Other 4xx answers mean the server will never take the batch: it is
    dropped and counted in ``dropped`` and ``rejected``.

    Parameters
    ----------
    url
        Where to POST (``http://`` or ``https://``).
    timeout
        Seconds one request may take, so a dead server cannot stall the loop.
    batch_size
        Largest number of records in one POST.
    max_requests
        Largest number of POSTs per drain (the rest waits for the next one).
    retry_base_ticks, retry_max_ticks
        The backoff, in ticks.
    clock
        ``clock() -> int`` giving the current tick; default: the bus's tick.
    headers
        Extra request headers.
    transform, max_buffer, name
        See :class:`Transport`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        batch_size: int = 500,
        max_requests: int = 8,
        retry_base_ticks: int = 1,
        retry_max_ticks: int = 64,
        clock: Callable[[], int] | None = None,
        headers: Mapping[str, str] | None = None,
        transform: Transform | None = None,
        max_buffer: int = 10_000,
        name: str | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if batch_size < 1 or max_requests < 1:
            raise ValueError("batch_size and max_requests must be >= 1")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        super().__init__(transform=transform, max_buffer=max_buffer, name=name or "http")
        self.url = url
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self.max_requests = max_requests
        self.headers = dict(headers or {})
        self._start_backoff(clock, retry_base_ticks, retry_max_ticks)
        self.requests = 0
        self.retries = 0
        self.rejected = 0

    def state(self) -> str:
        return "backoff" if self._backoff.failures else "ok"

    def _post(self, records: list[str]) -> int:
        producer = json.dumps(self.producer)
        body = f'{{"producer":{producer},"events":[{",".join(records)}]}}'.encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **self.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)

    def _send(self, batch: list[tuple[int, str]]) -> int:
        done = 0
        for start in range(
            0, min(len(batch), self.batch_size * self.max_requests), self.batch_size
        ):
            chunk = [text for _seq, text in batch[start : start + self.batch_size]]
            if self._backoff.failures:
                self.retries += 1
            self.requests += 1
            try:
                code = self._post(chunk)
            except (OSError, ValueError) as error:  # URLError, timeouts, refused
                code = 0
                self.last_error = f"{type(error).__name__}: {error}"
            if 200 <= code < 300:
                self._backoff.succeeded()
                self.sent += len(chunk)
                done += len(chunk)
                continue
            self.failed += 1
            if code:
                self.last_error = f"HTTP {code} from {self.url}"
            if 400 <= code < 500 and code not in (408, 429):
                # The server refuses this batch for good: count it, move on.
                self.rejected += len(chunk)
                self.dropped += len(chunk)
                logger.error("%s: %s rejected %d events", self.name, self.url, len(chunk))
                done += len(chunk)
                continue
            self._backoff.failed()
            break
        return done

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(requests=self.requests, retries=self.retries, rejected=self.rejected)
        status["retry_at"] = self._backoff.retry_at if self._backoff.failures else None
        return status


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


def feed_main(argv: Sequence[str] | None = None) -> int:
    """``ringbus feed HOST:PORT``: print a :class:`SocketFeed`'s records as JSON lines."""
    parser = argparse.ArgumentParser(
        prog="ringbus feed", description="Read a ringbus SocketFeed and print its JSON lines."
    )
    parser.add_argument("address", help="HOST:PORT the feed listens on")
    parser.add_argument("--kinds", nargs="+", help="only these kinds (fnmatch globs allowed)")
    parser.add_argument("--limit", type=int, help="stop after this many records")
    parser.add_argument("--timeout", type=float, help="seconds to wait for a line (default: ever)")
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"address must be HOST:PORT, got {args.address!r}")
    printed = 0
    try:
        for record in read_feed(host, int(port), timeout=args.timeout):
            kind = str(record.get("kind", ""))
            if args.kinds and not any(
                fnmatch.fnmatchcase(kind, kind_glob) for kind_glob in args.kinds
            ):
                continue
            print(_dumps(record), flush=True)
            printed += 1
            if args.limit is not None and printed >= args.limit:
                break
    except OSError as error:
        print(f"ringbus feed: {args.address}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
