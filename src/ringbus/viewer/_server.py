"""The viewer's HTTP server: static page, JSON API and a server-sent event stream.

A stdlib :class:`~http.server.ThreadingHTTPServer` runs in a daemon thread
beside the sim loop. It only reads the bus (``get_since``, ``latest_seq``,
``oldest_seq``), each read a short copy of the ring, and never locks it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
import select
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ._query import (
    BusReader,
    EventQuery,
    QueryError,
    Selection,
    call_kpis,
    export_events,
    gap_json,
    journal_events,
    newest_events,
    parse_flag,
    parse_query,
    parse_since,
    select_events,
)

__all__ = ["CONTENT_SECURITY_POLICY", "DEFAULT_MAX_STREAMS", "ViewerServer", "serve"]

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

#: Sent with every response, the server's own error pages included.
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)

#: Live streams served at once when ``max_streams`` is left out.
DEFAULT_MAX_STREAMS = 16
#: Ticks the events-per-tick series covers at most (the newest ones).
RATE_TICKS = 240
#: Dead letters listed by ``/api/health`` (the newest ones).
DEAD_LETTERS_SHOWN = 20
_TOKEN_HEADER = "X-Ringbus-Token"
_NO_SEQ = 2**63
_STREAM_BATCH = 500
_ENCODED_KEPT = 20_000
# side panels over a moving bus are worked out again at most this often (seconds),
# however many pages ask: each pass reads the whole ring
_PANEL_AGE = 1.0


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


class _Busy(Exception):
    """Too many live streams are open (HTTP 503)."""


class _Unauthorised(Exception):
    """The request carries no valid access token (HTTP 401)."""


@dataclass(frozen=True)
class _Frame:
    """What one read of the bus sends down a stream: the bytes and where it got to."""

    data: bytes
    cursor: int
    more: bool
    sent_events: bool


def _host_port(header: str) -> tuple[str, str]:
    host = header.strip().lower()
    if host.endswith("]") or ":" not in host:
        return host.strip("[]"), ""
    name, _, port = host.rpartition(":")
    return name.strip("[]"), port


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _cookies(header: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name, value)
    return out


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

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        viewer = getattr(self.server, "viewer", None)
        if viewer is not None:
            self.send_header("X-Ringbus-Run", viewer.run_id)
        super().end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The server's own errors (bad request line, header too long...) as JSON."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # answer with a status line and headers
        text = message or self.responses.get(code, ("error", ""))[0]
        body = json.dumps({"error": text, "status": code}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(self, "command", None) != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def _headers(self, status: int, ctype: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self._headers(status, ctype, len(body))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        if isinstance(data, dict):
            viewer = self.server.viewer
            data = {**data, "run_id": viewer.run_id, "finished": viewer.finished}
        body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def _host_allowed(self) -> bool:
        """Refuse Host headers naming anything but this server (DNS rebinding)."""
        viewer = self.server.viewer
        name, port = _host_port(self.headers.get("Host") or "")
        if port and port != str(viewer.port):
            return False
        if name in viewer.allowed_hosts:
            return True
        return viewer.loopback and _is_loopback(name)

    def _check_token(self, path: str, params: dict[str, list[str]]) -> bool:
        """Whether the request may go on; ``False`` when a login redirect was sent.

        Raises
        ------
        _Unauthorised
            Off loopback, the request carries no valid token.
        """
        viewer = self.server.viewer
        if viewer.token is None:
            return True
        login = params.get("login")
        if login is not None and path in _STATIC:
            if len(login) != 1 or not viewer.redeem_login(login[0]):
                raise _Unauthorised(
                    "this one-time login link is not valid (or was used already); "
                    f"send the token in the {_TOKEN_HEADER} header, or restart for a new link"
                )
            rest = {name: values for name, values in params.items() if name != "login"}
            target = path + ("?" + urlencode(rest, doseq=True) if rest else "")
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", target)
            self.send_header(
                "Set-Cookie",
                f"{viewer.cookie_name}={viewer.token}; HttpOnly; SameSite=Strict; Path=/",
            )
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        given = self.headers.get(_TOKEN_HEADER)
        if given is None:
            auth = self.headers.get("Authorization") or ""
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
        if given is None:
            given = _cookies(self.headers.get("Cookie")).get(viewer.cookie_name)
        if given is None or not hmac.compare_digest(given.encode(), viewer.token.encode()):
            raise _Unauthorised(
                "this viewer needs its access token: open the login link it printed at "
                f"start, or send the token in the {_TOKEN_HEADER} header"
            )
        return True

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
        viewer = self.server.viewer
        try:
            if not self._check_token(path, params):
                return
            viewer.check_run()
            if path in _STATIC:
                body, ctype = viewer.static[path]  # query strings are the page's own state
                self._send(HTTPStatus.OK, body, ctype)
            elif path == "/favicon.ico":
                self._headers(HTTPStatus.NO_CONTENT, "image/x-icon", None)
                self.end_headers()
            elif path == "/api/events":
                self._events(params)
            elif path == "/api/stream":
                self._stream(params)
            elif path == "/api/export":
                self._export(params)
            elif path == "/api/kpis":
                self._no_params(params)
                self._json(HTTPStatus.OK, {"kpis": call_kpis(viewer.kpis)})
            elif path == "/api/counts":
                self._no_params(params)
                self._json(HTTPStatus.OK, viewer.counts())
            elif path == "/api/rates":
                self._no_params(params)
                self._json(HTTPStatus.OK, viewer.rates())
            elif path == "/api/health":
                self._no_params(params)
                self._json(HTTPStatus.OK, viewer.health())
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page {path!r}")
        except QueryError as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error))
        except _Unauthorised as error:
            self._error(HTTPStatus.UNAUTHORIZED, str(error))
        except _Busy as error:
            self.close_connection = True
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(error))
        except (ConnectionError, TimeoutError):  # the client went away
            self.close_connection = True
        except Exception as error:  # report, keep serving
            logger.exception("viewer request %s failed", self.path)
            self.close_connection = True
            if not self._streaming:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _read_only(self) -> None:
        self.close_connection = True
        body = json.dumps({"error": "the viewer is read-only; use GET", "status": 405}).encode()
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only

    # -- endpoints -------------------------------------------------------
    @staticmethod
    def _no_params(params: dict[str, list[str]]) -> None:
        if params:
            raise QueryError(f"unknown parameter {sorted(params)[0]!r}; this takes none")

    def _events(self, params: dict[str, list[str]]) -> None:
        viewer = self.server.viewer
        query = parse_query(params)
        selection = select_events(viewer.bus, query)
        older: list[Any] = []
        if viewer.journal is not None and query.since is None:
            # what the ring no longer holds, the journal may: below the oldest retained
            below = min(
                selection.oldest_seq or 1,
                selection.events[0].seq if selection.events else _NO_SEQ,
                (query.ceiling + 1) if query.ceiling is not None else _NO_SEQ,
            )
            older = journal_events(
                viewer.journal, query, below=below, count=query.limit - len(selection.events)
            )
        body = viewer.selection_json(selection, finished=viewer.finished, older=older).encode()
        self._send(HTTPStatus.OK, body, "application/json")

    def _export(self, params: dict[str, list[str]]) -> None:
        viewer = self.server.viewer
        query = parse_query(params)
        found = export_events(viewer.bus, query)
        lines = [viewer.encode(event) for event in found]
        body = ("\n".join(lines) + "\n" if lines else "").encode()
        self._headers(HTTPStatus.OK, "application/x-ndjson; charset=utf-8", len(body))
        self.send_header("Content-Disposition", 'attachment; filename="ringbus-events.jsonl"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _stream(self, params: dict[str, list[str]]) -> None:
        query = parse_query(params, extra=("tail",), default_limit=_STREAM_BATCH)
        tail = parse_flag(params, "tail")
        resume = self.headers.get("Last-Event-ID")
        since = query.since
        if resume:
            since = parse_since(resume, "Last-Event-ID")
        viewer = self.server.viewer
        if since is None:
            since = viewer.bus.latest_seq()
        query = replace(query, since=since)
        if self.command == "HEAD":
            self._headers(HTTPStatus.OK, "text/event-stream; charset=utf-8", None)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        with viewer.track_stream():
            self._headers(HTTPStatus.OK, "text/event-stream; charset=utf-8", None)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._streaming = True
            self._follow(query, tail)

    def _follow(self, query: EventQuery, tail: bool) -> None:
        viewer = self.server.viewer
        run_id = viewer.run_id
        hello = json.dumps({"since": query.since, "run_id": run_id})
        self._write(f"retry: {viewer.retry_ms}\nid: {query.since}\nevent: hello\ndata: {hello}\n\n")
        idle = 0.0
        told_finished = False
        while not viewer.closing.is_set():
            viewer.check_run()
            if viewer.run_id != run_id:
                data = json.dumps({"run_id": viewer.run_id, "was": run_id})
                self._write(f"event: restarted\ndata: {data}\n\n")
                return
            finished = viewer.finished  # read before the bus: nothing follows it
            epoch = viewer.epoch()
            frame = viewer.frame(query, tail, epoch)
            if frame.data:
                self._write_bytes(frame.data)
            if frame.sent_events:
                idle = 0.0
            if frame.cursor != query.since:
                query = replace(query, since=frame.cursor)
            if frame.more:
                # catching up: pace full batches so a reader never takes
                # more than a small share of the interpreter from the sim
                viewer.closing.wait(viewer.batch_pause)
                idle += viewer.batch_pause
                continue
            if finished and not told_finished:
                data = json.dumps({"latest_seq": viewer.bus.latest_seq()})
                self._write(f"event: finished\ndata: {data}\n\n")
                told_finished = True
            if idle >= viewer.heartbeat:
                self._write(": keep-alive\n\n")
                idle = 0.0
            wait = viewer.until_epoch(epoch + 1)
            viewer.closing.wait(wait)
            idle += wait
            if self._client_gone():
                return  # a closed tab frees its stream at once, not at the next write

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _write(self, text: str) -> None:
        self._write_bytes(text.encode())

    def _write_bytes(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


class ViewerServer:
    """A running viewer: a read-only web panel over one bus.

    Made by :func:`serve`; use as a context manager or call :meth:`close`.

    Attributes
    ----------
    url
        The panel's address, e.g. ``http://127.0.0.1:8765/``.
    login_url
        With a token: the one-time link that sets the token cookie in a
        browser (``None`` without a token).
    host, port
        Where the server listens (``port`` is the real one when 0 was asked).
    token
        The access token requests must carry, or ``None`` (loopback default).
    journal
        The journal file older events are read from, or ``None``.
    run_id
        Names the bus's current run; it changes when the bus starts over.
    """

    _tally: dict[str, int]
    _per_tick: dict[int, dict[str, int]]
    _seen: deque[tuple[int, str, int]]
    _scanned: int
    _health_key: int
    _health_scanned: int
    _report: dict[str, Any] | None

    def __init__(
        self,
        bus: BusReader,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kpis: Callable[[], Any] | None = None,
        poll_interval: float = 0.15,
        heartbeat: float = 10.0,
        max_streams: int = DEFAULT_MAX_STREAMS,
        allow_hosts: Iterable[str] = (),
        token: str | bool | None = None,
        journal: str | os.PathLike[str] | None = None,
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
        if isinstance(max_streams, bool) or not isinstance(max_streams, int) or max_streams < 1:
            raise ValueError(f"max_streams must be an int >= 1, got {max_streams!r}")
        if isinstance(allow_hosts, str):
            raise TypeError("allow_hosts must be a list of host names, not one str")
        allowed = [str(name).strip().lower().strip("[]") for name in allow_hosts]
        if any(not name or any(c in name for c in "/@ ?#") for name in allowed):
            raise ValueError(f"allow_hosts holds an invalid host name: {allowed!r}")
        try:
            self.loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            self.loopback = False
        if not self.loopback and not allowed:
            raise ValueError(
                f"binding {host} (not loopback) needs allow_hosts: the host names clients "
                "use to reach the viewer"
            )
        if token is True or (token is None and not self.loopback):
            token = secrets.token_urlsafe(24)
        elif token is False:
            if not self.loopback:
                raise ValueError(f"binding {host} (not loopback) needs a token")
            token = None
        elif token is not None and (not isinstance(token, str) or len(token) < 16):
            raise ValueError("token must be a str of at least 16 characters (or True for one)")
        if token is not None and not all(c.isalnum() or c in "-_." for c in token):
            raise ValueError("token may hold only letters, digits, '-', '_' and '.'")
        self.token: str | None = token
        self._login: str | None = secrets.token_urlsafe(24) if token is not None else None
        if journal is not None and not os.path.isfile(journal):
            raise ValueError(f"journal {os.fspath(journal)!r} is not a file")
        self.journal = journal
        self.bus = bus
        self.kpis = kpis
        self.poll_interval = float(poll_interval)
        self.heartbeat = float(heartbeat)
        self.max_streams = max_streams
        self.retry_ms = 1000
        self.batch_pause = min(0.02, self.poll_interval)
        self.static = _load_static()
        self.closing = threading.Event()
        self._finished = threading.Event()
        self.run_id = uuid.uuid4().hex[:12]
        self._seen_latest = bus.latest_seq()
        self._run_lock = threading.Lock()
        self._streams = 0
        self._streams_done = threading.Condition()
        self._cache_key: tuple[int, int] = (-1, -1)
        self._reset_counts()
        self._counts: dict[str, int] = {}
        self._rates: dict[str, Any] = {}
        self._cache_lock = threading.Lock()
        self._health: dict[str, Any] = {}
        self._cache_at = 0.0
        self._health_at = 0.0
        self._frame_lock = threading.Lock()
        self._frames: dict[tuple[Any, ...], _Frame] = {}
        self._tops: dict[int, int] = {}
        self._encoded: dict[int, str] = {}
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, port), _Handler)
        self._httpd.viewer = self
        self.host = host
        self.port: int = self._httpd.server_address[1]
        names = set(allowed)
        try:
            if not ipaddress.ip_address(host).is_unspecified:
                names.add(host.lower())
        except ValueError:
            names.add(host.lower())
        self.allowed_hosts = frozenset(names)
        self.cookie_name = f"ringbus_viewer_{self.port}"
        shown = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::") and allowed:
            shown = f"[{allowed[0]}]" if ":" in allowed[0] else allowed[0]
        self.url = f"http://{shown}:{self.port}/"
        self.login_url = None if self._login is None else f"{self.url}?login={self._login}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"ringbus-viewer:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- the run ---------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` said the run is over."""
        return self._finished.is_set()

    def finish(self) -> None:
        """Say the run is over: pages show "run finished" and stop waiting for more."""
        self._finished.set()

    def check_run(self) -> str:
        """The current run id, a new one if the bus's seqs went back (it started over)."""
        latest = self.bus.latest_seq()
        with self._run_lock:
            if latest < self._seen_latest:
                self.run_id = uuid.uuid4().hex[:12]
                self._finished.clear()
                with self._frame_lock:
                    self._frames.clear()
                    self._tops.clear()
                    self._encoded.clear()
                with self._cache_lock:
                    self._reset_counts()
            self._seen_latest = latest
            return self.run_id

    def redeem_login(self, given: str) -> bool:
        """Use up the one-time login link: whether ``given`` is it (and still unused)."""
        with self._run_lock:
            wanted = self._login
            if wanted is None or not hmac.compare_digest(given.encode(), wanted.encode()):
                return False
            self._login = None
            return True

    # -- encoding, shared by every client --------------------------------
    def encode(self, event: Any) -> str:
        """One event as compact JSON, encoded once however many clients it goes to."""
        text = self._encoded.get(event.seq)
        if text is None:
            text = json.dumps(event.to_dict(), separators=(",", ":"))
            if len(self._encoded) >= _ENCODED_KEPT:
                self._encoded.clear()
            self._encoded[event.seq] = text
        return text

    def selection_json(
        self, selection: Selection, *, finished: bool | None = None, older: Sequence[Any] = ()
    ) -> str:
        """The JSON body of ``/api/events`` (and of a stream's ``events`` message).

        ``older`` events come first, each marked ``"source": "journal"``.
        """
        head = {
            "next_since": selection.cursor,
            "latest_seq": selection.latest_seq,
            "oldest_seq": selection.oldest_seq,
            "gap": gap_json(selection.gap),
            "more": selection.more,
            "run_id": self.run_id,
        }
        if finished is not None:
            head["finished"] = finished
            head["journal"] = self.journal is not None
        rest = json.dumps(head, separators=(",", ":"))
        parts = [
            json.dumps(event.to_dict() | {"source": "journal"}, separators=(",", ":"))
            for event in older
        ]
        parts.extend(self.encode(event) for event in selection.events)
        events = ",".join(parts)
        return '{"events":[' + events + "]," + rest[1:]

    def epoch(self) -> int:
        """The current poll period: streams read up to a seq fixed once per period."""
        return int(time.monotonic() / self.poll_interval)

    def until_epoch(self, epoch: int) -> float:
        """Seconds until ``epoch`` begins (at least a little, at most one period)."""
        wait = epoch * self.poll_interval - time.monotonic()
        return min(max(wait, 0.005), self.poll_interval)

    def frame(self, query: EventQuery, tail: bool, epoch: int) -> _Frame:
        """What a stream at ``query.since`` sends this period, made once for all alike.

        Streams with the same filters at the same cursor read the same events
        up to the same seq (fixed at the period's first read), so the read and
        its encoding are done once and the bytes go to each of them.
        """
        key = (query, tail, epoch)  # a frozen query: its filters and cursor
        with self._frame_lock:
            found = self._frames.get(key)
            if found is not None:
                return found
            top = self._tops.get(epoch)
            if top is None:
                top = self.bus.latest_seq()
                self._tops[epoch] = top
                for old in [e for e in self._tops if e < epoch - 2]:
                    del self._tops[old]
                for old_key in [k for k in self._frames if k[2] < epoch - 1]:
                    del self._frames[old_key]
            made = self._make_frame(query, tail, top)
            self._frames[key] = made
            return made

    def _make_frame(self, query: EventQuery, tail: bool, top: int) -> _Frame:
        since = query.since or 0
        parts: list[str] = []
        selection = select_events(self.bus, query, top=top)
        if selection.gap is not None:
            parts.append(f"event: gap\ndata: {json.dumps(gap_json(selection.gap))}\n\n")
        if tail and selection.more:
            newest = newest_events(self.bus, query, floor=since, top=top)
            keep = newest.events
            if keep and keep[0].seq > selection.events[0].seq:
                skipped = {"first": selection.events[0].seq, "last": keep[0].seq - 1}
                parts.append(f"event: skipped\ndata: {json.dumps(skipped)}\n\n")
                selection = Selection(
                    keep, newest.cursor, newest.latest_seq, newest.oldest_seq, None, False
                )
        if selection.events:
            data = self.selection_json(selection)
            parts.append(f"id: {selection.cursor}\nevent: events\ndata: {data}\n\n")
        elif selection.cursor != since:
            parts.append(f"id: {selection.cursor}\n\n")  # advance Last-Event-ID only
        return _Frame(
            "".join(parts).encode(), selection.cursor, selection.more, bool(selection.events)
        )

    # -- side panels -----------------------------------------------------
    def _refresh(self) -> tuple[int, int]:
        """Count per kind and per tick over the retained ring, if the last count is stale.

        Only events new since the last count are read; those the ring has
        dropped since are taken off again, so a count costs what arrived.
        """
        key = (self.bus.latest_seq(), self.bus.oldest_seq())
        now = time.monotonic()
        if key != self._cache_key and (
            now - self._cache_at >= _PANEL_AGE or self._cache_key[0] < 0
        ):
            self._cache_at = now
            counts, per_tick, seen = self._tally, self._per_tick, self._seen
            for event in self.bus.get_since(self._scanned):
                kind, tick = event.kind, event.tick
                seen.append((event.seq, kind, tick))
                counts[kind] = counts.get(kind, 0) + 1
                tally = per_tick.get(tick)
                if tally is None:
                    tally = per_tick[tick] = {}
                tally[kind] = tally.get(kind, 0) + 1
            if seen:
                self._scanned = seen[-1][0]
            oldest = self.bus.oldest_seq()
            while seen and seen[0][0] < oldest:
                _, kind, tick = seen.popleft()
                counts[kind] -= 1
                if not counts[kind]:
                    del counts[kind]
                tally = per_tick[tick]
                tally[kind] -= 1
                if not tally[kind]:
                    del tally[kind]
                    if not tally:
                        del per_tick[tick]
            ticks = sorted(per_tick)[-RATE_TICKS:]
            kinds = sorted({kind for tick in ticks for kind in per_tick[tick]})
            self._counts = dict(sorted(counts.items()))
            self._rates = {
                "ticks": ticks,
                "series": {kind: [per_tick[t].get(kind, 0) for t in ticks] for kind in kinds},
            }
            self._cache_key = key
        return self._cache_key

    def _reset_counts(self) -> None:
        self._cache_key = (-1, -1)
        self._tally = {}
        self._per_tick = {}
        self._seen = deque()
        self._scanned = 0
        self._health_key = -1
        self._health_scanned = 0
        self._report: dict[str, Any] | None = None

    def counts(self) -> dict[str, Any]:
        """Events per kind over the retained ring (worked out at most once a second)."""
        with self._cache_lock:
            key = self._refresh()
            return {
                "counts": self._counts,
                "retained": sum(self._counts.values()),
                "latest_seq": key[0],
                "oldest_seq": key[1],
                "basis": "retained",
            }

    def rates(self) -> dict[str, Any]:
        """Events per tick, by kind, over the newest retained ticks (``RATE_TICKS``)."""
        with self._cache_lock:
            key = self._refresh()
            return {**self._rates, "latest_seq": key[0], "oldest_seq": key[1], "basis": "retained"}

    def health(self) -> dict[str, Any]:
        """The bus's counters, its dead letters and its newest ``BUS_HEALTH`` report."""
        latest = self.bus.latest_seq()
        now = time.monotonic()
        with self._cache_lock:
            if self._health_key >= 0 and (
                latest == self._health_key or now - self._health_at < _PANEL_AGE
            ):
                return self._health
            self._health_at = now
            out: dict[str, Any] = {"bus": None, "dead_letters": None, "report": None}
            stats = getattr(self.bus, "stats", None)
            if callable(stats):
                out["bus"] = _retry(stats)
            letters = getattr(self.bus, "dead_letters", None)
            if letters is not None and callable(getattr(letters, "stats", None)):
                out["dead_letters"] = {
                    "stats": _retry(letters.stats),
                    "recent": [
                        letter.to_dict() | {"event": _event_brief(letter.event)}
                        for letter in _retry(letters.list)[-DEAD_LETTERS_SHOWN:]
                    ],
                }
            # only reports new since the last look are read; the newest one is kept
            reports = self.bus.get_since(self._health_scanned, kinds=["BUS_HEALTH"])
            if reports:
                self._report = health_report(reports[-1])
                self._health_scanned = reports[-1].seq
            else:
                self._health_scanned = max(self._health_scanned, latest - 1)
            out["report"] = self._report
            out = json.loads(json.dumps(out, default=str))
            self._health_key, self._health = latest, out
            return out

    # -- streams -----------------------------------------------------------
    def track_stream(self) -> _StreamTracker:
        """Count an open stream so :meth:`close` can wait for it to end.

        Raises
        ------
        _Busy
            ``max_streams`` streams are open already.
        """
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


def _retry(read: Callable[[], Any], attempts: int = 5) -> Any:
    """Call ``read``, again if the sim thread changed what it iterates mid-read."""
    for attempt in range(attempts):
        try:
            return read()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    return None  # pragma: no cover


def _event_brief(event: Any) -> dict[str, Any]:
    return {"seq": event.seq, "kind": event.kind, "tick": event.tick, "day": event.day}


#: Labels of a transport's state in a ``BUS_HEALTH`` payload, in its order.
TRANSPORT_FIELDS = ("state", "sent", "failed", "dropped", "buffered")


def health_report(event: Any) -> dict[str, Any]:
    """A ``BUS_HEALTH`` event with labelled fields: bus counters and transports by name."""
    bus: dict[str, Any] = {}
    transports: dict[str, Any] = {}
    for name, item in event.payload:
        if name.startswith("transport:") and isinstance(item, (list, tuple)):
            transports[name[len("transport:") :]] = dict(zip(TRANSPORT_FIELDS, item, strict=False))
        else:
            bus[name] = item
    return {
        "seq": event.seq,
        "tick": event.tick,
        "day": event.day,
        "bus": bus,
        "transports": transports,
    }


class _StreamTracker:
    def __init__(self, viewer: ViewerServer) -> None:
        self._viewer = viewer

    def __enter__(self) -> None:
        viewer = self._viewer
        with viewer._streams_done:
            if viewer._streams >= viewer.max_streams:
                raise _Busy(
                    f"too many live streams: {viewer._streams} are open, the most this "
                    f"viewer serves (max_streams={viewer.max_streams}); close another tab "
                    "or pause one"
                )
            viewer._streams += 1

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
    max_streams: int = DEFAULT_MAX_STREAMS,
    allow_hosts: Iterable[str] = (),
    token: str | bool | None = None,
    journal: str | os.PathLike[str] | None = None,
) -> ViewerServer:
    """Serve the event viewer for ``bus`` in a background thread.

    Parameters
    ----------
    bus
        The :class:`~ringbus.EventBus` to show. The viewer only reads it.
    host
        Interface to bind: loopback by default. Any other address needs
        ``allow_hosts`` and gets an access token.
    port
        TCP port; ``0`` picks a free one (read it from ``.port`` or ``.url``).
    kpis
        Optional callable returning a JSON-ready dict shown beside the table,
        e.g. a KPI subscriber's ``summary``. Called from the server thread.
    max_streams
        Live streams served at once; one more gets HTTP 503.
    allow_hosts
        Host names (besides ``host`` itself) a request's ``Host`` header may
        name. The Host check is always on: on loopback, loopback names pass.
    token
        Access token every request must carry (``X-Ringbus-Token`` header or
        the cookie set by the one-time ``login_url``). ``None``: one is made
        off loopback, none on it; ``True``: always make one; a str: use it.
    journal
        The bus's journal file (see :class:`~ringbus.journal.Journal`): a
        look back past the ring's oldest event (``before``, ``to_seq``, no
        ``since``) is filled from it, each such event marked
        ``"source": "journal"``.

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
    return ViewerServer(
        bus,
        host=host,
        port=port,
        kpis=kpis,
        max_streams=max_streams,
        allow_hosts=allow_hosts,
        token=token,
        journal=journal,
    )
