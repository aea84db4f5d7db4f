"""What the journal test files share: where ringbus lives, and a small world to journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ringbus
from ringbus import kinds

# Where the ringbus under test lives (the source tree or site-packages).
SRC = str(Path(ringbus.__file__).resolve().parent.parent)


def run_world(bus: Any, ticks: int = 10, per_tick: int = 3, *, every_field: bool = False) -> None:
    """Publish a small deterministic stream, one drain per tick.

    ``every_field`` also fills ``ward_id`` and ``actor_id`` and gives two tags,
    so that every field of a record can be tampered with.
    """
    extra = {"ward_id": "w1", "actor_id": "a7"} if every_field else {}
    tags = ("t", "u") if every_field else ("t",)
    for tick in range(ticks):
        bus.set_clock(tick, tick // 4)
        for i in range(per_tick):
            bus.publish(
                (kinds.DELIVERY_COMPLETED, kinds.DELIVERY_FAILED, kinds.DEPOT_BUILT)[i % 3],
                polity_id=f"p{i % 2}",
                subject_id=f"s{tick}",
                payload={"n": tick * per_tick + i, "name": f"caf\u00e9|{i}", "xs": [1, [2]]},
                tags=tags,
                **extra,
            )
        bus.drain()


def kill_writer(code: str, seconds: float) -> None:
    """Run a journal writer script (``code``) until it prints ``running``, let it
    write for ``seconds``, then SIGKILL it (and check that it was killed)."""
    import signal
    import subprocess
    import sys
    import time

    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "running"
            time.sleep(seconds)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
