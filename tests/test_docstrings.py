"""Every example in a docstring of the package runs and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ringbus

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(ringbus.__path__, prefix="ringbus.")
    if info.name != "ringbus._ringbus"  # the compiled core carries the twin's docstrings
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_the_examples_are_found() -> None:
    found = sum(
        len(doctest.DocTestFinder().find(importlib.import_module(name))) for name in MODULES
    )
    assert found > 10
