"""Fixtures for the pytest-benchmark suites.

The suites time the installed (or ``PYTHONPATH``) ringbus; the workload, the
implementations come from :mod:`ringbus._bench` (the floor from ``floor.py``), so the suites,
the gates and ``python -m ringbus bench`` measure the same thing.

Run them with ``pytest benchmarks`` (timed) or ``pytest benchmarks
--benchmark-disable`` (each benchmark once, as a fast check). The compiled
core carries the ``c_extension`` marker: it is deselected only when
``RINGBUS_NO_EXTENSIONS`` is on, otherwise a missing extension is an error.
A missing peer or Cython skips on a developer's machine and is an error
when ``CI`` is set (``.ci/run`` sets it), except Cython under
``RINGBUS_NO_EXTENSIONS``, where its absence is intended.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from bench_support import PEER_PACKAGES, in_ci
from ringbus._switch import extensions_disabled


def _missing(reason: str) -> None:
    """Skip on a developer's machine; in CI (``CI`` set) a missing part is an error."""
    if in_ci():
        raise RuntimeError(f"{reason} (CI installs it; a missing one must not pass as a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def floor_module() -> ModuleType:
    """The floor, ``floor_bus.pyx`` compiled (needs Cython and a compiler)."""
    from floor import build_floor

    if importlib.util.find_spec("Cython") is None:
        if extensions_disabled():
            # A pure-Python install is meant to run without Cython.
            pytest.skip("the floor needs Cython, and RINGBUS_NO_EXTENSIONS asks for none")
        _missing("the floor needs Cython: pip install Cython")
    module, note = build_floor()
    if module is None:
        raise RuntimeError(note)
    return module


@pytest.fixture
def needs_peer(request: pytest.FixtureRequest) -> None:
    """A peer's benchmark needs that peer installed (see `_missing`)."""
    name = request.node.callspec.params.get("implementation")
    package = PEER_PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        _missing(f"this benchmark needs {package}: pip install 'ringbus[bench]'")
