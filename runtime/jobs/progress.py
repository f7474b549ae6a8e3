"""A running job's progress, as a handler reports it (``ctx.progress``) and as its record
keeps it (the ``prg`` field): a fraction in [0, 1], a short message and when it was
reported. Encoded here for the progress script, parsed here, totally, when read back.
"""

from __future__ import annotations

import msgspec

MAX_MESSAGE_CHARS = 200  # Context.progress cuts a longer message (runtime/context.py)
MAX_STORED_BYTES = 2048  # progress.lua refuses anything longer; a parsed field too


class Progress(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fraction: float
    message: str = ""
    at_ms: int = 0  # when the handler reported it (the worker's clock, ms since the epoch)


_decoder = msgspec.json.Decoder(Progress)
_encoder = msgspec.json.Encoder()


def encode(progress: Progress) -> bytes:
    return _encoder.encode(progress)


def parse(raw: bytes) -> Progress | str:
    """The stored field as a Progress, or why it cannot be read (never raises)."""
    if len(raw) > MAX_STORED_BYTES:
        return f"{len(raw)} bytes, more than {MAX_STORED_BYTES}"
    try:
        p = _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        return f"not a progress record: {str(exc)[:80]}"
    if not 0.0 <= p.fraction <= 1.0 or len(p.message) > MAX_MESSAGE_CHARS or p.at_ms < 0:
        return "progress out of bounds"
    return p
