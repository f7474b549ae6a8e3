"""``POST /v1/functions/{name}/jobs:batch``: enqueue up to MAX_BATCH_ITEMS jobs in one
request, through ``Producer.enqueue_many`` (pipelined), with a status per item.

The body is ``{"items": [{"payload": …, "idempotency_key": …}, …]}``; ``?priority=`` and
``?delay_s=`` apply to every item. The answer is ``200`` with ``{"items": [...],
"created": n, "known": n, "failed": n}``, one entry per item in order: ``{"status": 202,
"job_id", "created"}``, or ``{"status": 4xx/5xx, "error": {"code", "message"}}`` for an
item that did not go in (its payload fails the function's type: 422 ``invalid_payload``;
over ``max_payload_bytes``: 413 ``payload_too_large``; Redis refused it: 507 or 503). A
body that is not such a batch at all is one ``422 invalid_batch``; admission (backlog,
Redis memory) applies to the batch as a whole, one ``429`` for all of it.

The name follows Google's custom-method style (``collection:verb``): a batch is an action
on the ``jobs`` collection, and ``/jobs/batch`` would read as a job named ``batch``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from runtime.errors import BrokerError, PayloadError, PayloadTooLarge, RedisMemoryFull
from runtime.server.admission import (
    MAX_DELAY_S,
    MAX_IDEMPOTENCY_KEY_CHARS,
    admit,
    float_param,
    function_spec,
    known_params,
    priority_param,
    read_json_body,
)
from runtime.server.answers import ApiError, json_response
from runtime.server.appkeys import PRODUCER_KEY

MAX_BATCH_ITEMS = 1000
BATCH_NESTING = 3  # {"items": [{"payload": <the payload>}]}: the depth a payload starts at
NULL = msgspec.Raw(b"null")

IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS)]


class BatchItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    payload: msgspec.Raw = NULL  # decoded with the function's own type, item by item
    idempotency_key: IdempotencyKey | None = None


class Batch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    items: Annotated[list[BatchItem], Meta(min_length=1, max_length=MAX_BATCH_ITEMS)]


_decoder = msgspec.json.Decoder(Batch)


def _failed(status: int, code: str, message: str) -> dict[str, Any]:
    return {"status": status, "error": {"code": code, "message": message[:500]}}


def _payload_failure(exc: PayloadError) -> dict[str, Any]:
    if isinstance(exc, PayloadTooLarge):
        return _failed(413, "payload_too_large", str(exc))
    return _failed(422, "invalid_payload", str(exc))


def _redis_failure(exc: BrokerError) -> dict[str, Any]:
    if isinstance(exc, RedisMemoryFull):
        return _failed(507, "redis_memory_full", f"Redis is out of memory: {exc}")
    return _failed(503, "redis_error", f"Redis refused the item: {exc}")


def parse_batch(body: bytes) -> Batch:
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(
            422,
            "invalid_batch",
            f"the body is not a batch ({str(exc)[:200]}): send "
            '{"items": [{"payload": ..., "idempotency_key": "..."}, ...]} with 1 to '
            f"{MAX_BATCH_ITEMS} items (idempotency_key optional, 1 to "
            f"{MAX_IDEMPOTENCY_KEY_CHARS} characters)",
        ) from None


async def enqueue_batch(request: web.Request) -> web.Response:
    spec = function_spec(request)
    known_params(request, "delay_s", "priority")
    delay_s = float_param(request, "delay_s", 0, MAX_DELAY_S)
    priority = priority_param(request)
    batch = parse_batch(await read_json_body(request, spec, nesting=BATCH_NESTING))
    answers: list[dict[str, Any] | None] = [None] * len(batch.items)
    payloads, keys, places = [], [], []
    for i, item in enumerate(batch.items):
        try:
            payloads.append(spec.decode_json(bytes(item.payload)))
        except PayloadError as exc:
            answers[i] = _payload_failure(exc)
            continue
        keys.append(item.idempotency_key)
        places.append(i)
    if payloads:
        await admit(request, spec, None)
        results = await request.app[PRODUCER_KEY].enqueue_many(
            spec.name, payloads, priority=priority, delay_s=delay_s, idempotency_keys=keys
        )
        for i, result in zip(places, results, strict=True):
            if isinstance(result.error, PayloadError):  # e.g. an integer over 64 bits
                answers[i] = _payload_failure(result.error)
            elif isinstance(result.error, BrokerError):
                answers[i] = _redis_failure(result.error)
            else:
                answers[i] = {"status": 202, "job_id": result.job_id, "created": result.created}
    items = [a or _failed(500, "internal", "not answered") for a in answers]
    accepted = [a for a in items if a["status"] == 202]
    created = sum(1 for a in accepted if a["created"])
    return json_response(
        {
            "items": items,
            "created": created,
            "known": len(accepted) - created,
            "failed": len(items) - len(accepted),
        },
        200,
    )
