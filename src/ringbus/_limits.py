"""Sizes a bus refuses to exceed, checked the same way by both cores and the config.

The compiled core preallocates its ring; the pure-Python twin grows into it.
Both refuse, up front and with the same message, a ring that could not be
preallocated, so a configuration that works on one core works on the other.
"""

from __future__ import annotations

__all__ = [
    "MAX_RING_BYTES",
    "ROUTE_CACHE_LIMIT",
    "SLOT_BYTES",
    "SLOT_BYTES_PER_ITEM",
    "check_ring_size",
    "ring_bytes",
]

#: Bytes of one ring slot before its payload pairs: seq, tick, day and the
#: pair count (4 x 8), kind, the four ids and tags (6 x 8) and a view pointer (8).
SLOT_BYTES = 88
#: Bytes of one payload pair (a key and a value pointer) in a ring slot.
SLOT_BYTES_PER_ITEM = 16
#: Largest ring a bus accepts: ``max_events x (88 + 16 x max_payload_items)``
#: must not exceed it (64 GiB).
MAX_RING_BYTES = 2**36
#: Most kinds whose routes a bus keeps cached; publishing a new kind past it
#: starts the cache afresh (each kind is then resolved again once).
ROUTE_CACHE_LIMIT = 4096


def ring_bytes(max_events: int, max_payload_items: int) -> int:
    """Bytes a ring of ``max_events`` slots of ``max_payload_items`` pairs takes."""
    return max_events * (SLOT_BYTES + SLOT_BYTES_PER_ITEM * max_payload_items)


def check_ring_size(max_events: int, max_payload_items: int, owner: str = "") -> None:
    """Raise ``ValueError`` when the ring would be larger than :data:`MAX_RING_BYTES`.

    Parameters
    ----------
    max_events, max_payload_items
        Already validated positive ints.
    owner
        Prefix of the field name in the message (``"EventBusConfig."``).
    """
    needed = ring_bytes(max_events, max_payload_items)
    if needed > MAX_RING_BYTES:
        slot = SLOT_BYTES + SLOT_BYTES_PER_ITEM * max_payload_items
        raise ValueError(
            f"{owner}max_events={max_events} needs about {needed} bytes of ring "
            f"({slot} bytes per event at max_payload_items={max_payload_items}); "
            f"a ring may take at most {MAX_RING_BYTES} bytes (64 GiB): "
            f"lower max_events to {MAX_RING_BYTES // slot} or less"
        )
