"""``scripts/audit`` over a fake pip-audit: it passes only when every package was audited
and none is vulnerable, and never reports success over packages that could not be audited
(what the real pip-audit does on a machine without a route to its database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE = f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
report = os.environ["FAKE_REPORT"]
if report:
    with open(args[args.index("--output") + 1], "w") as out:
        out.write(report)
print("No known vulnerabilities found", file=sys.stderr)  # what the real one says
sys.exit(int(os.environ["FAKE_STATUS"]))
"""
AUDITED = {"name": "aiohttp", "version": "3.14.5", "vulns": []}
SKIPPED = {
    "name": "msgspec",
    "skip_reason": "Dependency not found on PyPI and could not be audited: msgspec (0.20.0)",
}
VULN = {"id": "PYSEC-2099-1", "fix_versions": ["3.14.6"], "aliases": [], "description": "x"}


def audit(tmp_path: Path, report: Any, status: int = 0) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "pip-audit"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    lock = tmp_path / "requirements.lock"
    lock.write_text("aiohttp==3.14.5 \\\n    --hash=sha256:00\nmsgspec==0.20.0 \\\n")
    text = report if isinstance(report, str) else json.dumps(report)
    env = {**os.environ, "PIP_AUDIT": str(fake), "FAKE_REPORT": text, "FAKE_STATUS": str(status)}
    return subprocess.run(
        [str(ROOT / "scripts" / "audit"), str(lock)],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_all_audited_and_clean_passes(tmp_path: Path) -> None:
    done = audit(tmp_path, {"dependencies": [AUDITED, {**AUDITED, "name": "msgspec"}]})
    assert (done.returncode, done.stdout) == (
        0,
        "audit: OK: all 2 packages audited, no known vulnerabilities\n",
    )


@pytest.mark.parametrize("deps", [[SKIPPED, {**SKIPPED, "name": "aiohttp"}], [AUDITED, SKIPPED]])
def test_any_package_not_audited_fails_though_pip_audit_says_all_is_well(
    tmp_path: Path, deps: list[dict[str, Any]]
) -> None:
    done = audit(tmp_path, {"dependencies": deps, "fixes": []})
    assert done.returncode == 2
    skipped = sum("skip_reason" in d for d in deps)
    assert done.stdout.startswith(f"audit: FAILED: {skipped} of {len(deps)} packages could not")
    assert "msgspec: Dependency not found on PyPI" in done.stdout
    assert "cannot reach the vulnerability database" in done.stdout
    assert "No known vulnerabilities found" not in done.stdout + done.stderr


def test_zero_packages_is_not_a_pass(tmp_path: Path) -> None:
    done = audit(tmp_path, {"dependencies": [], "fixes": []})
    assert done.returncode == 2 and "0 of 0 packages" in done.stdout


def test_a_known_vulnerability_fails_and_is_named(tmp_path: Path) -> None:
    report = {"dependencies": [{**AUDITED, "vulns": [VULN]}, {**AUDITED, "name": "msgspec"}]}
    done = audit(tmp_path, report, status=1)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "audit: FAILED: 1 known vulnerabilities in 1 of 2 audited packages:",
        "  aiohttp 3.14.5: PYSEC-2099-1 (3.14.6)",
    ]


@pytest.mark.parametrize(("report", "status"), [("", 1), ("not json", 0), ("", 0), ("{}", 0)])
def test_a_crash_or_an_unreadable_report_fails(tmp_path: Path, report: str, status: int) -> None:
    done = audit(tmp_path, report, status=status)
    assert done.returncode == 2
    assert "audit: FAILED" in done.stdout + done.stderr
