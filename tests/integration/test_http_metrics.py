"""``http_requests_total``: every answer of the app counted by route template, method and
status, with bounded labels (the availability SLI of docs/slos.md reads it)."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from runtime.config.registry import load_registry
from runtime.config.schema import HttpSettings, MetricsSettings, RedisSettings, Settings
from runtime.server.app import build_app
from tests.integration.conftest import FAST_WORKER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANDLERS = """
    from runtime import Reject, function

    @function(max_attempts=1)
    async def picky(x: int) -> int:
        if x < 0:
            raise Reject("negative input")
        return x
"""

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path, redis_url: str) -> AsyncIterator[Client]:
    (tmp_path / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    settings = Settings(
        redis=RedisSettings(url=redis_url, timeout_s=0.5, connect_timeout_s=0.5),
        http=HttpSettings(token=TOKEN),
        worker=FAST_WORKER,
        metrics=MetricsSettings(refresh_s=0.2),
    )
    test_client = TestClient(TestServer(build_app(settings, load_registry(tmp_path, {}))))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def _requests(client: Client) -> dict[tuple[str, str, str], float]:
    text = await (await client.get("/metrics")).text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total":
                labels = sample.labels
                out[(labels["method"], labels["route"], labels["code"])] = sample.value
    return out


async def test_answers_are_counted_by_route_template_method_and_status(client: Client) -> None:
    assert (await client.post("/v1/functions/picky/invoke", json=3, headers=AUTH)).status == 200
    assert (await client.post("/v1/functions/picky/invoke", json=-1, headers=AUTH)).status == 502
    assert (await client.post("/v1/functions/picky/invoke", json=3)).status == 401
    assert (await client.get("/v1/jobs/picky.x", headers=AUTH)).status == 404
    assert (await client.get("/no/such/path/abc")).status == 404
    assert (await client.request("PROPFIND", "/v1/functions", headers=AUTH)).status == 405
    counted = await _requests(client)
    invoke = "/v1/functions/{name}/invoke"
    assert counted[("POST", invoke, "200")] == 1
    assert counted[("POST", invoke, "502")] == 1
    assert counted[("POST", invoke, "401")] == 1
    assert counted[("GET", "/v1/jobs/{job_id}", "404")] == 1
    # Labels stay bounded: an unknown path or method never becomes a label value.
    assert counted[("GET", "unmatched", "404")] == 1
    assert counted[("other", "unmatched", "405")] == 1
    # (the scrape that read these is counted once it has answered, so not in its own text)
    assert {route for (_, route, _) in counted} == {invoke, "/v1/jobs/{job_id}", "unmatched"}
