"""The floor: a minimal compiled bus that every ringbus figure is held against.

``floor_bus.pyx`` beside this file is the least a compiled event bus with a
seq, a tuple record, a preallocated ring and a per-kind handler table does per
event (no payload copy, no validation, no error policy: a reference, not a
library). :func:`build_floor` compiles it with Cython at benchmark time,
cached in the temp dir; :func:`floor_runner` sets it up for a scenario of the
shared workload (``ringbus._bench``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ringbus._bench import Batch, Runner, Scenario, bus_runner, make_runner
from ringbus.kinds import CORE_KINDS

__all__ = ["FLOOR_SOURCE", "build_floor", "floor_runner", "runner_maker"]

#: The floor's Cython source.
FLOOR_SOURCE = (Path(__file__).resolve().parent / "floor_bus.pyx").read_text(encoding="utf-8")


def _cache_dir(source: str) -> Path:
    tag = sysconfig.get_config_var("EXT_SUFFIX") or sys.implementation.cache_tag
    key = hashlib.sha256(f"{source}\0{tag}\0{sys.version}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ringbus-floor-{key}"


def build_floor(source: str | None = None) -> tuple[ModuleType | None, str]:
    """Compile the floor with Cython (cached in the temp dir) and import it.

    Parameters
    ----------
    source
        The ``.pyx`` text; default :data:`FLOOR_SOURCE`.

    Returns
    -------
    (module, note)
        The imported module, or ``None`` and a note saying why not (no
        Cython, no compiler, ...).
    """
    source = FLOOR_SOURCE if source is None else source
    if importlib.util.find_spec("Cython") is None:
        return None, "floor skipped: Cython is not installed (pip install Cython)"
    directory = _cache_dir(source)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    built = directory / f"ringbus_floor{suffix}"
    if not built.exists():
        # Build in a private directory, then move it into place in one step,
        # so a concurrent run never loads a half-written module.
        work = Path(tempfile.mkdtemp(prefix=directory.name + "-build-", dir=directory.parent))
        (work / "ringbus_floor.pyx").write_text(source, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-q", "ringbus_floor.pyx"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not (work / built.name).exists():
            shutil.rmtree(work, ignore_errors=True)
            last = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return None, "floor skipped: building it failed: " + " | ".join(last)
        try:
            work.rename(directory)
        except OSError:  # another run put it there first
            shutil.rmtree(work, ignore_errors=True)
    spec = importlib.util.spec_from_file_location("ringbus_floor", built)
    if spec is None or spec.loader is None:
        return None, f"floor skipped: cannot load {built}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, ""


def floor_runner(floor: ModuleType, scenario: Scenario, batch: Batch) -> Runner:
    """The floor set up for ``scenario`` (``floor`` is what :func:`build_floor` gave)."""
    bus = floor.FloorBus(50_000)

    def subscribe(handler: Callable[[object], None], kinds: Any) -> None:
        bus.subscribe(handler, CORE_KINDS if kinds is None else kinds)

    return bus_runner("floor", bus, subscribe, scenario, batch)


def runner_maker(floor: ModuleType | None) -> Callable[[str, Scenario, Batch], Runner]:
    """``make(name, scenario, batch)`` for ``"floor"`` and everything ``make_runner`` knows."""

    def make(name: str, scenario: Scenario, batch: Batch) -> Runner:
        if name == "floor":
            if floor is None:
                raise RuntimeError("the floor is not built: build_floor() gave no module")
            return floor_runner(floor, scenario, batch)
        return make_runner(name, scenario, batch=batch)

    return make


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/floor.py [--rounds N] [--markdown]``: the README's table.

    What ``ringbus bench`` prints, with the floor's row added.
    """
    import argparse

    from ringbus._bench import (
        SCENARIOS,
        available_implementations,
        environment_lines,
        format_table,
        run_table,
    )

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    floor, note = build_floor()
    names, notes = available_implementations()
    if floor is not None:
        names.insert(names.index("ringbus pure") + 1, "floor")
    else:
        notes.append(note)
    scenarios = list(SCENARIOS)
    table = run_table(names, scenarios, max(1, args.rounds), runner_maker(floor))
    print("\n".join(environment_lines()))
    print(format_table(table, scenarios, markdown=args.markdown))
    for line in notes:
        print(f"note: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
