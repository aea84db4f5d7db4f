"""A read-only web panel over a live :class:`~ringbus.EventBus`.

``serve(bus)`` starts a small stdlib HTTP server in a background thread: the
latest events in a table (filter by kind, glob, polity, ward, actor, subject
or payload key/value), payloads on demand, counts per kind, a KPI summary,
and a live feed that follows the sim loop over server-sent events.

JSON API (all ``GET``):

``/api/events?since=&before=&kinds=&limit=&polity=&ward=&actor=&subject=&key=&value=``
    Events as dicts, plus ``next_since``, ``latest_seq``, ``oldest_seq``,
    ``gap`` and ``more``. ``from_seq``/``to_seq``, ``from_tick``/``to_tick``
    and ``from_day``/``to_day`` keep inclusive ranges; ``before=SEQ`` pages
    back to the newest events older than ``SEQ``.
``/api/stream?since=&tail=`` (same filters; ``limit`` is the batch size)
    Server-sent events (``events``, ``gap``, ``skipped``); ``id:`` is the
    seq cursor, so a reconnecting client resumes after the last batch it saw
    (``Last-Event-ID``). With ``tail=1`` a burst larger than ``limit`` is cut
    to its newest ``limit`` events and the rest reported as ``skipped``.
``/api/export`` (same filters)
    Every retained matching event as JSON Lines, for download.
``/api/counts``, ``/api/rates``
    Events per kind, and per tick by kind, over the events the ring retains.
``/api/health``
    The bus's counters, its dead letters and its newest ``BUS_HEALTH``
    report with labelled fields.
``/api/kpis``
    ``{"kpis": ...}``: what the ``kpis`` callable returns, or ``null``.

Every JSON object also carries ``run_id`` (it changes when the bus starts
over) and ``finished`` (see :meth:`ViewerServer.finish`). The Host header is
always checked; off loopback every request needs the access token.
"""

from __future__ import annotations

from ._query import DEFAULT_LIMIT, MAX_KINDS, MAX_LIMIT, QueryError
from ._server import CONTENT_SECURITY_POLICY, DEFAULT_MAX_STREAMS, ViewerServer, serve

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_STREAMS",
    "MAX_KINDS",
    "MAX_LIMIT",
    "QueryError",
    "ViewerServer",
    "serve",
]
