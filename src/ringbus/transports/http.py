"""A transport that POSTs batches of JSON from a sender thread, retrying with backoff."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from ._base import BackgroundTransport, Record, SendFailed, SendRefused, Transform, dumps_record

__all__ = ["HttpTransport"]


class HttpTransport(BackgroundTransport):
    """POST the bus's events as JSON batches from a background sender.

    The body is ``{"producer": <bus name>, "events": [record, ...]}``, at
    most ``batch_size`` records. ``drain()`` only hands its events over (see
    :class:`~ringbus.transports.BackgroundTransport`): a slow or dead server
    costs the loop nothing. A batch that fails (connection error, timeout, a
    5xx, 408 or 429) is kept and retried after ``retry_base * 2**(failures-1)``
    seconds (at most ``retry_max``); new events queue behind it up to
    ``max_buffer``, then the overflow policy applies. Other 4xx answers mean
    the server will never take the batch: it is dropped, counted in
    ``dropped`` and ``rejected``, and reported.

    Parameters
    ----------
    url
        Where to POST (``http://`` or ``https://``).
    timeout
        Seconds one request may take.
    headers
        Extra request headers.
    **options
        ``transform``, ``max_buffer``, ``batch_size``, ``overflow``,
        ``block_timeout``, ``retry_base``, ``retry_max``, ``report_every``,
        ``name``: see :class:`~ringbus.transports.BackgroundTransport`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        headers: Mapping[str, str] | None = None,
        transform: Transform | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        name: str | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        super().__init__(
            transform=transform,
            max_buffer=max_buffer,
            batch_size=batch_size,
            name=name or "http",
            **options,
        )
        self.url = url
        self.timeout = float(timeout)
        self.headers = dict(headers or {})
        self.requests = 0
        self.retries = 0
        self.rejected = 0

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

    def _send(self, records: list[tuple[int, Record]]) -> int:
        texts: list[str] = []
        for seq, record in records:
            try:
                texts.append(dumps_record(record))
            except (TypeError, ValueError) as error:
                self.invalid += 1
                self.last_invalid = [f"seq {seq}: {error}"]
        if not texts:
            return 0
        if self._backoff.failures:
            self.retries += 1
        self.requests += 1
        try:
            code = self._post(texts)
        except (OSError, ValueError) as error:  # URLError, timeouts, refused
            raise SendFailed(f"{type(error).__name__}: {error}") from None
        if 200 <= code < 300:
            return len(texts)
        if 400 <= code < 500 and code not in (408, 429):
            self.rejected += len(texts)
            raise SendRefused(f"HTTP {code} from {self.url}: the server refused the batch")
        raise SendFailed(f"HTTP {code} from {self.url}")

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(requests=self.requests, retries=self.retries, rejected=self.rejected)
        return status
