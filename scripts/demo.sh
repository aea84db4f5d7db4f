#!/usr/bin/env bash
# Set up ringbus (compiled core) in .venv and run the demo world with its KPIs.
# Extra arguments go to `ringbus demo` (try --help, --days, --seed, --serve).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_system.sh
ensure_system
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -U pip
.venv/bin/pip install -q --disable-pip-version-check .
.venv/bin/python -c "import ringbus; print(f'ringbus {ringbus.__version__}, core: {ringbus.BACKEND}')"
exec .venv/bin/ringbus demo "$@"
