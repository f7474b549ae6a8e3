"""What a suite run hands back: one ``ScenarioReport`` per scenario, printed as a table and
written as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos.suite.checker import Figures
from chaos.suite.stage import Check


@dataclass
class ScenarioReport:
    number: int
    title: str
    proves: str
    wall_s: float
    figures: Figures | None
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    known_gap: str | None = None
    logs: str = ""  # tails of the runtimes' logs, kept when the scenario fails

    @property
    def is_passed(self) -> bool:
        return self.figures is not None and all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        if self.is_passed:
            return "PASS"
        return "KNOWN GAP" if self.known_gap else "FAIL"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["figures"] = self.figures.to_json() if self.figures else None
        out["verdict"] = self.verdict
        return out


COLUMNS = (
    ("#", 2),
    ("scenario", 26),
    ("accepted", 8),
    ("completed", 9),
    ("dead", 16),
    ("lost", 4),
    ("dup/bound", 9),
    ("dbl", 3),
    ("left", 4),
    ("recov s", 7),
    ("hit done s", 10),
    ("ready s", 7),
    ("p95 ms", 6),
    ("wall s", 6),
    ("verdict", 9),
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(r: ScenarioReport) -> list[str]:
    f = r.figures
    if f is None:
        return [str(r.number), r.title, *["-"] * 11, f"{r.wall_s:.1f}", r.verdict]
    dead = ",".join(f"{n} {reason}" for reason, n in sorted(f.dead.items())) or "0"
    return [
        str(r.number),
        r.title,
        str(f.accepted),
        str(f.completed),
        dead,
        str(f.lost),
        f"{f.extra_starts}/{f.bound}",
        str(f.double_completions),
        str(sum(f.leftovers.values())),
        _seconds(f.recovery_s),
        _seconds(f.hit_done_s),
        _seconds(f.ready_s),
        "-" if f.p95_ms is None else f"{f.p95_ms:.0f}",
        f"{r.wall_s:.1f}",
        r.verdict,
    ]


def table(reports: Sequence[ScenarioReport]) -> str:
    rows = [[name for name, _ in COLUMNS], *(_row(r) for r in reports)]
    widths = [max(w, *(len(row[i]) for row in rows)) for i, (_, w) in enumerate(COLUMNS)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(reports: Sequence[ScenarioReport]) -> str:
    """Failed checks, known gaps and notes, under the table."""
    out: list[str] = []
    for r in reports:
        failed = [c for c in r.checks if not c.ok]
        if not failed and not r.notes and r.is_passed:
            continue
        out.append(f"[{r.number}] {r.title}: {r.verdict}")
        out += [f"    FAILED {c.name}: {c.detail}" for c in failed]
        if r.known_gap and not r.is_passed:
            out.append(f"    known gap: {r.known_gap}")
        out += [f"    note: {n}" for n in r.notes]
    return "\n".join(out)


def write_json(path: Path, reports: Sequence[ScenarioReport], **meta: Any) -> None:
    body = {**meta, "scenarios": [r.to_json() for r in reports]}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
