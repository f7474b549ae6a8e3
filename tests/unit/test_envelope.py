"""The job envelope: a strict msgpack round trip, its size cap, garbage, and job ids."""

from __future__ import annotations

import re

import msgspec
import pytest

from runtime.errors import PayloadError
from runtime.jobs.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    EnvelopeError,
    decode,
    encode,
    function_of,
    new_job_id,
)

LIMIT = 1 << 20


def make(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "v": ENVELOPE_VERSION,
        "id": "hello.abc",
        "function": "hello",
        "payload": msgspec.msgpack.encode({"name": "Ada"}),
        "trace": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    env = make()
    assert decode(encode(env), LIMIT) == env


def test_trace_defaults_to_empty() -> None:
    env = Envelope(ENVELOPE_VERSION, "hello.1", "hello", b"\xc0")
    decoded = decode(encode(env), LIMIT)
    assert decoded.trace == {}
    assert decoded.payload == b"\xc0"


def test_envelope_exactly_at_the_limit_is_accepted() -> None:
    data = encode(make())
    assert decode(data, len(data)) == make()


def test_envelope_over_the_limit_is_refused_before_decoding() -> None:
    data = encode(make(payload=b"x" * 5000))
    with pytest.raises(EnvelopeError) as info:
        decode(data, 4096)
    assert str(info.value) == f"envelope is {len(data)} bytes, over max_envelope_bytes=4096"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe garbage",
        b"not msgpack at all",
        msgspec.msgpack.encode({"v": 1, "id": "a.b", "function": "a", "payload": b""}),  # a map
        msgspec.msgpack.encode([1, "a.b", "a"]),  # too short
        msgspec.msgpack.encode([1, "a.b", "a", "text, not bytes", {}]),
        msgspec.msgpack.encode([1, "a.b", "a", b"", {}, "unknown extra field"]),
        encode(make())[:-3],  # truncated
    ],
    ids=["empty", "bad-bytes", "text", "map", "short", "wrong-type", "extra", "truncated"],
)
def test_garbage_is_an_envelope_error(data: bytes) -> None:
    with pytest.raises(EnvelopeError, match=r"^undecodable envelope: "):
        decode(data, LIMIT)


def test_unknown_version_is_refused() -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(encode(make(v=ENVELOPE_VERSION + 1)), LIMIT)
    assert str(info.value) == f"unsupported envelope version {ENVELOPE_VERSION + 1}"


def test_envelope_error_is_not_swallowed_as_a_payload_error() -> None:
    # The worker maps EnvelopeError to decode_error; it must be its own type.
    assert not issubclass(EnvelopeError, PayloadError)


# -- job ids ---------------------------------------------------------------------------------


def test_generated_job_id_is_function_dot_suffix() -> None:
    job_id = new_job_id("hello")
    assert re.fullmatch(r"hello\.[0-9a-f]+", job_id), job_id
    assert function_of(job_id) == "hello"


def test_generated_job_ids_are_unique_and_time_ordered() -> None:
    ids = [new_job_id("f") for _ in range(200)]
    assert len(set(ids)) == 200
    stamps = [int(i.split(".")[1][:-16], 16) for i in ids]  # millisecond prefix, then 8 bytes
    assert stamps == sorted(stamps)


def test_caller_job_id_becomes_the_suffix() -> None:
    assert new_job_id("hello", "order-42") == "hello.order-42"
    assert new_job_id("hello", "hello.order-42") == "hello.order-42"  # already prefixed
    assert new_job_id("hello", "a.b:c_d-e") == "hello.a.b:c_d-e"
    assert function_of(new_job_id("file_stats", "x.y.z")) == "file_stats"


def test_function_with_dash_in_its_name() -> None:
    assert function_of(new_job_id("echo-any", "1")) == "echo-any"


@pytest.mark.parametrize("bad", ["", "has space", "slash/no", "x" * 129, "ünï"])
def test_bad_caller_job_id_is_refused(bad: str) -> None:
    with pytest.raises(PayloadError, match=r"must be 1-128 characters of letters, digits and _-.:"):
        new_job_id("hello", bad)


def test_longest_caller_job_id_is_accepted() -> None:
    assert new_job_id("f", "x" * 128) == "f." + "x" * 128


@pytest.mark.parametrize("bad", ["nodot", ".leading", ""])
def test_function_of_a_non_job_id_is_an_error(bad: str) -> None:
    with pytest.raises(PayloadError) as info:
        function_of(bad)
    assert str(info.value) == f"{bad!r} is not a job id (expected '<function>.<id>')"
