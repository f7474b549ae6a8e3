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

# ensure_test_tools: what the test suite drives besides Redis, from apt when missing:
# promtool and prometheus (tests/integration/test_prometheus.py), headless Chromium and its
# driver (tests/integration/test_console.py). Called by scripts/test only, not by serve.
# The packages' services are not started (a policy-rc.d refusing every start while apt
# runs); the tests start their own processes and stop them by pid.
ensure_test_tools() {
    local missing=()
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "bootstrap: installing ${missing[*]} with apt (for the tests)" >&2
    local sudo="" policy=/usr/sbin/policy-rc.d made_policy=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        made_policy=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
}

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
    if [ ! -f "$stamp" ] && [ -L "$dir" ]; then
        # A link to another checkout's virtualenv (a git worktree sharing one): installing
        # here would point its editable package at this checkout. Use it as it is.
        echo "bootstrap: $dir is a link to $(readlink "$dir"); not reinstalling into it" >&2
    elif [ ! -f "$stamp" ]; then
        echo "bootstrap: installing Python dependencies into $dir" >&2
        "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$dir/bin/python" -m pip install -q --require-hashes -r requirements.lock
        "$dir/bin/python" -m pip install -q --no-deps -e .
        rm -f "$dir"/.installed-*
        touch "$stamp"
    fi
}

# find_python X.Y: the path of a working Python X.Y (pythonX.Y on PATH, else pyenv's
# newest X.Y.*), or nothing. Each candidate is run: a pyenv shim for a version that is
# installed but not selected exists on PATH and fails.
find_python() {
    local candidate check="import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$1'.split('.'))))"
    local candidates=()
    if candidate=$(command -v "python$1" 2>/dev/null); then candidates+=("$candidate"); fi
    for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".* 2>/dev/null | sort -rV); do
        candidates+=("$candidate/bin/python")
    done
    for candidate in "${candidates[@]}"; do
        if "$candidate" -c "$check" >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 0
}

ensure_venv .venv "${PYTHON:-python3}"
