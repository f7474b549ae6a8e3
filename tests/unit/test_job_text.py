"""``runtime job``'s text and JSON, pinned (``cli_golden/job.txt``): completed, dead with a
traceback, queued after a failure, a recovered job, a corrupt record, a running job's progress
and cancel request, and a cancelled job; without Redis."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.cli.job import job_json, job_text
from runtime.jobs.progress import Progress
from runtime.jobs.records import JobRecord

GOLDEN = Path(__file__).parent / "cli_golden" / "job.txt"
T0 = 1_764_676_800_123  # 2025-12-02 12:00:00.123 UTC
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/functions/rows.py", line 12, in import_rows\n'
    "    row = parse_row(line)\n"
    '  File "/srv/functions/rows.py", line 5, in parse_row\n'
    '    raise ValueError(f"bad row {n}")\n'
    "ValueError: bad row 7\n"
)
RECORDS = {
    "completed": JobRecord("rows.1a2b", "rows", "completed", "default", 0, 0, T0,
                           T0 + 5, T0 + 42, result=b'{"imported":12}'),
    "dead, with its traceback": JobRecord(
        "rows.3c4d", "rows", "dead", "high", 3, 0, T0, T0 + 10, T0 + 2_000,
        reason="handler_error", error="ValueError: bad row 7", traceback=TRACEBACK),
    "delayed after a failure": JobRecord(
        "rows.5e6f", "rows", "delayed", "low", 1, 0, T0, T0 + 10, None,
        reason="timeout", error="attempt timed out"),
    "queued again after a crash": JobRecord(
        "rows.7a8b", "rows", "queued", "default", 0, 1, T0),
    "corrupt": JobRecord(
        "rows.9c0d", "rows", "completed", "default", 0, 0, T0, None, T0 + 1,
        result=b"{not json", corrupt="att: not an integer: b'x'"),
    "running, with progress and a cancel requested": JobRecord(
        "rows.1e2f", "rows", "running", "default", 0, 0, T0, T0 + 10, None,
        progress=Progress(0.425, "row 17 of 40", T0 + 900), cancel_requested_ms=T0 + 950),
    "cancelled": JobRecord(
        "rows.3a4b", "rows", "cancelled", "default", 0, 0, T0, T0 + 10, T0 + 1_200,
        reason="cancelled", error="cancelled on request", cancel_requested_ms=T0 + 950),
}  # fmt: skip


def transcript() -> str:
    parts = []
    for name, record in RECORDS.items():
        parts.append(f"# {name}\n$ runtime job {record.id}\n{job_text(record)}\n")
        encoded = json.dumps(job_json(record), indent=1, ensure_ascii=False)
        parts.append(f"$ runtime job {record.id} --json\n{encoded}\n")
    return "\n".join(parts)


def test_job_output_is_pinned() -> None:
    assert transcript() == GOLDEN.read_text()
