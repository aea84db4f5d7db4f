"""Which core is imported, checked in fresh subprocesses."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ringbus
from ringbus._switch import extensions_disabled


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "RINGBUS_NO_EXTENSIONS"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60
    )


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_switch_on_selects_the_twin(value: str) -> None:
    result = run("import ringbus; print(ringbus.BACKEND)", RINGBUS_NO_EXTENSIONS=value)
    assert result.stdout.strip() == "python", result.stderr


@pytest.mark.c_extension
@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_switch_off_selects_the_extension(value: str) -> None:
    code = (
        "import ringbus, ringbus._ringbus as c; "
        "assert ringbus.WorldEvent is c.WorldEvent; print(ringbus.BACKEND)"
    )
    result = run(code, RINGBUS_NO_EXTENSIONS=value)
    assert result.stdout.strip() == "cython", result.stderr


def test_unknown_switch_value_is_an_error() -> None:
    result = run("import ringbus", RINGBUS_NO_EXTENSIONS="maybe")
    assert result.returncode != 0
    assert "RINGBUS_NO_EXTENSIONS='maybe' is not understood" in result.stderr
    with pytest.raises(ValueError, match="not understood"):
        extensions_disabled({"RINGBUS_NO_EXTENSIONS": "2"})


def test_backend_reports_what_was_imported() -> None:
    module = ringbus.EventBus.__mro__[2].__module__
    assert ringbus.BACKEND == ("cython" if module == "ringbus._ringbus" else "python")
    if not extensions_disabled():
        # the extension must be there: a missing one is an error, not a skip
        assert ringbus.BACKEND == "cython"


def _modules() -> list[str]:
    path = Path(ringbus.__file__).parent
    names = ["ringbus"]
    for info in pkgutil.walk_packages([str(path)], prefix="ringbus."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("switch", ["1", pytest.param("0", marks=pytest.mark.c_extension)])
def test_every_module_imports_cleanly_isolated(switch: str) -> None:
    names = [n for n in _modules() if not (switch == "1" and n == "ringbus._ringbus")]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ["RINGBUS_NO_EXTENSIONS"] = switch
    if "PYTHONPATH" in os.environ:  # running from the source tree: -I drops PYTHONPATH
        paths = [os.path.abspath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep)]
        code = f"import sys; sys.path[:0] = {paths!r}\n" + code
    result = subprocess.run(
        [sys.executable, "-I", "-W", "error", "-c", code, *names],
        capture_output=True,
        text=True,
        env=environ,
        cwd="/",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.c_extension
def test_both_cores_carry_the_same_docstrings() -> None:
    import inspect

    import ringbus._ringbus as compiled
    import ringbus._ringbus_py as twin

    for name in ("RingCore", "WorldEvent"):
        ours, theirs = getattr(compiled, name), getattr(twin, name)
        assert inspect.getdoc(ours) == inspect.getdoc(theirs), name
        public = {n for n in dir(theirs) if not n.startswith("_")}
        assert public <= set(dir(ours)), public - set(dir(ours))
        for attribute in sorted(public):
            doc = inspect.getdoc(getattr(theirs, attribute))
            assert inspect.getdoc(getattr(ours, attribute)) == doc, f"{name}.{attribute}"

    # help(EventBus.publish) reads the same whichever core is built
    def shape(function: object) -> list[tuple[str, object, object]]:
        parameters = list(inspect.signature(function).parameters.values())[1:]  # type: ignore[arg-type]
        return [(p.name, p.kind, p.default) for p in parameters]

    assert shape(compiled.RingCore.publish) == shape(twin.RingCore.publish)
    assert shape(compiled.RingCore.drain) == shape(twin.RingCore.drain)
