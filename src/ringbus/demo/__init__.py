"""The demo: a small seeded world that runs through the bus, alone or as several processes.

:class:`DemoWorld` (in :mod:`.world`) publishes deliveries, incidents, depots
and the rest, tick by tick; ``ringbus demo`` runs it with its KPIs, and
``ringbus redis-demo`` (:mod:`.multiprocess`) runs several worker processes
that feed one aggregator through Redis Streams.
"""

from __future__ import annotations

from .world import DemoWorld, StreamHasher

__all__ = ["DemoWorld", "StreamHasher"]
