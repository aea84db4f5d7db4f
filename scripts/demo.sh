#!/usr/bin/env bash
# Set up ringbus (compiled core) in .venv and run the demo world with its KPIs.
# Extra arguments go to `ringbus demo` (try --help, --days, --seed, --serve).
# The package is installed again only when its sources changed since the last
# install (a stamp in .venv records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_system.sh
python=${PYTHON:-python3}
sources_digest() {
    find pyproject.toml setup.py MANIFEST.in src ext -type f \
        \( -name '*.py' -o -name '*.pyx' -o -name '*.pyi' -o -name '*.pxd' -o -name '*.toml' \
        -o -name '*.in' -o -name '*.html' -o -name '*.js' -o -name '*.css' -o -name 'py.typed' \) \
        -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64
}
stamp=.venv/.ringbus-installed
digest="$("$python" -VV | tr -d '\n') $(sources_digest)"
if [ ! -x .venv/bin/ringbus ] || [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    ensure_system
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -U pip
    .venv/bin/pip install -q --disable-pip-version-check .
    .venv/bin/python -c "import ringbus; print(f'ringbus {ringbus.__version__}, core: {ringbus.BACKEND}')"
    echo "$digest" >"$stamp"
fi
exec .venv/bin/ringbus demo "$@"
