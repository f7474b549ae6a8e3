"""The /v1 HTTP API, /metrics and tracing, on the real app against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from runtime.config.registry import load_registry
from runtime.config.schema import (
    AdmissionSettings,
    HttpSettings,
    MetricsSettings,
    RedisSettings,
    Settings,
)
from runtime.observe.tracing import Tracing
from runtime.server.app import build_app
from runtime.server.appkeys import MEMORY_RATIO_KEY
from tests.integration.conftest import FAST_WORKER

pytestmark = pytest.mark.integration

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

HANDLERS = """
    import asyncio
    import msgspec
    from runtime import Context, Reject, function

    class Greet(msgspec.Struct, forbid_unknown_fields=True):
        name: str

    @function(timeout_s=5, max_payload_bytes=200)
    async def hello(event: Greet, ctx: Context) -> dict[str, str]:
        ctx.log.info("greeting someone")
        return {"greeting": f"Hello, {event.name}"}

    @function(max_attempts=1)
    async def picky(x: int) -> int:
        if x < 0:
            raise Reject("negative input")
        if x == 0:
            raise ValueError("zero is not allowed")
        return x

    @function(max_attempts=2, backoff=(0.01, 0.01))
    async def twice(x: int, ctx: Context) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    @function(timeout_s=10)
    async def slow(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds
"""

Make = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_client(tmp_path: Path, redis_url: str) -> AsyncIterator[Make]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        *,
        tracing: Tracing | None = None,
        redis: str | None = None,
        max_connections: int = 64,
        **sections: Any,
    ) -> TestClient[web.Request, web.Application]:
        folder = tmp_path / f"functions{len(clients)}"
        folder.mkdir()
        (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
        settings = Settings(
            redis=RedisSettings(
                url=redis or redis_url,
                timeout_s=0.5,
                connect_timeout_s=0.5,
                max_connections=max_connections,
            ),
            http=sections.pop("http", HttpSettings(token=TOKEN)),
            worker=FAST_WORKER,
            metrics=sections.pop("metrics", MetricsSettings(refresh_s=0.2)),
            **sections,
        )
        app = build_app(settings, load_registry(folder, {}), tracing=tracing)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_invoke_returns_the_result(make_client: Make) -> None:
    client = await make_client()
    response = await client.post("/v1/functions/hello/invoke", json={"name": "Ada"}, headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"greeting": "Hello, Ada"}
    job_id = response.headers["X-Job-Id"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    job = await (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).json()
    assert job["state"] == "completed" and job["result"] == {"greeting": "Hello, Ada"}
    assert job["enqueued_at"].endswith("Z") and job["finished_at"] is not None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/functions/hello/invoke"),
        ("POST", "/v1/functions/hello/jobs"),
        ("GET", "/v1/jobs/hello.x"),
        ("GET", "/v1/functions"),
        ("GET", "/v1/openapi.json"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic dGVzdA==", f"bearer{TOKEN}"])
async def test_every_v1_route_needs_the_token(
    make_client: Make, method: str, path: str, auth: str | None
) -> None:
    client = await make_client()
    headers = {"Authorization": auth} if auth else {}
    response = await client.request(method, path, json={"name": "x"}, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_open_routes_need_no_token(make_client: Make) -> None:
    client = await make_client()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200, path


async def test_metrics_can_be_put_behind_the_token(make_client: Make) -> None:
    client = await make_client(http=HttpSettings(token=TOKEN, metrics_need_token=True))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=AUTH)).status == 200


async def test_bad_input_gets_precise_answers(make_client: Make) -> None:
    client = await make_client()

    async def post(path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        response = await client.post(path, headers=AUTH, **kw)
        return response.status, await response.json()

    status, body = await post("/v1/functions/nope/invoke", json={})
    assert (status, body["error"]["code"]) == (404, "unknown_function")
    status, body = await post("/v1/functions/hello/invoke", json={"name": 3})
    assert (status, body["error"]["message"]) == (422, "hello: $.name: expected str, got int")
    status, body = await post("/v1/functions/hello/invoke", data=b"{not json")
    assert status == 422 and body["error"]["code"] == "invalid_payload"
    status, body = await post("/v1/functions/hello/invoke", json={"name": "x" * 500})
    assert status == 413 and "max_payload_bytes=200" in body["error"]["message"]
    status, body = await post("/v1/functions/hello/jobs?delay_s=abc", json={"name": "x"})
    assert (status, body["error"]["code"]) == (400, "bad_parameter")
    status, body = await post("/v1/functions/hello/jobs?priority=urgent", json={"name": "x"})
    assert status == 400 and "high, default, low" in body["error"]["message"]
    response = await client.get("/v1/jobs/not-a-job-id", headers=AUTH)
    assert response.status == 404
    response = await client.get("/v1/jobs/hello.missing", headers=AUTH)
    assert response.status == 404
    response = await client.get("/v1/functions/hello/invoke", headers=AUTH)
    assert response.status == 405 and "allowed: POST" in (await response.json())["error"]["message"]


async def test_request_body_limit(make_client: Make) -> None:
    client = await make_client(http=HttpSettings(token=TOKEN, max_body_bytes=2048))
    response = await client.post("/v1/functions/hello/invoke", data=b"x" * 5000, headers=AUTH)
    assert response.status == 413
    assert "http.max_body_bytes" in (await response.json())["error"]["message"]


async def test_failed_and_timed_out_invocations(make_client: Make) -> None:
    client = await make_client()
    response = await client.post("/v1/functions/picky/invoke", json=-1, headers=AUTH)
    body = await response.json()
    assert response.status == 502
    assert body["error"] == {"code": "rejected", "message": "negative input"}
    response = await client.post("/v1/functions/picky/invoke", json=0, headers=AUTH)
    body = await response.json()
    assert response.status == 502
    assert body["error"]["message"] == "ValueError: zero is not allowed"
    assert "Traceback" not in json.dumps(body)
    response = await client.post("/v1/functions/slow/invoke?timeout_s=0.2", json=1.0, headers=AUTH)
    body = await response.json()
    assert response.status == 504
    job_id = body["job_id"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    for _ in range(100):
        job = await (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).json()
        if job["state"] == "completed":
            break
        assert job["state"] in ("queued", "running")
        await asyncio.sleep(0.05)
    assert job["result"] == 1.0


async def test_enqueue_and_idempotency_key(make_client: Make) -> None:
    client = await make_client()
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    first = await client.post("/v1/functions/hello/jobs", json={"name": "A"}, headers=headers)
    second = await client.post("/v1/functions/hello/jobs", json={"name": "B"}, headers=headers)
    assert first.status == second.status == 202
    a, b = await first.json(), await second.json()
    assert a["job_id"] == b["job_id"] and a["created"] and not b["created"]
    assert first.headers["Location"] == f"/v1/jobs/{a['job_id']}"
    # Invoking with the same key returns the stored result of that job.
    third = await client.post("/v1/functions/hello/invoke", json={"name": "C"}, headers=headers)
    assert third.status == 200 and await third.json() == {"greeting": "Hello, A"}


async def test_delayed_and_prioritised_jobs(make_client: Make) -> None:
    client = await make_client()
    response = await client.post(
        "/v1/functions/slow/jobs?delay_s=30&priority=high", json=0.0, headers=AUTH
    )
    job = await (await client.get(response.headers["Location"], headers=AUTH)).json()
    assert (job["state"], job["priority"]) == ("delayed", "high")


async def test_admission_backlog_limit_answers_429(make_client: Make) -> None:
    client = await make_client(admission=AdmissionSettings(max_backlog=2, retry_after_s=3))
    codes = []
    for _ in range(4):
        response = await client.post("/v1/functions/slow/jobs?delay_s=60", json=0.0, headers=AUTH)
        codes.append(response.status)
        if response.status == 429:
            assert response.headers["Retry-After"] == "3"
            assert (await response.json())["error"]["code"] == "backlog_full"
    assert codes == [202, 202, 429, 429]


async def test_admission_memory_limit_answers_429(make_client: Make) -> None:
    client = await make_client()
    client.app[MEMORY_RATIO_KEY][0] = 0.95  # as the refresher would see a full Redis
    response = await client.post("/v1/functions/hello/jobs", json={"name": "x"}, headers=AUTH)
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "redis_memory_full"


async def test_redis_down_answers_503(make_client: Make) -> None:
    from tests.conftest import free_port

    client = await make_client(redis=f"redis://127.0.0.1:{free_port()}/0")
    response = await client.post("/v1/functions/hello/jobs", json={"name": "x"}, headers=AUTH)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "redis_unavailable"
    assert (await client.get("/readyz")).status == 503


async def test_functions_listing_and_openapi_match_the_routes(make_client: Make) -> None:
    client = await make_client()
    listing = await (await client.get("/v1/functions", headers=AUTH)).json()
    hello = next(f for f in listing["functions"] if f["name"] == "hello")
    assert hello["max_payload_bytes"] == 200 and hello["timeout_s"] == 5
    assert hello["payload_schema"]["$defs"]["Greet"]["required"] == ["name"]
    doc = await (await client.get("/v1/openapi.json", headers=AUTH)).json()
    assert doc["openapi"].startswith("3.")
    # Each function's own invoke and enqueue paths stand for the templated route.
    names = {f["name"] for f in listing["functions"]}
    templated = {f"/v1/functions/{n}/{r}": f"/v1/functions/{{name}}/{r}" for n in names
                 for r in ("invoke", "jobs", "jobs:batch")}  # fmt: skip
    assert set(templated) <= set(doc["paths"])
    documented = {(m.upper(), templated.get(p, p)) for p, ops in doc["paths"].items() for m in ops}
    routed = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method != "HEAD"
    }
    assert documented == routed
    assert "payload.hello" in doc["components"]["schemas"]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_move_after_jobs_and_gauges_refresh(make_client: Make) -> None:
    client = await make_client()
    text = await (await client.get("/metrics")).text()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["jobs_completed"] == "counter"
    assert types["job_processing_duration_seconds"] == "histogram"
    assert types["job_queue_wait_seconds"] == "histogram"
    assert types["queue_length"] == "gauge"
    assert types["worker_active"] == "gauge"
    assert types["runtime_instances"] == "gauge"
    assert types["redis_roundtrip_seconds"] == "histogram"
    await client.post("/v1/functions/hello/invoke", json={"name": "A"}, headers=AUTH)
    await client.post("/v1/functions/picky/invoke", json=-1, headers=AUTH)
    await client.post("/v1/functions/slow/jobs?delay_s=60", json=0.0, headers=AUTH)
    fn = (("function", "hello"),)
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the gauges refresh in the background, without a scrape having to wait
        s = _samples(await (await client.get("/metrics")).text())
        delayed = s.get(("queue_length", (("function", "slow"), ("state", "delayed"))))
        if (delayed == 1 and s[("runtime_instances", ())] >= 1) or (
            asyncio.get_running_loop().time() > deadline
        ):
            break
        await asyncio.sleep(0.05)
    assert delayed == 1
    assert s[("runtime_instances", ())] >= 1
    assert s[("jobs_produced_total", fn)] == 1
    assert s[("jobs_consumed_total", fn)] == 1
    assert s[("jobs_completed_total", fn)] == 1
    assert s[("job_processing_duration_seconds_count", fn)] == 1
    picky_dead = (("function", "picky"), ("reason", "rejected"))
    assert s[("jobs_dead_letter_total", picky_dead)] == 1
    assert s[("jobs_failed_total", picky_dead)] == 1
    assert s[("redis_up", ())] == 1
    # Labels stay bounded: only registered functions appear.
    functions = {dict(labels).get("function") for (_, labels) in s} - {None}
    assert functions == {"hello", "picky", "slow", "twice"}


async def test_one_trace_from_http_request_to_handler_log(
    make_client: Make, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await make_client(tracing=Tracing(provider))
    from runtime.observe.tracing import TraceLogFilter

    trace_filter = TraceLogFilter()
    caplog.handler.addFilter(trace_filter)
    try:
        with caplog.at_level(logging.INFO, logger="runtime.handler.hello"):
            parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            response = await client.post(
                "/v1/functions/hello/invoke",
                json={"name": "Ada"},
                headers={**AUTH, "traceparent": parent},
            )
            assert response.status == 200
    finally:
        caplog.handler.removeFilter(trace_filter)
    provider.force_flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["POST /v1/functions/{name}/invoke"]
    produce = spans["enqueue hello"]
    consume = spans["process hello"]
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    assert {s.context.trace_id for s in (server, produce, consume)} == {trace_id}
    assert (server.kind, produce.kind, consume.kind) == (
        SpanKind.SERVER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    )
    assert produce.parent is not None and produce.parent.span_id == server.context.span_id
    assert consume.parent is not None and consume.parent.span_id == produce.context.span_id
    assert consume.attributes is not None
    assert consume.attributes["runtime.function"] == "hello"
    assert consume.attributes["runtime.attempt"] == 1
    assert consume.attributes["runtime.outcome"] == "completed"
    [record] = [r for r in caplog.records if r.getMessage() == "greeting someone"]
    assert getattr(record, "trace_id", None) == format(trace_id, "032x")
    assert getattr(record, "span_id", None) == format(consume.context.span_id, "016x")
    assert getattr(record, "job_id", None) == response.headers["X-Job-Id"]


async def test_an_unsampled_request_stays_unsampled(make_client: Make) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await make_client(tracing=Tracing(provider))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"  # not sampled
    response = await client.post(
        "/v1/functions/hello/invoke", json={"name": "Ada"}, headers={**AUTH, "traceparent": parent}
    )
    assert response.status == 200
    provider.force_flush()
    assert exporter.get_finished_spans() == ()


async def test_a_retry_stays_in_the_original_trace(make_client: Make) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await make_client(tracing=Tracing(provider))
    response = await client.post("/v1/functions/twice/invoke", json=0, headers=AUTH)
    assert response.status == 200 and await response.json() == 2
    provider.force_flush()
    spans = exporter.get_finished_spans()
    [produce] = [s for s in spans if s.name == "enqueue twice"]
    consumers = sorted(
        (s for s in spans if s.name == "process twice"),
        key=lambda s: dict(s.attributes or {})["runtime.attempt"],
    )
    assert len(consumers) == 2
    for span in consumers:
        assert span.context.trace_id == produce.context.trace_id
        assert span.parent is not None and span.parent.span_id == produce.context.span_id
    outcomes = [dict(s.attributes or {})["runtime.outcome"] for s in consumers]
    assert outcomes == ["handler_error", "completed"]


async def test_spans_are_exported_over_otlp_http(make_client: Make) -> None:
    """A real OTLP/HTTP export, received by a small server decoding the protobuf."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from runtime.config.schema import TracingSettings
    from runtime.observe.tracing import build_provider

    received: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append((dict(request.headers), message))
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector = web.Application()
    collector.router.add_post("/v1/traces", traces)
    server = TestServer(collector)
    await server.start_server()
    try:
        provider = build_provider(
            TracingSettings(
                enabled=True,
                exporter="otlp_http",
                endpoint=f"http://127.0.0.1:{server.port}/v1/traces",
                headers="x-api-key=s3cret",
                service_name="runtime-test",
            )
        )
        assert provider is not None
        client = await make_client(tracing=Tracing(provider))
        response = await client.post(
            "/v1/functions/hello/invoke", json={"name": "Ada"}, headers=AUTH
        )
        assert response.status == 200
        # The exporter posts from its own thread; keep this loop free to receive it.
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        await asyncio.to_thread(provider.shutdown)
    finally:
        await server.close()
    assert received, "no OTLP export arrived"
    names = set()
    for headers, message in received:
        assert headers.get("x-api-key") == "s3cret"
        assert headers["Content-Type"] == "application/x-protobuf"
        for resource_spans in message.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert attrs["service.name"] == "runtime-test"
            for scope_spans in resource_spans.scope_spans:
                names |= {span.name for span in scope_spans.spans}
    assert {"POST /v1/functions/{name}/invoke", "enqueue hello", "process hello"} <= names


async def test_redis_that_lost_its_data_is_reported_within_a_refresh(make_client: Make) -> None:
    """FLUSHALL stands for a Redis restarted without persistence: /readyz says so (503,
    check redis_data), the loss is counted, and the runtime keeps serving."""
    client = await make_client()
    deadline = asyncio.get_running_loop().time() + 5
    while (await client.get("/readyz")).status != 200:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    from runtime.server.appkeys import BROKER_KEY, EPOCH_KEY

    while client.app[EPOCH_KEY].known is None:  # until a refresh has read the epoch
        assert asyncio.get_running_loop().time() < deadline + 5
        await asyncio.sleep(0.05)
    await client.app[BROKER_KEY].redis.flushall()
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        response = await client.get("/readyz")
        if response.status == 503:
            break
        assert asyncio.get_running_loop().time() < deadline, "data loss not reported"
        await asyncio.sleep(0.05)
    body = await response.json()
    assert body["checks"]["redis_data"]["ok"] is False
    assert "lost its data" in body["checks"]["redis_data"]["error"]
    assert body["checks"]["redis"]["ok"] is True
    metrics = _samples(await (await client.get("/metrics")).text())
    assert metrics[("redis_data_loss_total", ())] == 1
    ok = await client.post("/v1/functions/hello/invoke", json={"name": "x"}, headers=AUTH)
    assert ok.status == 200  # still serving


async def test_openapi_references_all_resolve(make_client: Make) -> None:
    client = await make_client()
    doc = await (await client.get("/v1/openapi.json", headers=AUTH)).json()

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    all_refs = refs(doc)
    assert "#/components/schemas/Greet" in all_refs
    for ref in all_refs:
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert part in target, f"{ref} does not resolve"
            target = target[part]


async def test_idempotency_key_rules(make_client: Make) -> None:
    client = await make_client(admission=AdmissionSettings(max_backlog=1))
    too_long = {**AUTH, "Idempotency-Key": "k" * 201}
    response = await client.post("/v1/functions/slow/jobs", json=0.0, headers=too_long)
    assert response.status == 400
    assert "Idempotency-Key must be 1 to 200" in (await response.json())["error"]["message"]
    keyed = {**AUTH, "Idempotency-Key": "once"}
    first = await client.post("/v1/functions/slow/jobs?delay_s=60", json=0.0, headers=keyed)
    assert first.status == 202
    # The backlog is now full, but repeating a known key adds no job: still answered.
    again = await client.post("/v1/functions/slow/jobs?delay_s=60", json=0.0, headers=keyed)
    assert again.status == 202
    assert (await again.json())["job_id"] == (await first.json())["job_id"]
    other = await client.post("/v1/functions/slow/jobs?delay_s=60", json=0.0, headers=AUTH)
    assert other.status == 429


async def test_server_spans_carry_http_attributes_and_need_a_token(make_client: Make) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await make_client(tracing=Tracing(provider))
    assert (await client.post("/v1/functions/hello/invoke", json={})).status == 401
    provider.force_flush()
    assert exporter.get_finished_spans() == ()  # no token, no span
    bad = await client.post("/v1/functions/hello/invoke", json={"name": 1}, headers=AUTH)
    assert bad.status == 422
    provider.force_flush()
    [span] = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 422
    assert attributes["http.request.method"] == "POST"
    assert span.status.status_code.name == "UNSET"  # a 4xx is the caller's, not an error
    assert not span.events  # no exception event with a stack trace


async def test_queue_wait_counts_from_when_the_job_was_due(make_client: Make) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await make_client(tracing=Tracing(provider))
    response = await client.post("/v1/functions/slow/jobs?delay_s=0.5", json=0.0, headers=AUTH)
    for _ in range(200):
        job = await (await client.get(response.headers["Location"], headers=AUTH)).json()
        if job["state"] == "completed":
            break
        await asyncio.sleep(0.02)
    provider.force_flush()
    [consume] = [s for s in exporter.get_finished_spans() if s.name == "process slow"]
    wait_ms = dict(consume.attributes or {})["runtime.queue_wait_ms"]
    assert isinstance(wait_ms, int) and 0 <= wait_ms < 300  # not the 500 ms delay


async def test_waiting_invokes_hold_no_redis_connection(make_client: Make) -> None:
    """Many callers waiting at once share one subscription: with a pool of 4 connections,
    40 concurrent invokes all get their result (each waiting on a pooled connection, they
    starved the workers and ended in 504s)."""
    client = await make_client(max_connections=4)

    async def one(i: int) -> int:
        response = await client.post(
            "/v1/functions/slow/invoke?timeout_s=20", json=0.2, headers=AUTH
        )
        return response.status

    statuses = await asyncio.gather(*(one(i) for i in range(40)))
    assert statuses == [200] * 40


_DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enq", b"not a number"),
        ("att", b"\xff\xfe"),
        ("rec", b"99999999999999999999999999"),
        ("end", b"-1e400"),
        ("state", b"bogus"),
        ("res", _DEEP_JSON),
        ("res", b"\xff not json"),
        ("err", b"\xff\xfe invalid utf-8"),
    ],
)
async def test_a_corrupt_job_record_is_shown_never_a_500(
    make_client: Make, field: str, value: bytes
) -> None:
    """GET /v1/jobs/{id} of a record whose field is garbage answers 200 with the record
    marked ``corrupt`` (or the field left out), never a 500."""
    from runtime.queue.keys import FunctionKeys
    from runtime.server.appkeys import BROKER_KEY, SETTINGS_KEY

    client = await make_client()
    response = await client.post("/v1/functions/hello/invoke", json={"name": "Ada"}, headers=AUTH)
    assert response.status == 200
    job_id = response.headers["X-Job-Id"]
    keys = FunctionKeys(client.app[SETTINGS_KEY].namespace, "hello")
    await client.app[BROKER_KEY].redis.hset(keys.job(job_id), field, value)
    response = await client.get(f"/v1/jobs/{job_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["id"] == job_id


async def test_a_job_key_of_the_wrong_type_is_shown_never_a_500(make_client: Make) -> None:
    from runtime.queue.keys import FunctionKeys
    from runtime.server.appkeys import BROKER_KEY, SETTINGS_KEY

    client = await make_client()
    keys = FunctionKeys(client.app[SETTINGS_KEY].namespace, "hello")
    await client.app[BROKER_KEY].redis.rpush(keys.job("hello.listkey"), "x")
    response = await client.get("/v1/jobs/hello.listkey", headers=AUTH)
    assert response.status in (200, 404), await response.text()
    if response.status == 200:
        assert "corrupt" in await response.json()
