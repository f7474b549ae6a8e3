"""How the admin commands print for a person: tables, ages, one-line reports.

Pure functions of the structs in ``admin.py`` (the ``--json`` output is those structs as
they are), so the wording can be tested without Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from runtime.cli.table import table_lines
from runtime.queue.admin_stats import Stats
from runtime.queue.dlq import DlqFilter, DlqReport
from runtime.queue.peek import JobView, Peek

ELLIPSIS = "…"
TOTAL_COLUMNS = (
    "completed", "retried", "dead", "cancelled", "recovered", "stale_acks", "purged", "requeued",
)  # fmt: skip


def format_age(seconds: float | None) -> str:
    """``0.25`` → ``250ms``, ``75`` → ``1m15s``, ``7500`` → ``2h05m``, ``200000`` → ``2d07h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def one_line(text: str | None) -> str:
    """Collapse newlines and runs of spaces (a traceback in an error) to single spaces."""
    return " ".join((text or "").split())


def _rate(value: float) -> str:
    return f"{value:g}" if value < 100 else f"{value:.0f}"


def stats_text(stats: Stats) -> str:
    header = ("FUNCTION", "HIGH", "DEFAULT", "LOW", "DELAYED", "IN FLIGHT", "DEAD", "OLDEST",
              "DONE/MIN", "FAILED/MIN")  # fmt: skip
    rows: list[Sequence[str]] = [header]
    notes: list[str] = []
    for f in stats.functions:
        name = f.function if f.is_registered else f.function + "*"
        flight = f"{f.in_flight}/{f.max_in_flight}" if f.max_in_flight else str(f.in_flight)
        rows.append((
            name, str(f.ready["high"]), str(f.ready["default"]), str(f.ready["low"]),
            str(f.delayed), flight, str(f.dead), format_age(f.oldest_s),
            _rate(f.per_minute["completed"]), _rate(f.per_minute["failed"]),
        ))  # fmt: skip
        for instance, state in f.breakers.items():
            if state != "closed":
                notes.append(f"{f.function}: circuit breaker {state} on {instance}")
        if f.lease_expired:
            notes.append(
                f"{f.function}: {f.lease_expired} lease(s) expired, waiting for a reclaimer "
                "(a runtime died or stopped heartbeating)"
            )
    lines = table_lines(rows, right=frozenset(range(1, len(header))))
    if not stats.functions:
        lines = ["no functions: the functions folder has none; name some with --function"]
    totals: list[Sequence[str]] = [
        ("TOTALS", *(c.upper().replace("_", " ") for c in TOTAL_COLUMNS))
    ]
    for f in stats.functions:
        totals.append((f.function, *(str(f.totals.get(c, 0)) for c in TOTAL_COLUMNS)))
    out = [*lines, *notes]
    if stats.functions:
        out += ["", *table_lines(totals, right=frozenset(range(1, len(TOTAL_COLUMNS) + 1)))]
    out += [
        "",
        "DONE/MIN, FAILED/MIN: completions, and retries + dead letters, in the last 60 s",
        "OLDEST: the longest wait at the head of a lane; * not in the functions folder",
        stats.instances_note + ":",
    ]
    if stats.instances:
        rows_i: list[Sequence[str]] = [("ID", "HOST", "PID", "VERSION", "FUNCTIONS", "LAST BEAT")]
        for inst in stats.instances:
            rows_i.append((
                str(inst.get("id", "?")), str(inst.get("host", "?")), str(inst.get("pid", "?")),
                str(inst.get("version", "?")), ",".join(inst.get("functions", [])),
                format_age(inst.get("last_beat_s")),
            ))  # fmt: skip
        out += table_lines(rows_i)
    else:
        out.append("none")
    return "\n".join(out)


def payload_text(job: JobView) -> str:
    corrupt = f"<corrupt record: {job.corrupt}> " if job.corrupt is not None else ""
    if job.payload_error is not None:
        return f"{corrupt}<{job.payload_error}>"
    return corrupt + msgspec.json.encode(job.payload).decode()


def peek_text(peek: Peek, width: int) -> str:
    """One line per job, each cut to ``width`` columns (the payload takes what is left)."""
    where = "in the DLQ" if peek.source == "dlq" else "waiting (high, default, low)"
    order = "newest first" if peek.source == "dlq" else "in claim order"
    head = f"{peek.function}: {peek.total} {where}; showing {len(peek.jobs)}, {order}"
    if not peek.jobs:
        return head
    is_dlq = peek.source == "dlq"
    header = ["ID", "LANE", "ATT", "REC", "DEAD FOR" if is_dlq else "WAITING"]
    if is_dlq:
        header += ["REASON", "ERROR"]
    rows: list[list[str]] = [header]
    error_width = max(12, min(60, width // 4))  # the payload gets the rest; --json has it all
    for j in peek.jobs:
        row = [j.id, j.lane, str(j.attempts), str(j.recoveries), format_age(j.age_s)]
        if is_dlq:
            row += [j.reason or "-", truncate(one_line(j.error), error_width) or "-"]
        rows.append(row)
    lines = table_lines(rows, right=frozenset({2, 3}))
    prefix_width = max(len(line) for line in lines) + 2
    out = [truncate(head, width)]
    for i, line in enumerate(lines):
        payload = "PAYLOAD" if i == 0 else payload_text(peek.jobs[i - 1])
        room = max(width - prefix_width, 0)
        out.append(truncate(line.ljust(prefix_width) + truncate(payload, room), width))
    return "\n".join(out)


def tracebacks_text(peek: Peek) -> str:
    """``peek --traceback``: after the table, each job's last traceback, whole (indented)."""
    out: list[str] = []
    for j in peek.jobs:
        if j.traceback:
            out.append(f"\ntraceback of {j.id} ({j.reason or 'last failure'}):")
            out += ["  " + line for line in j.traceback.rstrip().splitlines()]
    return "\n".join(out) if out else "\n(no tracebacks: none of these jobs raised)"


def _reasons(report: DlqReport) -> str:
    if not report.by_reason:
        return ""
    parts = sorted(report.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    return " (" + ", ".join(f"{reason or 'no reason'} {n}" for reason, n in parts) + ")"


def filter_text(dlq_filter: DlqFilter) -> str:
    parts = []
    if dlq_filter.reasons:
        parts.append("reason " + " or ".join(dlq_filter.reasons))
    if dlq_filter.older_than_s > 0:
        parts.append(f"dead for over {format_age(dlq_filter.older_than_s)}")
    return ", ".join(parts) or "any reason, any age"


def report_text(report: DlqReport) -> str:
    verb = {"purge": ("purged", "would purge"), "requeue": ("requeued", "would requeue")}
    done, would = verb[report.action]
    if report.dlq_length == 0:
        return f"{report.function}: the DLQ is empty; nothing to {report.action}"
    jobs = "dead job" if report.matched == 1 else "dead jobs"
    if report.is_dry_run:
        line = (
            f"{report.function}: dry run: {would} {report.matched} {jobs}{_reasons(report)} "
            f"of {report.dlq_length} DLQ entries; nothing was changed"
        )
    else:
        line = f"{report.function}: {done} {report.matched} {jobs}{_reasons(report)}"
    extra = []
    if not report.is_dry_run:
        extra.append(f"{report.dlq_left} left in the DLQ")
    if report.stale:
        what = "would drop" if report.is_dry_run else "dropped"
        extra.append(f"{what} {report.stale} entries pointing at no dead job")
    calls = "call" if report.calls == 1 else "calls"
    ids = "id" if report.max_batch == 1 else "ids"
    extra.append(
        f"{report.calls} batch {calls} of at most {report.max_batch} {ids}, slowest "
        f"{report.max_call_ms:.1f} ms, {report.elapsed_s:.2f} s in all"
    )
    lines = [line + "; " + "; ".join(extra)]
    if report.is_dry_run and report.sample:
        lines.append("  first matches: " + ", ".join(f"{m.id} ({m.reason})" for m in report.sample))
    return "\n".join(lines)
