"""Telemetry transports: subscribers that send events out of the process.

A transport is a subscriber with a transform step (validate against the
event schema, reshape, select kinds) and a bounded buffer. Its handler only
buffers. Local transports write the buffer as one batch when the bus's
``drain()`` ends; network transports (:class:`BackgroundTransport`) hand it
to a sender thread with a bounded queue, so ``drain()`` never waits on the
network.

- :class:`StdoutTransport` writes JSON lines to a text stream.
- :class:`HttpTransport` POSTs batches from a sender thread, with retry and
  backoff, an explicit overflow policy and bounded flush/close.
- :class:`SocketFeed` serves JSON lines on a TCP port that other processes
  read (:func:`read_feed`).

Nothing is lost silently: events past a buffer's bound are dropped (oldest
first by default) and counted in ``dropped``; a background transport also
logs each drop and publishes it as a ``DATA_LOSS`` event with the seq
ranges. Every transport reports its counters and state with ``status()``.
"""

from __future__ import annotations

from .._normalise import EVENT_SCHEMA
from ._base import (
    OVERFLOW_POLICIES,
    BackgroundTransport,
    RetryingTransport,
    Transform,
    Transport,
    TransportOverflowError,
    dumps_record,
    validate_event_dict,
)
from .feed import SocketFeed, read_feed
from .http import HttpTransport
from .stdout import StdoutTransport

__all__ = [
    "EVENT_SCHEMA",
    "OVERFLOW_POLICIES",
    "BackgroundTransport",
    "HttpTransport",
    "RetryingTransport",
    "SocketFeed",
    "StdoutTransport",
    "Transform",
    "Transport",
    "TransportOverflowError",
    "dumps_record",
    "read_feed",
    "validate_event_dict",
]
