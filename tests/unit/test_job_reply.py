"""``as_job``: a claimed job's reply parsed totally; the one-check path for replies as the
scripts write them gives what the field-by-field parse gives."""

from __future__ import annotations

import msgspec
import pytest

from runtime.jobs.records import MAX_INT, ClaimedJob, Invalid, as_job

ENV = b'{"v":1}'


def as_bytes(reply: list[object]) -> list[object]:
    """The same reply with every integer as ASCII digits, as a hash field comes."""
    return [str(v).encode() if type(v) is int else v for v in reply]


def as_str(reply: list[object]) -> list[object]:
    """The same reply with every field as str (but bytes that are not UTF-8): only the
    field-by-field parse takes it."""
    return [_text(v) if type(v) is bytes else v if v is None else str(v) for v in reply]


def _text(raw: bytes) -> object:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


@pytest.mark.parametrize(
    "reply",
    [
        [b"hello.a1", 1, ENV, 0, 0, 0],
        [b"hello.a1", 7, ENV, 3, 2, 1_764_700_000_000],
        [b"hello.a1", 7, ENV, 3, None, 1_764_700_000_000],  # a field the hash lacks: nil
        [b"hello.\xc3\xa9", MAX_INT, b"", MAX_INT, MAX_INT, MAX_INT],
    ],
)
def test_a_script_reply_parses_as_its_digits_do(reply: list[object]) -> None:
    fast = as_job(reply)
    assert isinstance(fast, ClaimedJob)
    assert fast == as_job(as_bytes(reply))
    slow = as_job(as_str(reply))
    assert isinstance(slow, ClaimedJob)
    assert fast == msgspec.structs.replace(slow, envelope=fast.envelope)  # str: no envelope
    assert (
        fast.token == str(reply[1])
        and fast.attempts == reply[3]
        and fast.recoveries == (reply[4] or 0)
    )


@pytest.mark.parametrize(
    "reply",
    [
        [b"hello.a1", 0, ENV, 0, 0, 0],  # a token starts at 1
        [b"hello.a1", 1, ENV, -1, 0, 0],
        [b"hello.a1", 1, ENV, 0, -5, 0],
        [b"hello.a1", 1, ENV, 0, 0, -1],
        [b"hello.a1", MAX_INT + 1, ENV, 0, 0, 0],
        [b"hello.a1", 1, ENV, b"+1", 0, 0],  # int() would take these: a count does not
        [b"hello.a1", 1, ENV, b" 1", 0, 0],
        [b"hello.a1", 1, ENV, b"1_0", 0, 0],
        [b"hello.a1", 1, ENV, "١".encode(), 0, 0],  # an Arabic-Indic one
        [b"hello.a1", 1, ENV, MAX_INT + 1, 0, 0],
        [b"\xff\xfe", 1, ENV, 0, 0, 0],  # not UTF-8
        [b"hello.a1", True, ENV, 0, 0, 0],
        [b"hello.a1", 1, ENV, 0, 0],
        "not a list",
    ],
)
def test_a_bad_reply_is_invalid_whichever_way_it_is_parsed(reply: object) -> None:
    assert isinstance(as_job(reply), Invalid)
    if isinstance(reply, list):
        assert isinstance(as_job(as_bytes(reply)), Invalid)
        assert isinstance(as_job(as_str(reply)), Invalid)


def test_a_missing_envelope_or_count_reads_as_empty_or_zero() -> None:
    job = as_job([b"hello.a1", 1, None, None, b"", 5])
    assert job == ClaimedJob("hello.a1", "1", b"", 0, 0, 5)
    assert as_job([b"hello.a1", 1, 42, 0, 0, 5]) == ClaimedJob("hello.a1", "1", b"", 0, 0, 5)
