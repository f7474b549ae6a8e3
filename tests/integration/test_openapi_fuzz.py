"""Schemathesis against a real ``runtime serve``: every operation of ``/v1/openapi.json``,
with generated valid and invalid input, must answer without a 5xx it does not document
and exactly as the document says (status, headers, content type, body schema)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")  # a dev dependency (pyproject.toml)

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from tests.integration.test_serve_limits import Child  # noqa: E402

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANDLERS = """
    from typing import Any
    import msgspec
    from runtime import function

    class Greet(msgspec.Struct, forbid_unknown_fields=True):
        name: str
        times: int = 1

    @function(timeout_s=5, max_payload_bytes=4096)
    async def hello(event: Greet) -> dict[str, str]:
        return {"greeting": "Hello, " + event.name}

    @function(timeout_s=5)
    async def echo(event: Any) -> Any:
        return event
"""
MAX_EXAMPLES = 30


def positive_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's check, less two refusals that JSON Schema cannot express (both in
    docs/http-api.md): a number written with a fraction (``3.0``) for an ``int`` field
    (JSON Schema calls it an integer), and an integer beyond 64 bits in an ``Any`` value
    (JSON Schema cannot tell ``10**30`` from ``1e30``, a float the API accepts)."""
    if response.status_code == 422 and any(
        known in response.content for known in (b"expected int, got float", b"outside -2**63")
    ):
        return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[Child]:
    folder = tmp_path_factory.mktemp("fuzz")
    child = Child(folder, {"RUNTIME_REDIS__URL": redis_server.url, "RUNTIME_HTTP__TOKEN": TOKEN,
                           "RUNTIME_NAMESPACE": "fuzz", "RUNTIME_LOG__LEVEL": "WARNING"},
                  handlers=HANDLERS)  # fmt: skip
    try:
        child.wait_ready()
        yield child
    finally:
        child.stop()


def _document(server: Child) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/openapi.json", headers=AUTH
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


OPERATIONS = [
    *(
        f"POST /v1/functions/{name}/{route}"
        for name in ("hello", "echo")
        for route in ("invoke", "jobs")
    ),
    "GET /v1/jobs/{job_id}",
    "GET /v1/functions",
    "GET /v1/openapi.json",
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_answers_as_documented(
    server: Child, label: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_dict(_document(server))
    base_url = f"http://127.0.0.1:{server.port}"
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        headers = {**(case.headers or {}), **AUTH}
        case.call_and_validate(
            base_url=base_url,
            headers=headers,
            timeout=30,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[positive_data_accepted],
        )

    run()
    assert server.process.poll() is None, server.logs()
    assert " ERROR " not in server.logs(), server.logs()
