"""ringbus: a deterministic, in-process event bus for simulation loops.

Every fact the world produces is published once as an immutable
:class:`WorldEvent`, kept in a bounded ring, and handed in a stable order to
subscribers when the loop calls :meth:`EventBus.drain`.
"""

from __future__ import annotations

from . import kinds
from ._aio import EventStream, StreamOverflowError
from ._backend import BACKEND, FIELDS, Producer, WorldEvent
from ._bus import EventBus
from ._config import EventBusConfig
from ._deadletter import DeadLetter, DeadLetterQueue
from ._errors import (
    CascadeLimitError,
    PendingOverflowError,
    ProducerClosedError,
    RingbusError,
    RingFullError,
    UnknownDestinationError,
    WrongThreadError,
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
    "EventStream",
    "KindSelector",
    "PendingOverflowError",
    "Producer",
    "ProducerClosedError",
    "RingFullError",
    "RingbusError",
    "StreamOverflowError",
    "Subscriber",
    "Subscription",
    "UnknownDestinationError",
    "WrongThreadError",
    "WorldEvent",
    "__version__",
    "kinds",
]
