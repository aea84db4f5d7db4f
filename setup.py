"""Build the compiled core ``ringbus._ringbus`` from ``ext/_ringbus.pyx``.

``RINGBUS_NO_EXTENSIONS=1`` builds a pure-Python package; otherwise a failure
to cythonize or compile fails the build loudly (no silent fallback).
"""

from __future__ import annotations

import runpy
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
switch = runpy.run_path(str(HERE / "src" / "ringbus" / "_switch.py"))

if switch["extensions_disabled"]():
    print(f"{switch['SWITCH']} is on: building ringbus without its compiled core")
    ext_modules = []
else:
    from Cython.Build import cythonize  # a missing Cython fails the build here

    ext_modules = cythonize(
        [Extension("ringbus._ringbus", ["ext/_ringbus.pyx"])],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )

setup(ext_modules=ext_modules)
