"""The shape of the settings: the frozen ``Settings`` struct and its sections (every key's
type, default and bounds), and the flat table of keys that loading and validation read.

The table of keys in docs/configuration.md follows this module; a test keeps them equal.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = ""  # empty: start the embedded redis-server
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 5.0  # every Redis call's socket timeout
    connect_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 2.0
    embedded_dir: str = ".runtime/redis"
    max_connections: Annotated[int, Meta(ge=2, le=10_000)] = 64
    # Accept a maxmemory-policy other than noeviction (Redis may then delete jobs):
    # a WARNING instead of an ERROR and a failing /readyz check `redis_config`.
    allow_eviction: bool = False
    # Redis Cluster only: every script write waits (WAIT) until this many replicas of its
    # master hold it, so an acknowledged enqueue or settle survives a failover; a write
    # that is not copied within replica_ack_timeout_ms fails as BrokerUnavailable.
    replica_acks: Annotated[int, Meta(ge=0, le=5)] = 0
    replica_ack_timeout_ms: Annotated[int, Meta(ge=1, le=60_000)] = 1000

    @property
    def block_s(self) -> float:
        """How long one blocking call (BLMOVE) may wait: it must end before the socket
        timeout, or a healthy wait would look like a dead connection."""
        return max(0.05, self.timeout_s * 0.8)


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65_535)] = 8080  # 0: any free port
    # Bearer token of the /v1 routes. Empty: a random one is made at start and written to
    # <redis.embedded_dir>/../http-token (mode 0600), where the CLI finds it.
    token: str = ""
    metrics_need_token: bool = False  # put /metrics behind the token too
    max_body_bytes: Annotated[int, Meta(ge=1024, le=1_073_741_824)] = 16_777_216
    max_wait_s: Annotated[float, Meta(gt=0, le=3600)] = 300.0  # longest invoke wait
    debug: bool = False  # include tracebacks in 500 answers
    # A connection must finish sending a request's headers within this long of opening
    # or of its previous answer (also the keep-alive idle limit), or it is closed.
    header_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    body_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0  # whole body, else 408
    # Open connections; past it the oldest idle one is closed, or the new one gets a 503.
    # Lowered at start to fit the file-descriptor limit (RLIMIT_NOFILE - 128).
    max_connections: Annotated[int, Meta(ge=2, le=1_000_000)] = 512
    # /v1 requests being handled at once (bodies being read included); past it 503.
    max_concurrent_requests: Annotated[int, Meta(ge=1, le=1_000_000)] = 128
    max_json_depth: Annotated[int, Meta(ge=1, le=1000)] = 64  # deeper bodies: 422


class AdmissionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When the HTTP API refuses new jobs with 429 (0 disables a limit)."""

    max_backlog: Annotated[int, Meta(ge=0)] = 0  # ready + delayed jobs of one function
    max_memory_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.9  # of Redis maxmemory, if set
    retry_after_s: Annotated[int, Meta(ge=1, le=3600)] = 1


class MetricsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    refresh_s: Annotated[float, Meta(ge=0.1, le=300)] = 2.0  # queue gauges, instances


class ScaleSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``GET /v1/scale`` (docs/deploying.md, "Autoscaling")."""

    # The share of each replica's slots the fleet should keep busy; ?target= overrides it.
    target_utilization: Annotated[float, Meta(gt=0, le=1)] = 0.7


class TracingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = False
    exporter: Literal["otlp_http", "otlp_grpc", "console"] = "otlp_http"
    # Empty: the exporter's default, or OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT when set.
    endpoint: str = ""
    headers: str = ""  # "key=value,key2=value2"; empty: OTEL_EXPORTER_OTLP_HEADERS
    service_name: str = "runtime"


class WorkerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    lease_s: Annotated[float, Meta(ge=0.2)] = 30.0
    heartbeat_s: Annotated[float, Meta(gt=0)] = 10.0
    reclaim_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    idle_poll_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = 10.0
    claim_batch: Annotated[int, Meta(ge=1, le=1000)] = 100
    keep_result_s: Annotated[int, Meta(ge=1)] = 86_400
    max_envelope_bytes: Annotated[int, Meta(ge=1024)] = 16_777_216
    # Each failed attempt logs one WARNING; with this on, the handler's traceback follows it
    # (the last one is stored on the job either way, bounded to 8 KiB).
    log_tracebacks: bool = True

    @property
    def lease_ms(self) -> int:
        """``lease_s`` as the scripts take it."""
        return round(self.lease_s * 1000)


class DeploySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Versioned deployments (docs/deploying.md): how bundles are signed, limited and kept."""

    # HMAC-SHA256 key shared by deployers and runtimes, never stored in Redis. Empty:
    # `runtime deploy` refuses to publish and `runtime serve` serves a local folder.
    signing_key: str = ""
    # More keys a bundle's signature may verify with, besides signing_key: a fleet rotates
    # keys without downtime by verifying the old and the new one for a while
    # (docs/deploying.md, "Rotating the signing key"). Never used to sign.
    verify_keys: tuple[str, ...] = ()
    dir: str = ".runtime/deployments"  # where a runtime extracts the versions it loads
    max_bundle_bytes: Annotated[int, Meta(ge=1024, le=268_435_456)] = 8_388_608
    max_files: Annotated[int, Meta(ge=1, le=10_000)] = 256
    keep_versions: Annotated[int, Meta(ge=2, le=10_000)] = 20  # in Redis; older are pruned
    check_interval_s: Annotated[float, Meta(gt=0, le=60)] = 1.0  # besides pub/sub
    validate_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0  # the import subprocess

    def verification_keys(self) -> tuple[str, ...]:
        """The keys a signature may verify with: the signing key, then ``verify_keys``
        (empty ones and repeats dropped). Empty: deployments are not followed."""
        return tuple(dict.fromkeys(k for k in (self.signing_key, *self.verify_keys) if k))


MIN_SIGNING_KEY_CHARS = 32


class UiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The web console at /ui (runtime/server/console)."""

    enabled: bool = True
    # A link from a job page to a tracing UI; "{trace_id}" is replaced, e.g.
    # "http://jaeger:16686/trace/{trace_id}" (empty: the trace id is shown, not linked).
    trace_url: Annotated[str, Meta(pattern=r"^$|^https?://[^\s\"'<>]*\{trace_id\}[^\s\"'<>]*$")] = (
        ""
    )
    session_s: Annotated[float, Meta(ge=60, le=2_592_000)] = 43_200.0  # sign-in lifetime
    page_size: Annotated[int, Meta(ge=5, le=500)] = 50  # rows of one page of any list


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    namespace: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_\-]{1,32}$")] = "rt"
    functions_dir: str = "functions"
    # The serve process's event loop: "auto" = uvloop when installed, else asyncio's.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    worker: WorkerSettings = WorkerSettings()
    log: LogSettings = LogSettings()
    admission: AdmissionSettings = AdmissionSettings()
    metrics: MetricsSettings = MetricsSettings()
    scale: ScaleSettings = ScaleSettings()
    tracing: TracingSettings = TracingSettings()
    deploy: DeploySettings = DeploySettings()
    ui: UiSettings = UiSettings()
    # [functions.<name>]: FunctionOptions keys, merged over decorator options by the registry
    functions: dict[str, dict[str, Any]] = {}
    # [params.<name>]: free-form parameters handed to that function's handler
    params: dict[str, dict[str, Any]] = {}


Key = tuple[str, ...]
TABLES = ("functions", "params")
SECTIONS: dict[str, type[msgspec.Struct]] = {
    "redis": RedisSettings,
    "http": HttpSettings,
    "worker": WorkerSettings,
    "log": LogSettings,
    "admission": AdmissionSettings,
    "metrics": MetricsSettings,
    "scale": ScaleSettings,
    "tracing": TracingSettings,
    "deploy": DeploySettings,
    "ui": UiSettings,
}


def _schema() -> dict[Key, Any]:
    """Every scalar key of ``Settings`` with its annotated type."""
    hints = typing.get_type_hints(Settings, include_extras=True)
    known: dict[Key, Any] = {}
    for name, hint in hints.items():
        if name in SECTIONS:
            for field, sub in typing.get_type_hints(SECTIONS[name], include_extras=True).items():
                known[(name, field)] = sub
        elif name not in TABLES:
            known[(name,)] = hint
    return known


SCHEMA = _schema()
