"""Outcomes: backoff with injected randomness, ``classify`` of every kind of handler ending,
``describe``, and the worker's decision that turns a failed last attempt into a dead letter."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from runtime.config.schema import WorkerSettings
from runtime.errors import PayloadTooLarge, Reject, Retry
from runtime.execution.process_pool import RemoteError
from runtime.execution.worker import FunctionWorker
from runtime.function import Backoff, function, inspect_handler
from runtime.jobs.outcome import (
    MAX_ERROR_CHARS,
    MAX_TRACEBACK_BYTES,
    Completed,
    Crashed,
    DeadLetter,
    Failed,
    Outcome,
    backoff_delay_s,
    bounded_tail,
    classify,
    describe,
    handler_raised,
)
from runtime.jobs.records import ClaimedJob
from runtime.jobs.settle import Complete, RetryLater, SendToDlq, SettleEntry, WorkerCrashed

# -- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (7, 10.0), (50, 10.0)],
)
def test_rand_one_gives_the_exponential_ceiling_capped_at_max(attempt: int, ceiling: float) -> None:
    backoff = Backoff(base_s=0.5, max_s=10.0)
    assert backoff_delay_s(attempt, backoff, rand=lambda: 1.0) == ceiling


def test_rand_zero_gives_no_delay() -> None:
    backoff = Backoff(base_s=3.0, max_s=100.0)
    assert [backoff_delay_s(n, backoff, rand=lambda: 0.0) for n in (1, 2, 10)] == [0.0] * 3


def test_full_jitter_scales_the_ceiling_by_rand() -> None:
    backoff = Backoff(base_s=2.0, max_s=300.0)
    assert backoff_delay_s(3, backoff, rand=lambda: 0.25) == 2.0  # 0.25 * 2 * 2**2


def test_huge_attempt_numbers_do_not_overflow() -> None:
    backoff = Backoff(base_s=1.0, max_s=300.0)
    assert backoff_delay_s(10_000, backoff, rand=lambda: 1.0) == 300.0


def test_zero_base_never_waits() -> None:
    assert backoff_delay_s(9, Backoff(base_s=0.0, max_s=60.0), rand=lambda: 1.0) == 0.0


def test_default_randomness_stays_within_the_ceiling() -> None:
    delays = [backoff_delay_s(3, Backoff(base_s=1.0, max_s=60.0)) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 1  # jittered, not a constant


# -- classify --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (Retry(), Failed("handler_error", "Retry: retry requested", None)),
        (Retry(delay_s=2.5, reason="busy"), Failed("handler_error", "Retry: busy", 2.5)),
        (Retry(delay_s=0), Failed("handler_error", "Retry: retry requested", 0)),
        (Reject("bad input"), DeadLetter("rejected", "bad input", is_attempt=True)),
        (Reject(), DeadLetter("rejected", "rejected by handler")),
        (TimeoutError(), Failed("timeout", "attempt timed out")),
        (ValueError("boom"), Failed("handler_error", "ValueError: boom")),
        (KeyError("k"), Failed("handler_error", "KeyError: 'k'")),
        (RuntimeError(), Failed("handler_error", "RuntimeError")),
        (SystemExit(3), Failed("handler_error", "SystemExit: 3")),
        (RemoteError("ZeroDivisionError", "division by zero"),
         Failed("handler_error", "ZeroDivisionError: division by zero")),
        (PayloadTooLarge("f: payload is 9 bytes, over max_payload_bytes=1"),
         DeadLetter("payload_too_large",
                    "PayloadTooLarge: f: payload is 9 bytes, over max_payload_bytes=1",
                    is_attempt=False)),
        (msgspec.ValidationError("Expected `int`, got `str`"),
         DeadLetter("decode_error", "ValidationError: Expected `int`, got `str`",
                    is_attempt=False)),
        (msgspec.DecodeError("truncated"),
         DeadLetter("decode_error", "DecodeError: truncated", is_attempt=False)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)  # fmt: skip
def test_classify(exc: BaseException, outcome: Outcome) -> None:
    assert _without_traceback(classify(exc)) == outcome


def _without_traceback(outcome: Outcome) -> Outcome:
    """The outcome with its traceback blanked (tested on its own below)."""
    if isinstance(outcome, Failed | DeadLetter):
        return msgspec.structs.replace(outcome, traceback="")
    return outcome


class _Custom(BaseException):
    pass


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (TimeoutError("slow API"),
         Failed("handler_error", "TimeoutError: slow API (raised by the handler)")),
        (KeyboardInterrupt(), Failed("handler_error", "KeyboardInterrupt")),
        (asyncio.CancelledError(), Failed("handler_error", "CancelledError")),
        (GeneratorExit(), Failed("handler_error", "GeneratorExit")),
        (_Custom("odd"), Failed("handler_error", "_Custom: odd")),
        (Reject("no"), DeadLetter("rejected", "no")),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)  # fmt: skip
def test_what_a_handler_raised_is_a_handler_error(exc: BaseException, outcome: Outcome) -> None:
    assert _without_traceback(handler_raised(exc)) == outcome


def test_retry_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError, match=r"delay_s must be >= 0"):
        Retry(delay_s=-1)


def test_handler_signals_are_not_runtime_failures() -> None:
    # An infrastructure `except RuntimeFailure` must never swallow a handler's signal.
    from runtime.errors import HandlerSignal, RuntimeFailure

    for signal in (Retry(), Reject()):
        assert isinstance(signal, HandlerSignal)
        assert not isinstance(signal, RuntimeFailure)


def test_long_reasons_and_errors_are_truncated() -> None:
    long = "x" * (MAX_ERROR_CHARS * 3)
    assert classify(Reject(long)) == DeadLetter("rejected", long[:MAX_ERROR_CHARS])
    failed = classify(Retry(reason=long))
    assert isinstance(failed, Failed)
    assert len(failed.error) == MAX_ERROR_CHARS
    assert failed.error.startswith("Retry: xxx")
    failed = classify(ValueError(long))
    assert isinstance(failed, Failed)
    assert failed.error == ("ValueError: " + long)[:MAX_ERROR_CHARS]


# -- describe --------------------------------------------------------------------------------


def test_describe_is_type_and_message() -> None:
    assert describe(ValueError("bad value")) == "ValueError: bad value"
    assert describe(ValueError()) == "ValueError"


def test_describe_never_includes_a_traceback() -> None:
    def fail() -> None:
        raise OSError("disk full")

    try:
        fail()
    except OSError as exc:
        text = describe(exc)
    assert text == "OSError: disk full"


def test_describe_keeps_a_remote_error_as_the_child_wrote_it() -> None:
    assert describe(RemoteError("KeyError", "'name'")) == "KeyError: 'name'"
    assert describe(RemoteError("StopIteration")) == "StopIteration"


def test_describe_truncates() -> None:
    assert describe(ValueError("y" * 10_000)) == ("ValueError: " + "y" * 10_000)[:MAX_ERROR_CHARS]
    assert len(describe(RemoteError("E", "z" * 10_000))) == MAX_ERROR_CHARS


# -- what the worker settles: attempts left, or exhausted -> DLQ -----------------------------
# classify() does not know the attempt number; the worker's Settler.entry turns an Outcome
# and the job's attempt count into the settle operation (C/R/D/K). No broker call is made.


@function(max_attempts=3, max_recoveries=2, backoff=(1.0, 4.0))
async def _handler(event: int) -> int:
    return event


def settle(outcome: Outcome, failed_attempts: int) -> SettleEntry:
    worker = FunctionWorker(inspect_handler(_handler), None, WorkerSettings())  # type: ignore[arg-type]
    job = ClaimedJob(
        id="_handler.1", token="7", envelope=b"", attempts=failed_attempts, recoveries=0,
        ready_ms=0,
    )  # fmt: skip
    return worker._settler.entry(job, outcome)


def test_completed_is_settled_with_its_result() -> None:
    assert settle(Completed(b'{"ok":1}'), 0) == Complete("_handler.1", "7", b'{"ok":1}')


@pytest.mark.parametrize("failed_attempts", [0, 1])
def test_failure_with_attempts_left_is_retried_within_the_backoff(failed_attempts: int) -> None:
    entry = settle(Failed("handler_error", "ValueError: x"), failed_attempts)
    assert isinstance(entry, RetryLater)
    assert (entry.op, entry.error, entry.reason) == ("R", "ValueError: x", "handler_error")
    ceiling_ms = 1000 * backoff_delay_s(failed_attempts + 1, Backoff(1.0, 4.0), rand=lambda: 1.0)
    assert 0 <= entry.delay_ms <= ceiling_ms


def test_retry_delay_from_the_handler_wins_over_backoff() -> None:
    entry = settle(classify(Retry(delay_s=2.5)), 0)
    assert isinstance(entry, RetryLater)
    assert (entry.op, entry.delay_ms) == ("R", 2500)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [(ValueError("x"), "handler_error"), (TimeoutError(), "timeout"), (Retry(), "handler_error")],
)
def test_failure_on_the_last_attempt_is_dead_lettered(exc: BaseException, reason: str) -> None:
    outcome = classify(exc)
    entry = settle(outcome, failed_attempts=2)  # this is attempt 3 of max_attempts=3
    assert isinstance(outcome, Failed)
    assert entry == SendToDlq(
        "_handler.1", "7", reason, outcome.error, is_attempt=True, traceback=outcome.traceback
    )


def test_reject_is_dead_lettered_on_the_first_attempt() -> None:
    entry = settle(classify(Reject("no")), failed_attempts=0)
    assert entry == SendToDlq("_handler.1", "7", "rejected", "no", is_attempt=True)


def test_decode_error_does_not_count_as_an_attempt() -> None:
    entry = settle(classify(msgspec.ValidationError("bad")), failed_attempts=0)
    assert isinstance(entry, SendToDlq)
    assert (entry.op, entry.reason, entry.is_attempt) == ("D", "decode_error", False)


def test_crash_is_a_recovery_bounded_by_max_recoveries() -> None:
    entry = settle(Crashed("handler process died"), failed_attempts=0)
    assert entry == WorkerCrashed("_handler.1", "7", 2, "handler process died")


# -- tracebacks (issue 14) -------------------------------------------------------------------


def _raise_in_handler(depth: int) -> None:
    if depth:
        _raise_in_handler(depth - 1)
    raise ValueError("bad row 7")


def _caught_from(depth: int) -> BaseException:
    try:
        _raise_in_handler(depth)
    except ValueError as exc:
        return exc
    raise AssertionError("did not raise")


def test_a_handler_error_carries_its_traceback() -> None:
    outcome = classify(_caught_from(0))
    assert isinstance(outcome, Failed)
    assert outcome.traceback.startswith("Traceback (most recent call last):")
    assert "_raise_in_handler" in outcome.traceback
    assert outcome.traceback.rstrip().endswith("ValueError: bad row 7")
    own_timeout = handler_raised(TimeoutError("slow API"))
    assert isinstance(own_timeout, Failed) and "TimeoutError: slow API" in own_timeout.traceback


def test_signals_and_runtime_decisions_carry_no_traceback() -> None:
    for exc in (Retry(), Reject("no"), TimeoutError(), msgspec.DecodeError("x")):
        outcome = classify(exc)
        assert isinstance(outcome, Failed | DeadLetter)
        assert outcome.traceback == ""


def _chained(n: int) -> BaseException:
    """An exception with ``n`` causes: a traceback far longer than the bound."""
    try:
        if n:
            raise ValueError("bad row 7") from _chained(n - 1)
        raise KeyError(f"cause {n}")
    except Exception as exc:
        return exc


def test_a_deep_traceback_keeps_its_tail_within_the_bound() -> None:
    outcome = classify(_chained(100))
    assert isinstance(outcome, Failed)
    assert len(outcome.traceback.encode()) <= MAX_TRACEBACK_BYTES
    assert outcome.traceback.startswith("[... cut")
    assert outcome.traceback.rstrip().endswith("ValueError: bad row 7")  # the tail is kept


def test_a_child_process_traceback_is_kept_as_the_child_wrote_it() -> None:
    remote = RemoteError("ZeroDivisionError", "division by zero", traceback="Traceback: child\n")
    outcome = classify(remote)
    assert isinstance(outcome, Failed)
    assert outcome.traceback == "Traceback: child\n"


def test_bounded_tail_never_splits_a_character() -> None:
    text = "é" * 10_000
    cut = bounded_tail(text, 1000)
    assert len(cut.encode()) <= 1000
    assert cut.endswith("é" * 100)


def test_each_failed_attempt_logs_one_warning_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome = classify(_caught_from(0))
    with caplog.at_level(logging.INFO, logger="runtime.worker"):
        settle(outcome, failed_attempts=0)  # attempt 1 of 3: retried
        settle(outcome, failed_attempts=2)  # attempt 3 of 3: dead-lettered
        settle(Completed(b"1"), 0)  # a success logs nothing
    records = [r for r in caplog.records if r.name == "runtime.worker"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    first, last = (r.getMessage() for r in records)
    assert "job _handler.1 attempt 1 failed (handler_error): ValueError: bad row 7" in first
    assert "retry in" in first
    assert "attempt 3 failed" in last and "dead-lettered" in last
    for record in records:
        assert getattr(record, "job_id", None) == "_handler.1"
        assert "_raise_in_handler" in getattr(record, "traceback", "")


def test_log_tracebacks_off_keeps_the_line_and_drops_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = WorkerSettings(log_tracebacks=False)
    worker = FunctionWorker(inspect_handler(_handler), None, settings)  # type: ignore[arg-type]
    job = ClaimedJob("_handler.1", "7", b"", 0, 0, 0)
    with caplog.at_level(logging.INFO, logger="runtime.worker"):
        entry = worker._settler.entry(job, classify(_caught_from(0)))
    (record,) = [r for r in caplog.records if r.name == "runtime.worker"]
    assert "attempt 1 failed" in record.getMessage()
    assert not hasattr(record, "traceback")
    assert isinstance(entry, RetryLater) and "_raise_in_handler" in entry.traceback  # stored


def test_the_text_log_puts_the_traceback_after_the_job_fields() -> None:
    from runtime.observe.logs import TextFormatter

    record = logging.LogRecord("runtime.worker", logging.WARNING, "", 0, "f: failed", None, None)
    record.job_id, record.function, record.attempt = "f.1", "f", 2
    record.traceback = "Traceback (most recent call last):\n  ...\nValueError: x"
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("f: failed [function=f job_id=f.1 attempt=2]")
    assert rest == ["Traceback (most recent call last):", "  ...", "ValueError: x"]


def test_the_json_log_carries_the_traceback_as_a_field() -> None:
    import json

    from runtime.observe.logs import JsonFormatter

    record = logging.LogRecord("runtime.worker", logging.WARNING, "", 0, "f: failed", None, None)
    record.job_id, record.traceback = "f.1", "Traceback (most recent call last):\nValueError: x"
    out = json.loads(JsonFormatter().format(record))
    assert (out["msg"], out["job_id"]) == ("f: failed", "f.1")
    assert out["traceback"] == "Traceback (most recent call last):\nValueError: x"
