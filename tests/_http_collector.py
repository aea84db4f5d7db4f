"""A local HTTP server that collects what transports POST, for the tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Collector:
    """What a local HTTP server received, and how it should answer."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[int] = []  # status codes to return first; then 200
        self.delay = 0.0
        self.lock = threading.Lock()

    def answer(self) -> int:
        with self.lock:
            return self.answers.pop(0) if self.answers else 200


@contextmanager
def collecting_server() -> Iterator[tuple[str, Collector]]:
    """Serve on a free loopback port; yield the URL to POST to and the collector."""
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if collector.delay:
                time.sleep(collector.delay)
            code = collector.answer()
            if code == 200:
                with collector.lock:
                    collector.bodies.append(json.loads(body))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/events", collector
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
