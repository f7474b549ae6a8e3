"""Judges a ``pip-audit --format json`` report of a lock file (``scripts/audit`` runs it).

pip-audit exits 0 and prints "No known vulnerabilities found" even when it could audit
nothing: a package it cannot look up (no route to the vulnerability database, a name the
service does not know) is only listed with a ``skip_reason``. This check passes only when
every package in the report was audited, there was at least one, and none has a known
vulnerability.

Exit codes: 0 all audited, none vulnerable; 1 known vulnerabilities; 2 not audited (some
or all packages skipped, an empty or unreadable report).

Usage: python3 scripts/audit_report.py REPORT.json LOCKFILE
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

OK, VULNERABLE, NOT_AUDITED = 0, 1, 2
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.M)
SHOWN = 5  # skipped packages named in the message; the rest are counted


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def judge(report: Any, locked: set[str]) -> tuple[int, list[str]]:
    """(exit code, lines to print) for a decoded report and the lock's package names."""
    deps = report.get("dependencies") if isinstance(report, dict) else None
    if not isinstance(deps, list):
        return NOT_AUDITED, ["audit: FAILED: pip-audit's report has no dependency list"]
    audited = [d for d in deps if isinstance(d, dict) and "skip_reason" not in d]
    skipped = [d for d in deps if isinstance(d, dict) and "skip_reason" in d]
    lines = []
    if skipped or not audited:
        lines.append(
            f"audit: FAILED: {len(skipped)} of {len(deps)} packages could not be audited, "
            f"{len(audited)} were; a pass over unaudited packages means nothing."
        )
        for dep in skipped[:SHOWN]:
            lines.append(f"  {dep.get('name')}: {dep.get('skip_reason')}")
        if len(skipped) > SHOWN:
            lines.append(f"  ... and {len(skipped) - SHOWN} more")
        lines.append(
            "  Most likely this machine cannot reach the vulnerability database (PyPI's "
            "JSON API, or OSV with --vulnerability-service osv); run scripts/audit where it "
            "can (docs/security.md, 'Auditing the dependencies')."
        )
        return NOT_AUDITED, lines
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            lines.append(f"  {dep['name']} {dep.get('version')}: {vuln.get('id')} ({fixed})")
    names = {_canonical(str(d.get("name"))) for d in deps}
    elsewhere = sorted(locked - names)  # markers for another interpreter or platform
    note = f"; not applicable here: {', '.join(elsewhere)}" if elsewhere else ""
    if vulnerable:
        count = sum(len(d["vulns"]) for d in vulnerable)
        lines.insert(0, f"audit: FAILED: {count} known vulnerabilities in {len(vulnerable)} "
                        f"of {len(audited)} audited packages:")  # fmt: skip
        return VULNERABLE, lines
    return OK, [f"audit: OK: all {len(audited)} packages audited, no known vulnerabilities"
                f"{note}"]  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return NOT_AUDITED
    report_path, lock_path = map(Path, argv)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        print(f"audit: FAILED: cannot read pip-audit's report {report_path}: {exc}")
        return NOT_AUDITED
    locked = {_canonical(name) for name in PIN.findall(lock_path.read_text())}
    code, lines = judge(report, locked)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
