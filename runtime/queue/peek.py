"""``runtime peek``: the next jobs in claim order, or the newest dead letters, decoded.

Bounded whatever the queues hold: at most ``count`` ids per lane (one LRANGE each), one
HMGET and HSTRLEN per job, and only envelopes up to ``PEEK_MAX_ENVELOPE_BYTES`` fetched;
tracebacks (each at most 8 KiB, ``jobs.outcome``) only when asked for.

Shows whatever Redis holds and never raises for it: an id that is not UTF-8 is shown with
replacement characters (and looked up by its raw bytes), a key of another type or a field
that does not parse is named in ``corrupt``, and a payload that does not decode (nested
100k deep, not msgpack, not JSON-compatible) gets a ``payload_error``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from runtime.function import PRIORITIES
from runtime.jobs import envelope
from runtime.jobs.records import Invalid, as_int
from runtime.queue.admin_stats import age_s, optional_int, redis_now_ms
from runtime.queue.dlq import reply_text
from runtime.queue.keys import FunctionKeys
from runtime.queue.queries import count as depth

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
    corrupt: str | None = None  # what in its record could not be read (None: sound)
    traceback: str | None = None  # of its last failed attempt (fetched on request only)


class Peek(msgspec.Struct):
    function: str
    source: Literal["ready", "dlq"]
    now_ms: int
    total: int  # ids in the lanes (or the DLQ), of which ``jobs`` are the first
    jobs: list[JobView]


def _payload(env: bytes, view: JobView) -> None:
    """Decode an envelope's payload into ``view`` (msgpack → JSON-compatible values)."""
    try:
        data = envelope.decode(env, max(len(env), 1)).payload
    except (envelope.EnvelopeError, RecursionError) as exc:
        view.payload_error = str(exc)
        return
    try:
        value = msgspec.msgpack.decode(data)
        msgspec.json.encode(value)  # e.g. an Ext or a map keyed by arrays: not JSON
    except (msgspec.DecodeError, TypeError, msgspec.EncodeError, RecursionError) as exc:
        view.payload_error = f"payload not shown as JSON: {exc}"
        return
    view.payload = value


def _int(raw: Any, name: str, problems: list[str]) -> int:
    value = as_int(raw) if raw is not None else 0
    if isinstance(value, Invalid):
        problems.append(f"{name}: {value.why}")
        return 0
    return value


async def read_peek(
    redis: aioredis.Redis,
    k: FunctionKeys,
    *,
    is_dlq: bool,
    count: int,
    with_traceback: bool = False,
    offset: int = 0,
) -> Peek:
    """The next ``count`` jobs in claim order (high, default, low), or the newest
    ``count`` DLQ entries, newest first (skipping the ``offset`` newest: one page of a
    deep DLQ is one bounded LRANGE); envelopes over PEEK_MAX_ENVELOPE_BYTES are sized
    but not fetched."""
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    if is_dlq:
        pipe.llen(k.dlq)
        pipe.lrange(k.dlq, -(offset + count), -(offset + 1))
    else:
        for lane in k.lanes:
            pipe.llen(lane)
            pipe.lrange(lane, 0, count - 1)
    first = await pipe.execute(raise_on_error=False)
    now_ms = redis_now_ms(first[0])
    lengths, pages = first[1::2], first[2::2]
    pages = [page if isinstance(page, list) else [] for page in pages]  # another type: empty
    entries: list[tuple[bytes, str]] = []  # (raw id, lane)
    if is_dlq:
        entries = [(i, "") for i in reversed(pages[0])]
    else:
        for lane, page in zip(PRIORITIES, pages, strict=True):
            entries += [(i, lane) for i in page]
    entries = entries[:count]

    fields = ("state", "prio", "att", "rec", "enq", "end", "reason", "err", "tb")
    pipe = redis.pipeline(transaction=False)
    for raw_id, _ in entries:
        pipe.hmget(k.raw_job(raw_id), fields if with_traceback else fields[:-1])
        pipe.hstrlen(k.raw_job(raw_id), "env")
    second = await pipe.execute(raise_on_error=False) if entries else []
    views: list[JobView] = []
    raw_ids: list[bytes] = []
    for (raw_id, lane), raw, env_len in zip(entries, second[::2], second[1::2], strict=True):
        problems: list[str] = []
        if not isinstance(raw, list):  # an error reply: the key is of another type
            raw = [b"corrupt", None, None, None, None, None, None, None, None]
            problems.append("the job key is not a hash")
        padded = [*raw, None][:9]  # without --traceback, "tb" was not asked for
        state, prio, att, rec, enq, end, reason, err, tb = (reply_text(v) for v in padded)
        enqueued, dead = optional_int(enq), optional_int(end) if state == "dead" else None
        views.append(
            JobView(
                id=raw_id.decode("utf-8", "replace"),
                lane=lane or prio or "default",
                state=state,
                attempts=_int(att, "att", problems),
                recoveries=_int(rec, "rec", problems),
                age_s=age_s(now_ms, dead if is_dlq and dead is not None else enqueued),
                enqueued_ms=enqueued,
                dead_ms=dead,
                reason=reason,
                error=err,
                envelope_bytes=depth(env_len),
                traceback=tb,
            )
        )
        if enq is not None and enqueued is None:
            problems.append(f"enq: not an integer: {enq[:40]!r}")
        if raw_id.decode("utf-8", "replace").encode() != raw_id:
            problems.append(f"id is not UTF-8: {raw_id[:80]!r}")
        views[-1].corrupt = "; ".join(problems) or None
        raw_ids.append(raw_id)
    pipe = redis.pipeline(transaction=False)
    fetched: list[JobView] = []
    for view, raw_id in zip(views, raw_ids, strict=True):
        if view.state is None:
            view.payload_error = "no job record for this id"
        elif view.state == "corrupt" and view.corrupt:
            view.payload_error = "the job key is not a hash"
        elif view.envelope_bytes > PEEK_MAX_ENVELOPE_BYTES:
            view.payload_error = f"envelope of {view.envelope_bytes} bytes not fetched"
        else:
            pipe.hget(k.raw_job(raw_id), "env")
            fetched.append(view)
    envs = await pipe.execute(raise_on_error=False) if fetched else []
    for view, env in zip(fetched, envs, strict=True):
        _payload(env if isinstance(env, bytes) else b"", view)
    total = sum(depth(n) for n in lengths)
    return Peek(k.function, "dlq" if is_dlq else "ready", now_ms, total, views)
