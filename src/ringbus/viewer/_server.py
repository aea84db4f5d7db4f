"""The viewer's HTTP server: static page, JSON API and a server-sent event stream.

A stdlib :class:`~http.server.ThreadingHTTPServer` runs in a daemon thread
beside the sim loop. It only reads the bus (``get_since``, ``latest_seq``,
``oldest_seq``), each read a short copy of the ring, and never locks it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._query import (
    BusReader,
    EventQuery,
    QueryError,
    Selection,
    call_kpis,
    gap_json,
    kind_counts,
    newest_events,
    parse_flag,
    parse_query,
    parse_since,
    select_events,
)

__all__ = ["CONTENT_SECURITY_POLICY", "ViewerServer", "serve"]

logger = logging.getLogger("ringbus.viewer")

#: Sent with every response: scripts and styles from this server only, no inline code.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/static/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
}

_STREAM_BATCH = 500


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("ringbus.viewer").joinpath("static")
    return {
        path: (folder.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in _STATIC.items()
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    viewer: ViewerServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # a client closed its connection: nothing to report
        logger.error("viewer: error serving %s", client_address, exc_info=error)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops reading is dropped, not waited on forever
    _streaming = False
    server_version = "ringbus-viewer"

    def version_string(self) -> str:
        return self.server_version

    # -- plumbing --------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _headers(self, status: int, ctype: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self._headers(status, ctype, len(body))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def _host_allowed(self) -> bool:
        """Refuse foreign Host headers on a loopback bind (DNS rebinding)."""
        viewer = self.server.viewer
        if not viewer.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.endswith("]") or ":" not in host:
            name, port = host, ""
        else:
            name, _, port = host.rpartition(":")
        if port and port != str(viewer.port):
            return False
        name = name.strip("[]")
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    # -- methods ---------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header; use the viewer's own URL")
            return
        parts = urlsplit(self.path)
        path = parts.path
        try:
            params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
        except ValueError as error:
            self._error(HTTPStatus.BAD_REQUEST, f"malformed query string: {error}")
            return
        try:
            if path in _STATIC:
                if params:
                    raise QueryError("the page takes no query parameters")
                body, ctype = self.server.viewer.static[path]
                self._send(HTTPStatus.OK, body, ctype)
            elif path == "/favicon.ico":
                self._headers(HTTPStatus.NO_CONTENT, "image/x-icon", None)
                self.end_headers()
            elif path == "/api/events":
                self._events(params)
            elif path == "/api/stream":
                self._stream(params)
            elif path == "/api/kpis":
                self._no_params(params)
                self._json(HTTPStatus.OK, {"kpis": call_kpis(self.server.viewer.kpis)})
            elif path == "/api/counts":
                self._no_params(params)
                self._json(HTTPStatus.OK, self.server.viewer.counts())
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page {path!r}")
        except QueryError as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error))
        except (ConnectionError, TimeoutError):  # the client went away
            self.close_connection = True
        except Exception as error:  # report, keep serving
            logger.exception("viewer request %s failed", self.path)
            self.close_connection = True
            if not self._streaming:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _read_only(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        body = json.dumps({"error": "the viewer is read-only; use GET", "status": 405}).encode()
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only

    # -- endpoints -------------------------------------------------------
    @staticmethod
    def _no_params(params: dict[str, list[str]]) -> None:
        if params:
            raise QueryError(f"unknown parameter {sorted(params)[0]!r}; this takes none")

    def _events(self, params: dict[str, list[str]]) -> None:
        query = parse_query(params)
        selection = select_events(self.server.viewer.bus, query)
        self._json(HTTPStatus.OK, selection.to_json())

    def _stream(self, params: dict[str, list[str]]) -> None:
        query = parse_query(params, extra=("tail",), default_limit=_STREAM_BATCH)
        tail = parse_flag(params, "tail")
        resume = self.headers.get("Last-Event-ID")
        since = query.since
        if resume:
            since = parse_since(resume, "Last-Event-ID")
        viewer = self.server.viewer
        bus = viewer.bus
        if since is None:
            since = bus.latest_seq()
        query = replace(query, since=since)
        self._headers(HTTPStatus.OK, "text/event-stream; charset=utf-8", None)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        self._streaming = True
        with viewer.track_stream():
            self._write(f"retry: {viewer.retry_ms}\nid: {since}\nevent: hello\n")
            self._write(f"data: {json.dumps({'since': since})}\n\n")
            idle = 0.0
            while not viewer.closing.is_set():
                selection = select_events(bus, query)
                if selection.gap is not None:
                    data = json.dumps(gap_json(selection.gap))
                    self._write(f"event: gap\ndata: {data}\n\n")
                if tail and selection.more:
                    selection = self._skip_ahead(query, selection)
                if selection.events:
                    data = json.dumps(selection.to_json(), separators=(",", ":"))
                    self._write(f"id: {selection.cursor}\nevent: events\ndata: {data}\n\n")
                    idle = 0.0
                elif selection.cursor != query.since:
                    self._write(f"id: {selection.cursor}\n\n")  # advance Last-Event-ID only
                if selection.cursor != query.since:
                    query = replace(query, since=selection.cursor)
                if selection.more:
                    # catching up: pace full batches so a reader never takes
                    # more than a small share of the interpreter from the sim
                    viewer.closing.wait(viewer.batch_pause)
                    idle += viewer.batch_pause
                    continue
                if idle >= viewer.heartbeat:
                    self._write(": keep-alive\n\n")
                    idle = 0.0
                viewer.closing.wait(viewer.poll_interval)
                idle += viewer.poll_interval

    def _skip_ahead(self, query: EventQuery, selection: Selection) -> Selection:
        """Tail mode: keep the newest ``limit`` matching events, report the rest as skipped."""
        since = query.since or 0
        newest = newest_events(self.server.viewer.bus, query, floor=since)
        keep = newest.events
        if not keep or keep[0].seq <= selection.events[0].seq:
            return selection
        skipped = {"first": selection.events[0].seq, "last": keep[0].seq - 1}
        self._write(f"event: skipped\ndata: {json.dumps(skipped)}\n\n")
        return Selection(keep, newest.cursor, newest.latest_seq, newest.oldest_seq, None, False)

    def _write(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()


class ViewerServer:
    """A running viewer: a read-only web panel over one bus.

    Made by :func:`serve`; use as a context manager or call :meth:`close`.

    Attributes
    ----------
    url
        The panel's address, e.g. ``http://127.0.0.1:8765/``.
    host, port
        Where the server listens (``port`` is the real one when 0 was asked).
    """

    def __init__(
        self,
        bus: BusReader,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kpis: Callable[[], Any] | None = None,
        poll_interval: float = 0.15,
        heartbeat: float = 10.0,
    ) -> None:
        for name in ("get_since", "latest_seq", "oldest_seq"):
            if not callable(getattr(bus, name, None)):
                raise TypeError(f"serve() needs an event bus (with {name}()), got {bus!r}")
        if kpis is not None and not callable(kpis):
            raise TypeError(f"kpis must be a callable returning a dict, got {kpis!r}")
        if not isinstance(host, str) or not host:
            raise TypeError(f"host must be a non-empty str, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
        if not 0 < poll_interval <= 5:
            raise ValueError(f"poll_interval must be in (0, 5] seconds, got {poll_interval!r}")
        self.bus = bus
        self.kpis = kpis
        self.poll_interval = float(poll_interval)
        self.heartbeat = float(heartbeat)
        self.retry_ms = 1000
        self.batch_pause = min(0.02, self.poll_interval)
        self.static = _load_static()
        self.closing = threading.Event()
        self._streams = 0
        self._streams_done = threading.Condition()
        self._counts_key: tuple[int, int] = (-1, -1)
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, port), _Handler)
        self._httpd.viewer = self
        self.host = host
        self.port: int = self._httpd.server_address[1]
        try:
            self.loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            self.loopback = False
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"ringbus-viewer:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def counts(self) -> dict[str, Any]:
        """Events per kind over the retained ring (cached until the bus moves)."""
        with self._counts_lock:
            key = (self.bus.latest_seq(), self.bus.oldest_seq())
            if key != self._counts_key:
                self._counts = kind_counts(self.bus)
                self._counts_key = key
            return {
                "counts": self._counts,
                "retained": sum(self._counts.values()),
                "latest_seq": key[0],
                "oldest_seq": key[1],
                "basis": "retained",
            }

    def track_stream(self) -> _StreamTracker:
        """Count an open stream so :meth:`close` can wait for it to end."""
        return _StreamTracker(self)

    def close(self, timeout: float = 5.0) -> None:
        """End open streams, stop serving and free the port (idempotent)."""
        if self.closing.is_set():
            return
        self.closing.set()
        with self._streams_done:
            self._streams_done.wait_for(lambda: self._streams == 0, timeout)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self.closing.is_set()

    def __enter__(self) -> ViewerServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "serving"
        return f"<ViewerServer {self.url} {state}>"


class _StreamTracker:
    def __init__(self, viewer: ViewerServer) -> None:
        self._viewer = viewer

    def __enter__(self) -> None:
        with self._viewer._streams_done:
            self._viewer._streams += 1

    def __exit__(self, *exc: object) -> None:
        with self._viewer._streams_done:
            self._viewer._streams -= 1
            self._viewer._streams_done.notify_all()


def serve(
    bus: BusReader,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    kpis: Callable[[], Any] | None = None,
) -> ViewerServer:
    """Serve the event viewer for ``bus`` in a background thread.

    Parameters
    ----------
    bus
        The :class:`~ringbus.EventBus` to show. The viewer only reads it.
    host
        Interface to bind: loopback by default. Bind another only on a
        trusted network — the panel has no authentication.
    port
        TCP port; ``0`` picks a free one (read it from ``.port`` or ``.url``).
    kpis
        Optional callable returning a JSON-ready dict shown beside the table,
        e.g. a KPI subscriber's ``summary``. Called from the server thread.

    Returns
    -------
    ViewerServer
        Running already; ``.url`` to open, ``.close()`` (or ``with``) to stop.

    Examples
    --------
    >>> from ringbus import EventBus
    >>> from ringbus.viewer import serve
    >>> bus = EventBus()
    >>> with serve(bus) as viewer:
    ...     viewer.url.startswith("http://127.0.0.1:")
    True
    """
    return ViewerServer(bus, host=host, port=port, kpis=kpis)
