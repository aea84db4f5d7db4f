"""ringbus: a deterministic, in-process event bus for simulation loops.

Every fact the world produces is published once as an immutable
:class:`WorldEvent`, kept in a bounded ring, and handed in a stable order to
subscribers when the loop calls :meth:`EventBus.drain`.
"""

from __future__ import annotations

from . import kinds
from ._backend import BACKEND, FIELDS, WorldEvent
from ._bus import EventBus
from ._config import EventBusConfig
from ._deadletter import DeadLetter, DeadLetterQueue
from ._errors import (
    CascadeLimitError,
    PendingOverflowError,
    RingbusError,
    RingFullError,
    UnknownDestinationError,
)
from ._limits import MAX_RING_BYTES
from ._normalise import TRUNCATED_KEY
from ._registry import KindSelector, Subscription
from ._subscriber import Subscriber

__version__ = "0.1.0"

__all__ = [
    "BACKEND",
    "FIELDS",
    "MAX_RING_BYTES",
    "TRUNCATED_KEY",
    "CascadeLimitError",
    "DeadLetter",
    "DeadLetterQueue",
    "EventBus",
    "EventBusConfig",
    "KindSelector",
    "PendingOverflowError",
    "RingFullError",
    "RingbusError",
    "Subscriber",
    "Subscription",
    "UnknownDestinationError",
    "WorldEvent",
    "__version__",
    "kinds",
]
