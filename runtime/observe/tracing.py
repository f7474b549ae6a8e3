"""OpenTelemetry tracing across the queue (off by default).

The W3C trace context travels in the job envelope (``Envelope.trace``): the HTTP request
span → the enqueue span (PRODUCER) → one processing span per attempt (CONSUMER, child of
the enqueue span, so retries and recoveries stay in the original trace) → whatever spans
the handler makes. The sampling decision made upstream is respected (parent-based
sampling; ``OTEL_TRACES_SAMPLER`` is honoured by the SDK), never forced.

Nothing here touches global state on import. ``build_provider`` makes a provider from the
settings; ``Tracing`` wraps a provider (or none: every call is then a cheap no-op).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runtime.version import package_version

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from runtime.config.schema import TracingSettings

log = logging.getLogger("runtime.tracing")
_propagator = TraceContextTextMapPropagator()
SCOPE = "runtime"


def _parse_headers(raw: str) -> dict[str, str]:
    headers = {}
    for part in raw.split(","):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"tracing.headers: {key.strip()!r} has no '=value'")
            headers[key.strip()] = value.strip()
    return headers


def resource_attributes(settings: TracingSettings) -> dict[str, str]:
    """What this process adds to the span resource: the package version, and the configured
    service name. The SDK reads OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES and
    OTEL_SERVICE_NAME itself; the configured name applies only when OTEL_SERVICE_NAME is
    unset. ``service.version`` is always the code's own version (``runtime.version``)."""
    attributes = {"service.version": package_version()}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = settings.service_name
    return attributes


def build_provider(settings: TracingSettings) -> TracerProvider | None:
    """A provider exporting spans as configured, or None when tracing is disabled."""
    if not settings.enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    kwargs: dict[str, Any] = {}
    if settings.endpoint:
        kwargs["endpoint"] = settings.endpoint
    if settings.headers:
        kwargs["headers"] = _parse_headers(settings.headers)
    exporter: SpanExporter
    if settings.exporter == "otlp_http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(**kwargs)
    elif settings.exporter == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        exporter = GrpcExporter(**kwargs)
    else:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create(resource_attributes(settings)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Tracing:
    """Spans for the queue's hops; a no-op when built without a provider."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self.enabled = provider is not None
        self.provider = provider
        self._tracer = (provider or trace.NoOpTracerProvider()).get_tracer(SCOPE, package_version())

    @contextlib.contextmanager
    def server_span(self, name: str, headers: Mapping[str, str]) -> Iterator[trace.Span]:
        """The HTTP request's span, continuing the caller's trace when it sent one."""
        if not self.enabled:
            yield trace.INVALID_SPAN
            return
        parent = _propagator.extract(dict(headers))
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @staticmethod
    def end_server_span(span: trace.Span, method: str, path: str, status: int) -> None:
        """HTTP attributes; only a 5xx marks the span as an error (a 4xx is the caller's)."""
        if not span.is_recording():
            return
        span.set_attribute("http.request.method", method)
        span.set_attribute("url.path", path)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR))

    @contextlib.contextmanager
    def enqueue_span(self, function: str) -> Iterator[tuple[dict[str, str], trace.Span]]:
        """A PRODUCER span; yields the carrier to store in the envelope and the span."""
        if not self.enabled:
            yield {}, trace.INVALID_SPAN
            return
        with self._tracer.start_as_current_span(
            f"enqueue {function}",
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "redis", "runtime.function": function},
        ) as span:
            carrier: dict[str, str] = {}
            _propagator.inject(carrier)
            yield carrier, span

    @contextlib.contextmanager
    def process_span(
        self, function: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]
    ) -> Iterator[trace.Span]:
        """A CONSUMER span per attempt, child of the enqueue span carried by the job."""
        if not self.enabled:
            yield trace.INVALID_SPAN
            return
        parent = _propagator.extract(dict(carrier)) if carrier else otel_context.Context()
        with self._tracer.start_as_current_span(
            f"process {function}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=dict(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def shutdown(self) -> None:
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


class TraceLogFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` of the current span to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True
