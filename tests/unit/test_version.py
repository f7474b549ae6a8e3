"""The package version's one reader (``runtime.version``) and the span resource it feeds."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from opentelemetry.sdk.trace import TracerProvider

from runtime.config.schema import TracingSettings
from runtime.observe.tracing import Tracing, build_provider, resource_attributes
from runtime.version import package_version

EXPECTED = version("redis-function-runtime")


def test_package_version_is_the_distributions() -> None:
    assert package_version() == EXPECTED


def test_the_span_resource_names_the_service_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    settings = TracingSettings(enabled=True, exporter="console", service_name="rt-test")
    provider = build_provider(settings)
    assert provider is not None
    try:
        attributes = provider.resource.attributes
        assert (attributes["service.version"], attributes["service.name"]) == (EXPECTED, "rt-test")
    finally:
        provider.shutdown()


def test_with_otel_service_name_set_the_version_is_still_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert resource_attributes(TracingSettings(service_name="rt-test")) == {
        "service.version": EXPECTED
    }


def test_the_tracer_scope_carries_the_version() -> None:
    provider = TracerProvider()
    try:
        with Tracing(provider).server_span("GET /x", {}) as span:
            scope = span.instrumentation_scope  # type: ignore[attr-defined]
        assert (scope.name, scope.version) == ("runtime", EXPECTED)
    finally:
        provider.shutdown()
