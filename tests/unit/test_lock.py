"""The lock files against pyproject.toml: every dependency is pinned with hashes, and the
runtime-only lock (the Dockerfile's) is the full lock's versions and hashes, not a second
resolution. A dependency added to pyproject.toml without ``scripts/lock`` fails here,
since bootstrap and the image install only what the lock lists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ;[^\\]*)? \\$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a `uv pip compile --generate-hashes` file."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    current = ""
    hashes: set[str] = set()
    for line in [*path.read_text().splitlines(), ""]:
        if match := PIN.match(line):
            current, version = _canonical(match[1]), match[2]
            hashes = set()
            pins[current] = (version, frozenset())
        elif line.strip().startswith("--hash=sha256:"):
            hashes.add(line.strip().split(":", 1)[1].rstrip(" \\"))
            pins[current] = (pins[current][0], frozenset(hashes))
    return pins


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_canonical(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def test_every_dependency_of_pyproject_is_locked_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _requirement_names(project["dependencies"] + project["optional-dependencies"]["dev"])
    pins = _pins(ROOT / "requirements.lock")
    assert wanted - set(pins) == set(), "run scripts/lock: pyproject.toml changed"
    assert all(hashes for _, hashes in pins.values())


def test_the_runtime_lock_is_the_full_locks_subset() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    full = _pins(ROOT / "requirements.lock")
    runtime = _pins(ROOT / "requirements-runtime.lock")
    assert _requirement_names(project["dependencies"]) <= set(runtime)
    assert {name: full[name] for name in runtime} == runtime
    assert "pytest" not in runtime and "mypy" not in runtime  # no dev tools in the image
