"""Helpers shared by the benchmark suites (parameters, core modules, paths)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent

#: Peers are optional (the ``bench`` extra): their benchmarks skip when absent.
PEER_PACKAGES = {
    "psygnal emit_fast": "psygnal",
    "psygnal emit": "psygnal",
    "pyee": "pyee",
    "blinker": "blinker",
}


def in_ci() -> bool:
    """``CI`` is set to anything but an off word (``.ci/run`` exports ``CI=1``)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no", "off"}


def implementation_params() -> list[Any]:
    """Every implementation as a pytest param; the compiled core is marked."""
    from ringbus._bench import IMPLEMENTATIONS

    return [
        pytest.param(name, marks=pytest.mark.c_extension, id="ringbus")
        if name == "ringbus"
        else pytest.param(name, id=name.replace(" ", "-"))
        for name in (*IMPLEMENTATIONS[:2], "floor", *IMPLEMENTATIONS[2:])
    ]


def core_params() -> list[Any]:
    """Both cores as pytest params, the compiled one marked ``c_extension``."""
    return [
        pytest.param("python", id="pure"),
        pytest.param("cython", marks=pytest.mark.c_extension, id="compiled"),
    ]


def core_module(name: str) -> ModuleType:
    """The core module for ``"python"`` or ``"cython"`` (an error if not built)."""
    return importlib.import_module(
        "ringbus._ringbus" if name == "cython" else "ringbus._ringbus_py"
    )
