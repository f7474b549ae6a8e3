#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian/Ubuntu machine, idempotently:
# redis-server (apt, only when missing), a virtualenv in .venv, the pinned dependencies
# from requirements.lock (sha256-checked: --require-hashes) and the package itself
# (editable, --no-deps: nothing unpinned comes in). Sourced by scripts/serve and
# scripts/test; scripts/test also calls ensure_venv for the other interpreters of its
# matrix (.venv-3.12, .venv-3.13), made only when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "bootstrap: installing redis-server with apt" >&2
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# ensure_venv DIR PYTHON: DIR holds PYTHON's virtualenv with the locked dependencies and
# the package. Reinstalls only when pyproject.toml or requirements.lock changed since.
ensure_venv() {
    local dir="$1" python="$2"
    if [ ! -x "$dir/bin/python" ]; then
        echo "bootstrap: creating $dir ($("$python" --version 2>&1))" >&2
        "$python" -m venv "$dir"
    fi
    local stamp
    stamp="$dir/.installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "bootstrap: installing Python dependencies into $dir" >&2
        "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$dir/bin/python" -m pip install -q --require-hashes -r requirements.lock
        "$dir/bin/python" -m pip install -q --no-deps -e .
        rm -f "$dir"/.installed-*
        touch "$stamp"
    fi
}

# find_python X.Y: the path of a Python X.Y interpreter (pythonX.Y on PATH, else pyenv's
# newest X.Y.*), or nothing.
find_python() {
    local found
    if found=$(command -v "python$1" 2>/dev/null); then
        echo "$found"
        return
    fi
    local candidate
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".*/bin/python; do
        [ -x "$candidate" ] && found="$candidate"
    done
    [ -n "${found:-}" ] && echo "$found"
    return 0
}

ensure_venv .venv "${PYTHON:-python3}"
