"""Which core is imported, checked in fresh subprocesses."""

from __future__ import annotations

import ast
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ringbus
from ringbus._normalise import FIELDS
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

    for name in ("RingCore", "WorldEvent", "Producer", "JournalChain"):
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


# Methods one core has and the other does not, and why. Anything else either
# core defines must appear in the other, in the same order.
ONLY_COMPILED = {
    "WorldEvent": {
        "__dealloc__": "releases a view's hold on its ring slot",
        "_materialise": "a view copies its payload out of the ring",
        "_payload_flat": "reads the payload from the ring or the copy",
        **dict.fromkeys(FIELDS, "fields are properties over C attributes"),
    },
    "RingCore": {
        "__cinit__": "allocates the C arrays of the ring",
        "_fill_header": "copies an event's header out of the C arrays",
    },
    "JournalChain": {
        "__cinit__": "allocates the C line buffer",
        "__dealloc__": "frees the C line buffer",
    },
}
ONLY_TWIN = {
    "Producer": {"_made": "builds a handle without __init__ (the compiled one is a cdef call)"},
    "RingCore": {"_reader_copy": "other threads read a copy (the compiled core holds the GIL)"},
    "JournalChain": {"chained": "a property (the compiled core has a readonly C attribute)"},
}


PARAMETERS_DIFFER = {
    ("RingCore", "_store"): "the compiled core takes the payload as a C array (flat)",
    ("RingCore", "_view_at"): "the compiled core reuses the previous delivery's event (spare)",
    ("RingCore", "_dispatch_by_lane"): "the compiled out-parameter total is a second return value",
    ("JournalChain", "_close_line"): "the compiled core chains a line in its C buffer (start)",
}

# "    def name(", "    cdef inline long long name(", "    cdef WorldEvent name(" ...
METHOD = re.compile(r"^ {4}(?:cp?def|def)\s+(?:inline\s+)?(?:[\w\[\]*]+\s+)*?(\w+)\s*\(", re.M)
CLASS = re.compile(r"^(?:cdef )?class (\w+)", re.M)
ROOT = Path(__file__).parents[1]
Methods = dict[str, list[tuple[str, list[str]]]]


def _parameter_names(text: str) -> list[str]:
    """The names in a Cython parameter list (types and defaults dropped)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    names = []
    for part in parts:
        declaration = part.split("=")[0].strip()
        if declaration:
            stars = "*" * (len(declaration) - len(declaration.lstrip("*")))
            words = re.findall(r"\w+", declaration)
            names.append(stars + (words[-1] if words else ""))  # a bare "*": keywords follow
    return names


def _compiled_methods() -> Methods:
    """Each class in ``ext/_ringbus.pyx``: its methods and their parameters, in order."""
    lines = (ROOT / "ext" / "_ringbus.pyx").read_text().splitlines()
    methods: Methods = {}
    current: list[tuple[str, list[str]]] | None = None
    for number, line in enumerate(lines):
        opening = CLASS.match(line)
        if opening:
            current = methods.setdefault(opening.group(1), [])
        elif re.match(r"[^\s#@]", line):
            current = None  # module level again
        elif current is not None and (method := METHOD.match(line)):
            text = "\n".join(lines[number : number + 20])[method.end() :]
            end, depth = 0, 1
            while depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            current.append((method.group(1), _parameter_names(text[: end - 1])))
    return methods


def _twin_methods() -> Methods:
    """Each class in the twin's source: its methods and their parameters, in order."""
    tree = ast.parse((ROOT / "src/ringbus/_ringbus_py.py").read_text())
    methods: Methods = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods[node.name] = []
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    a = item.args
                    names = [arg.arg for arg in a.posonlyargs + a.args]
                    if a.vararg or a.kwonlyargs:
                        names.append("*" + (a.vararg.arg if a.vararg else ""))
                    names += [arg.arg for arg in a.kwonlyargs]
                    if a.kwarg:
                        names.append("**" + a.kwarg.arg)
                    methods[node.name].append((item.name, names))
    return methods


def test_the_twins_define_the_same_methods_in_the_same_order() -> None:
    """The twin reads side by side with the compiled core: the same methods,
    in the same order, with the same parameters, but for the listed reasons."""
    compiled, twin = _compiled_methods(), _twin_methods()
    assert set(twin) <= set(compiled), set(twin) - set(compiled)
    for name, methods in twin.items():
        ours = [m for m in compiled[name] if m[0] not in ONLY_COMPILED.get(name, {})]
        theirs = [m for m in methods if m[0] not in ONLY_TWIN.get(name, {})]
        assert [m[0] for m in ours] == [m[0] for m in theirs], name
        for (method, parameters), (_same, twin_parameters) in zip(ours, theirs, strict=True):
            if (name, method) not in PARAMETERS_DIFFER:
                assert parameters == twin_parameters, f"{name}.{method}"
            else:
                assert parameters != twin_parameters, f"{name}.{method} no longer differs"
        # every listed difference is real, so the lists stay honest
        names, twin_names = {m[0] for m in compiled[name]}, {m[0] for m in methods}
        assert set(ONLY_COMPILED.get(name, {})) <= names - twin_names, name
        assert set(ONLY_TWIN.get(name, {})) <= twin_names - names, name
