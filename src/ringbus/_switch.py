"""The one switch that turns the compiled core off, read the same way by
``setup.py`` (build pure Python) and by :mod:`ringbus._backend` (import it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SWITCH", "extensions_disabled"]

SWITCH = "RINGBUS_NO_EXTENSIONS"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})


def extensions_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """Return True when ``RINGBUS_NO_EXTENSIONS`` asks for pure Python.

    Raises
    ------
    ValueError
        The variable holds something that is neither on nor off.
    """
    value = (os.environ if environ is None else environ).get(SWITCH, "")
    word = value.strip().lower()
    if word in _ON:
        return True
    if word in _OFF:
        return False
    raise ValueError(
        f"{SWITCH}={value!r} is not understood: use 1/true/yes/on to build and "
        "import the pure-Python core, 0/false/no/off or unset for the compiled one"
    )
