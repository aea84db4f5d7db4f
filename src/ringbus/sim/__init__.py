"""The simulation side: subscribers that turn the event stream into what a sim needs.

KPIs (:mod:`.kpi`), evidence windows (:mod:`.evidence`), the incident log
(:mod:`.incidents`), bus and transport health events (:mod:`.health`), and
bridges for code that still logs or counts by hand (:mod:`.bridges`).
"""

from __future__ import annotations

from .bridges import COUNTER_INCREMENTED, LOG_RECORD, CounterAdapter, EventLogHandler
from .evidence import DEFAULT_RULES, EVIDENCE_RAISED, EvidenceRule, EvidenceSubscriber
from .health import BUS_HEALTH, HealthReporter
from .incidents import Incident, IncidentLog
from .kpi import COUNTED_KINDS, KPI_NAMES, KpiSubscriber

__all__ = [
    "BUS_HEALTH",
    "COUNTED_KINDS",
    "COUNTER_INCREMENTED",
    "DEFAULT_RULES",
    "EVIDENCE_RAISED",
    "KPI_NAMES",
    "LOG_RECORD",
    "CounterAdapter",
    "EventLogHandler",
    "EvidenceRule",
    "EvidenceSubscriber",
    "HealthReporter",
    "Incident",
    "IncidentLog",
    "KpiSubscriber",
]
