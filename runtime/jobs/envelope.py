"""The job envelope: what a producer writes and a worker decodes, msgpack via msgspec.

Decode once, at the edge, strictly: size first, then a typed decode. The envelope names a
function, never an import path; the payload stays opaque bytes here and is decoded with the
function's own payload type by the dispatcher.
"""

from __future__ import annotations

import os
import re
import time

import msgspec

from runtime.errors import PayloadError

ENVELOPE_VERSION = 1
_JOB_SUFFIX_RE = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")


class Envelope(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """Immutable part of a job. New fields must get defaults (schema evolution)."""

    v: int
    id: str
    function: str
    payload: bytes  # msgpack of the function's payload type
    trace: dict[str, str] = {}  # W3C trace context (traceparent, tracestate)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


class EnvelopeError(Exception):
    """The bytes are not a valid envelope (too large, not msgpack, wrong shape)."""


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes, max_bytes: int) -> Envelope:
    if len(data) > max_bytes:
        raise EnvelopeError(f"envelope is {len(data)} bytes, over max_envelope_bytes={max_bytes}")
    try:
        env = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EnvelopeError(f"undecodable envelope: {exc}") from None
    if env.v != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {env.v}")
    return env


def new_job_id(function: str, job_id: str | None = None, shard: int = 0) -> str:
    """A job id is ``<function>.<suffix>``: whoever holds it can find the job's keys.

    ``job_id`` (a caller's own id, for idempotency) becomes the suffix; otherwise a
    time-ordered random one is made, ending in ``-<shard>`` for a shard above 0 of a
    sharded function (runtime/queue/shards.py).
    """
    if job_id is None:
        # 64 random bits after the millisecond: two ids made in the same millisecond
        # anywhere collide with odds of 2^-64 (enqueue.lua relies on made ids being new;
        # at 40,000 ids/s for a year, the odds of any collision are about 10^-6).
        made = f"{function}.{time.time_ns() // 1_000_000:x}{os.urandom(8).hex()}"
        return made if shard == 0 else f"{made}-{shard}"
    if job_id.startswith(function + "."):
        job_id = job_id[len(function) + 1 :]
    if not _JOB_SUFFIX_RE.match(job_id):
        raise PayloadError(
            f"job_id {job_id!r} must be 1-128 characters of letters, digits and _-.:"
        )
    return f"{function}.{job_id}"


def function_of(job_id: str) -> str:
    """The function a job id belongs to."""
    name, sep, _ = job_id.partition(".")
    if not sep or not name:
        raise PayloadError(f"{job_id!r} is not a job id (expected '<function>.<id>')")
    return name
