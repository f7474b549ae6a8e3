#!/usr/bin/env bash
# Install the peer task queues that `benchmarks/run.py --peers` compares against into their
# own virtualenv, benchmarks/.venv-peers, so they never become dependencies of the project.
# Versions are pinned so that figures stay comparable between runs; hiredis is installed
# because the runtime uses it too (redis-py picks it up by itself); saq 0.26.4 imports
# typing_extensions without declaring it. Safe to run twice.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
printf '*\n' >"$venv/.gitignore"  # git ignores the whole virtualenv (as Python 3.13's venv does)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "arq==0.28.0" "saq[redis,hiredis]==0.26.4" "dramatiq[redis]==2.2.1" "hiredis>=3" \
    typing_extensions
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
print("peers:", ", ".join(f"{p} {md.version(p)}" for p in ("arq", "saq", "dramatiq", "redis")))
PY
