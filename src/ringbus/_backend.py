"""Pick the core: the compiled extension, or its pure-Python twin when the
extension is switched off (``RINGBUS_NO_EXTENSIONS``) or was not built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._switch import extensions_disabled

__all__ = ["BACKEND", "FIELDS", "Producer", "RingCore", "WorldEvent"]

if TYPE_CHECKING or extensions_disabled():
    from ._ringbus_py import FIELDS, Producer, RingCore, WorldEvent
else:
    try:
        from ._ringbus import FIELDS, Producer, RingCore, WorldEvent
    except ModuleNotFoundError as error:  # not built: only then fall back
        if error.name != f"{__package__}._ringbus":
            raise
        from ._ringbus_py import FIELDS, Producer, RingCore, WorldEvent

#: ``"cython"`` or ``"python"``: derived from what was really imported.
BACKEND = "cython" if RingCore.__module__.endswith("._ringbus") else "python"
