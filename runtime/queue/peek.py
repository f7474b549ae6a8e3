"""``runtime peek``: the next jobs in claim order, or the newest dead letters, decoded.

Bounded whatever the queues hold: at most ``count`` ids per lane (one LRANGE each), one
HMGET and HSTRLEN per job, and only envelopes up to ``PEEK_MAX_ENVELOPE_BYTES`` fetched.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from runtime.function import PRIORITIES
from runtime.jobs import envelope
from runtime.queue.admin_stats import age_s, redis_now_ms
from runtime.queue.dlq import reply_text
from runtime.queue.keys import FunctionKeys

PEEK_MAX_ENVELOPE_BYTES = 262_144  # larger envelopes are sized, not fetched, by peek


class JobView(msgspec.Struct):
    """One job as ``peek`` shows it, decoded."""

    id: str
    lane: str  # the lane it waits in (a DLQ entry: its priority)
    state: str | None  # None: the id has no job record
    attempts: int
    recoveries: int
    age_s: float | None  # waiting since enqueued; a DLQ entry: since dead-lettered
    enqueued_ms: int | None
    dead_ms: int | None
    reason: str | None
    error: str | None
    envelope_bytes: int = 0
    payload: Any = None  # msgpack decoded to JSON-compatible values
    payload_error: str | None = None  # why the payload is not shown


class Peek(msgspec.Struct):
    function: str
    source: Literal["ready", "dlq"]
    now_ms: int
    total: int  # ids in the lanes (or the DLQ), of which ``jobs`` are the first
    jobs: list[JobView]


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _payload(env: bytes, view: JobView) -> None:
    """Decode an envelope's payload into ``view`` (msgpack → JSON-compatible values)."""
    try:
        data = envelope.decode(env, max(len(env), 1)).payload
    except envelope.EnvelopeError as exc:
        view.payload_error = str(exc)
        return
    try:
        value = msgspec.msgpack.decode(data)
        msgspec.json.encode(value)  # e.g. an Ext or a map keyed by arrays: not JSON
    except (msgspec.DecodeError, TypeError, msgspec.EncodeError) as exc:
        view.payload_error = f"payload not shown as JSON: {exc}"
        return
    view.payload = value


async def read_peek(redis: aioredis.Redis, k: FunctionKeys, *, is_dlq: bool, count: int) -> Peek:
    """The next ``count`` jobs in claim order (high, default, low), or the newest
    ``count`` DLQ entries, newest first; envelopes over PEEK_MAX_ENVELOPE_BYTES are sized
    but not fetched."""
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    if is_dlq:
        pipe.llen(k.dlq)
        pipe.lrange(k.dlq, -count, -1)
    else:
        for lane in k.lanes:
            pipe.llen(lane)
            pipe.lrange(lane, 0, count - 1)
    first = await pipe.execute()
    now_ms = redis_now_ms(first[0])
    lengths, pages = first[1::2], first[2::2]
    entries: list[tuple[str, str]] = []  # (id, lane)
    if is_dlq:
        entries = [(i.decode(), "") for i in reversed(pages[0])]
    else:
        for lane, page in zip(PRIORITIES, pages, strict=True):
            entries += [(i.decode(), lane) for i in page]
    entries = entries[:count]

    fields = ("state", "prio", "att", "rec", "enq", "end", "reason", "err")
    pipe = redis.pipeline(transaction=False)
    for job_id, _ in entries:
        pipe.hmget(k.job(job_id), fields)
        pipe.hstrlen(k.job(job_id), "env")
    second = await pipe.execute()
    views: list[JobView] = []
    for (job_id, lane), raw, env_len in zip(entries, second[::2], second[1::2], strict=True):
        state, prio, att, rec, enq, end, reason, err = (reply_text(v) for v in raw)
        enqueued, dead = _opt_int(enq), _opt_int(end) if state == "dead" else None
        views.append(
            JobView(
                id=job_id,
                lane=lane or prio or "default",
                state=state,
                attempts=int(att or 0),
                recoveries=int(rec or 0),
                age_s=age_s(now_ms, dead if is_dlq and dead is not None else enqueued),
                enqueued_ms=enqueued,
                dead_ms=dead,
                reason=reason,
                error=err,
                envelope_bytes=int(env_len),
            )
        )
    pipe = redis.pipeline(transaction=False)
    fetched: list[JobView] = []
    for view in views:
        if view.state is None:
            view.payload_error = "no job record for this id"
        elif view.envelope_bytes > PEEK_MAX_ENVELOPE_BYTES:
            view.payload_error = f"envelope of {view.envelope_bytes} bytes not fetched"
        else:
            pipe.hget(k.job(view.id), "env")
            fetched.append(view)
    for view, env in zip(fetched, await pipe.execute() if fetched else [], strict=True):
        _payload(env or b"", view)
    return Peek(k.function, "dlq" if is_dlq else "ready", now_ms, sum(lengths), views)
