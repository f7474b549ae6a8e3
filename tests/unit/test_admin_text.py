"""The admin commands' parsing and wording, without Redis."""

from __future__ import annotations

import pytest

from runtime.cli.admin_text import (
    filter_text,
    format_age,
    one_line,
    peek_text,
    report_text,
    stats_text,
    truncate,
)
from runtime.cli.argtypes import parse_duration, parse_rate
from runtime.queue.admin_stats import FunctionStats, Stats
from runtime.queue.dlq import DlqFilter, DlqMatch, DlqReport
from runtime.queue.peek import JobView, Peek


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604_800), ("1h30m", 5400),
     ("1w", 604_800), ("250ms", 0.25), ("1.5h", 5400), (" 2H ", 7200)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "90", "2x", "h", "-1h", "1h 30", "1y"])
def test_bad_durations_name_the_value_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90s, 30m, 2h, 7d") as exc:
        parse_duration(text)
    assert repr(text) in str(exc.value)


@pytest.mark.parametrize(
    ("text", "per_s"),
    [("50/s", 50), ("300/m", 5), ("3600/h", 1), ("0.5/s", 0.5), ("10 / min", 10 / 60)],
)
def test_rates(text: str, per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["50", "0/s", "50/d", "fast", "/s", "-5/s"])
def test_bad_rates_name_the_value_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a rate like 50/s, 300/m or 1000/h") as exc:
        parse_rate(text)
    assert repr(text) in str(exc.value)


def test_ages_and_truncation() -> None:
    assert [format_age(s) for s in (None, 0.25, 42, 75, 7500, 200_000)] == [
        "-", "250ms", "42s", "1m15s", "2h05m", "2d07h",
    ]  # fmt: skip
    assert truncate("abcdef", 6) == "abcdef"
    assert truncate("abcdefg", 6) == "abcde…"
    assert one_line("Traceback:\n  File 'x'\tline 3\n") == "Traceback: File 'x' line 3"
    assert filter_text(DlqFilter()) == "any reason, any age"
    assert filter_text(DlqFilter(("timeout", "rejected"), 7200)) == (
        "reason timeout or rejected, dead for over 2h00m"
    )


def _stats(**overrides: object) -> FunctionStats:
    values: dict[str, object] = {
        "function": "hello", "is_registered": True,
        "ready": {"high": 1, "default": 20, "low": 0}, "delayed": 3, "in_flight": 4,
        "max_in_flight": 32, "lease_expired": 0, "dead": 7,
        "oldest_wait_s": {"high": 2.0, "default": 75.0, "low": None},
        "per_minute": {"completed": 120.0, "retried": 1.0, "dead": 0.5, "recovered": 0.0,
                       "failed": 1.5},
        "totals": {"completed": 900, "dead": 7},
    }  # fmt: skip
    values.update(overrides)
    return FunctionStats(**values)  # type: ignore[arg-type]


def test_stats_table() -> None:
    stats = Stats(0, [_stats(), _stats(function="ghost", is_registered=False, max_in_flight=None,
                                       lease_expired=2)])  # fmt: skip
    lines = stats_text(stats).splitlines()
    assert lines[1].split() == ["hello", "1", "20", "0", "3", "4/32", "7", "1m15s", "120", "1.5"]
    assert lines[2].split()[:6] == ["ghost*", "1", "20", "0", "3", "4"]
    assert "ghost: 2 lease(s) expired, waiting for a reclaimer" in lines[3]
    assert lines[-2:] == ["runtime instances: those that beat in the last 15 s:", "none"]
    instance = {"id": "h-1-ab", "host": "h", "pid": 1, "version": "0.1.0",
                "functions": ["hello"], "last_beat_s": 1.2}  # fmt: skip
    with_fleet = stats_text(Stats(0, [_stats()], instances=[instance])).splitlines()
    assert with_fleet[-1].split()[:5] == ["h-1-ab", "h", "1", "0.1.0", "hello"]
    assert "no functions" in stats_text(Stats(0, []))
    opened = stats_text(Stats(0, [_stats(breakers={"h:1": "open", "h:2": "closed"})]))
    assert "hello: circuit breaker open on h:1" in opened
    assert "h:2" not in opened


def test_peek_lines_fit_the_width() -> None:
    jobs = [
        JobView("hello.1", "default", "dead", 3, 1, 7300.0, 1, 2, "timeout",
                "Traceback (most recent call last):\n  File ...\nValueError: " + "x" * 80,
                payload={"name": "y" * 300}),
        JobView("hello.2", "high", None, 0, 0, None, None, None, None, None,
                payload_error="no job record for this id"),
    ]  # fmt: skip
    text = peek_text(Peek("hello", "dlq", 0, 9, jobs), 120)
    lines = text.splitlines()
    assert lines[0] == "hello: 9 in the DLQ; showing 2, newest first"
    assert all(len(line) <= 120 for line in lines)
    assert "  timeout  Traceback (most recent call l…  {" in lines[2]  # error: one line, cut
    assert lines[2].endswith("…") and len(lines[2]) == 120
    assert lines[3].endswith("<no job record for this id>")


def test_report_wording() -> None:
    report = DlqReport("hello", "purge", False, 12, scanned=12, matched=10, kept=2, stale=0,
                       dlq_left=2, by_reason={"timeout": 3, "rejected": 7}, calls=1,
                       max_batch=12, max_call_ms=0.8, elapsed_s=0.01)  # fmt: skip
    assert report_text(report).startswith(
        "hello: purged 10 dead jobs (rejected 7, timeout 3); 2 left in the DLQ; 1 batch call"
    )
    dry = DlqReport("hello", "requeue", True, 5, scanned=5, matched=1, by_reason={"": 1},
                    sample=[DlqMatch("hello.a", "")], calls=1, max_batch=5)  # fmt: skip
    text = report_text(dry)
    assert text.startswith("hello: dry run: would requeue 1 dead job (no reason 1) of 5 DLQ")
    assert "nothing was changed" in text and "first matches: hello.a ()" in text
    empty = DlqReport("hello", "purge", False, 0)
    assert report_text(empty) == "hello: the DLQ is empty; nothing to purge"
