"""A read-only web panel over a live :class:`~ringbus.EventBus`.

``serve(bus)`` starts a small stdlib HTTP server in a background thread: the
latest events in a table (filter by kind, glob, polity, ward, actor, subject
or payload key/value), payloads on demand, counts per kind, a KPI summary,
and a live feed that follows the sim loop over server-sent events.

JSON API (all ``GET``):

``/api/events?since=&kinds=&limit=&polity=&ward=&actor=&subject=&key=&value=``
    Events as dicts, plus ``next_since``, ``latest_seq``, ``oldest_seq``,
    ``gap`` and ``more``.
``/api/stream?since=&tail=`` (same filters; ``limit`` is the batch size)
    Server-sent events (``events``, ``gap``, ``skipped``); ``id:`` is the
    seq cursor, so a reconnecting client resumes after the last batch it saw
    (``Last-Event-ID``). With ``tail=1`` a burst larger than ``limit`` is cut
    to its newest ``limit`` events and the rest reported as ``skipped``.
``/api/counts``
    Events per kind over the events the ring still retains.
``/api/kpis``
    ``{"kpis": ...}``: what the ``kpis`` callable returns, or ``null``.
"""

from __future__ import annotations

from ._query import DEFAULT_LIMIT, MAX_LIMIT, QueryError
from ._server import CONTENT_SECURITY_POLICY, ViewerServer, serve

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "QueryError",
    "ViewerServer",
    "serve",
]
