"""Reference leaks, checked in isolated subprocesses for both cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).parent / "isolated" / "leaks.py"


def test_no_reference_leaks(backend: Any) -> None:
    environ = dict(os.environ)
    if backend.name == "cython":
        environ.pop("RINGBUS_NO_EXTENSIONS", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), backend.name],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no leaks ({backend.name})" in result.stdout
