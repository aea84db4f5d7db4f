"""A transport that POSTs batches of JSON lines, retrying with backoff counted in ticks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from ._base import RetryingTransport, Transform, logger

__all__ = ["HttpTransport"]


class HttpTransport(RetryingTransport):
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
