"""What the test suite and the benchmark suites share (``pytest tests benchmarks``).

With ``RINGBUS_NO_EXTENSIONS`` on, every test marked ``c_extension`` (it needs
the compiled core) is deselected: a pure-Python install is meant to run
without it. Otherwise a missing compiled core is an error, never a skip.
"""

from __future__ import annotations

import pytest

from ringbus._switch import extensions_disabled


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not extensions_disabled():
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("c_extension") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
