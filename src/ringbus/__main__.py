"""``python -m ringbus COMMAND``: the command line (see :mod:`ringbus.cli`)."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
