# Sourced by scripts/demo.sh and scripts/test.sh: install the Debian packages
# a fresh machine lacks (a compiler and headers for the extension, venv, and
# the real services the tests talk to). Usage: ensure_system [extra command...]
ensure_system() {
    local python=${PYTHON:-python3}
    local missing=()
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    "$python" - <<'PY' >/dev/null 2>&1 || missing+=(python3-dev)
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
PY
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        echo "== installing system packages: ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
