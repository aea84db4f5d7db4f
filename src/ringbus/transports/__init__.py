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

from .._normalise import EVENT_SCHEMA
from ._base import RetryingTransport, Transform, Transport, dumps_record, validate_event_dict
from .feed import SocketFeed, read_feed
from .http import HttpTransport
from .stdout import StdoutTransport

__all__ = [
    "EVENT_SCHEMA",
    "HttpTransport",
    "RetryingTransport",
    "SocketFeed",
    "StdoutTransport",
    "Transform",
    "Transport",
    "dumps_record",
    "read_feed",
    "validate_event_dict",
]
