"""``POST /v1/functions/{name}/jobs:batch`` on the real app against a real redis-server:
a status per item, one bad item failing alone, idempotency keys per item, admission for
the batch as a whole, and bodies that are not a batch refused with one precise 4xx."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime.config.schema import AdmissionSettings
from runtime.server.batch import MAX_BATCH_ITEMS
from tests.integration import test_http_api
from tests.integration.test_http_api import AUTH, Make

make_client = test_http_api.make_client  # the fixture: the app on a real redis-server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BATCH = "/v1/functions/hello/jobs:batch"


async def test_a_batch_answers_a_status_per_item_and_its_jobs_complete(make_client: Make) -> None:
    client = await make_client()
    items: list[dict[str, Any]] = [{"payload": {"name": f"n{i}"}} for i in range(300)]
    items[100] = {"payload": {"name": 3}}
    items[200] = {"payload": {"name": "x" * 500}}  # over hello's max_payload_bytes=200
    items[250] = {"payload": {"name": "keyed"}, "idempotency_key": "order-7"}
    response = await client.post(BATCH, json={"items": items}, headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert (body["created"], body["known"], body["failed"]) == (298, 0, 2)
    answers = body["items"]
    assert len(answers) == 300
    assert answers[100]["status"] == 422
    assert answers[100]["error"]["code"] == "invalid_payload"
    assert "expected str, got int" in answers[100]["error"]["message"]
    assert answers[200]["status"] == 413
    assert answers[200]["error"]["code"] == "payload_too_large"
    assert answers[0]["status"] == 202 and answers[0]["created"] is True
    ids = [a["job_id"] for a in answers if a["status"] == 202]
    assert len(set(ids)) == 298
    async with asyncio.timeout(30):
        for job_id in (ids[0], ids[150], ids[-1]):
            job = await _completed(client, job_id)
    assert job["result"] == {"greeting": "Hello, n299"}
    again = await client.post(
        BATCH,
        json={"items": [{"payload": {"name": "other"}, "idempotency_key": "order-7"}]},
        headers=AUTH,
    )
    repeat = (await again.json())["items"][0]
    assert repeat == {"status": 202, "job_id": answers[250]["job_id"], "created": False}


async def _completed(client: Any, job_id: str) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = await (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).json()
        if job["state"] == "completed":
            return job
        await asyncio.sleep(0.05)


async def test_bodies_that_are_not_a_batch_get_one_422(make_client: Make) -> None:
    client = await make_client()
    bodies: list[Any] = [
        {},
        {"items": []},
        {"items": [{"payload": {"name": "a"}, "extra": 1}]},
        {"items": [{"payload": {"name": "a"}, "idempotency_key": ""}]},
        {"items": [{"payload": {"name": "a"}}] * (MAX_BATCH_ITEMS + 1)},
        [1, 2],
    ]
    for body in bodies:
        response = await client.post(BATCH, json=body, headers=AUTH)
        assert response.status == 422, body
        error = (await response.json())["error"]
        assert error["code"] == "invalid_batch"
        assert '{"items": [{"payload"' in error["message"]
    response = await client.post(BATCH + "?priority=urgent", json={"items": []}, headers=AUTH)
    assert response.status == 400
    response = await client.post(
        "/v1/functions/nope/jobs:batch", json={"items": [{"payload": 1}]}, headers=AUTH
    )
    assert response.status == 404


async def test_admission_applies_to_the_batch_as_a_whole(make_client: Make) -> None:
    client = await make_client(admission=AdmissionSettings(max_backlog=5, retry_after_s=3))
    first = await client.post(
        BATCH + "?delay_s=60",
        json={"items": [{"payload": {"name": str(i)}} for i in range(8)]},
        headers=AUTH,
    )
    assert first.status == 200 and (await first.json())["created"] == 8  # was under
    one = {"items": [{"payload": {"name": "z"}}]}
    second = await client.post(BATCH + "?delay_s=60", json=one, headers=AUTH)
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "backlog_full"
    assert second.headers["Retry-After"] == "3"
