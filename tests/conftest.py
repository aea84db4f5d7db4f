"""Run every core, facade and subscriber test on both cores.

The ``backend`` fixture is parametrized over the pure-Python twin and the
compiled core. The compiled param carries the ``c_extension`` marker, which
is deselected only when ``RINGBUS_NO_EXTENSIONS`` is on; otherwise a missing
or broken extension makes those tests error, never skip.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

import ringbus
from ringbus._bus import bus_class_for
from ringbus._switch import extensions_disabled

NO_EXTENSIONS = extensions_disabled()


@dataclass(frozen=True)
class Backend:
    """One core and the facade built on it."""

    name: str
    core: ModuleType
    EventBus: type[Any]
    WorldEvent: type[Any]
    RingCore: type[Any]

    def bus(self, **options: Any) -> Any:
        """A bus on this core; keyword options go to EventBusConfig."""
        return self.EventBus(ringbus.EventBusConfig(**options))


def _load(name: str) -> Backend:
    module = importlib.import_module(
        "ringbus._ringbus" if name == "cython" else "ringbus._ringbus_py"
    )
    return Backend(
        name=name,
        core=module,
        EventBus=bus_class_for(module),
        WorldEvent=module.WorldEvent,
        RingCore=module.RingCore,
    )


@pytest.fixture(
    scope="session",
    params=["python", pytest.param("cython", marks=pytest.mark.c_extension)],
)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each core in turn: ``backend.bus(...)``, ``backend.WorldEvent``, ``backend.core``."""
    return _load(request.param)


@pytest.fixture(scope="session")
def both_backends() -> tuple[Backend, ...]:
    """Both cores at once, for parity tests (only the twin when switched off)."""
    names = ("python",) if NO_EXTENSIONS else ("python", "cython")
    return tuple(_load(name) for name in names)
