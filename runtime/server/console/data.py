"""What the console shows, read through the runtime's own readers (``queue.admin``,
``deploy.store``), every read bounded: a page of functions, a page of the DLQ, one job.

The adapters for job control that the queue layer does not offer yet (run history,
cancellation, progress) are the three functions at the end of this module; each answers
None, "not available", until it is pointed at the queue layer's own calls. They are the
only place the console learns about them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from runtime.config.schema import Settings
from runtime.deploy.bundle import Manifest, verify_manifest
from runtime.deploy.store import DeployStore, InstanceStatus
from runtime.errors import BundleRefused, DeployError, PayloadError
from runtime.jobs import envelope
from runtime.jobs.envelope import function_of
from runtime.jobs.records import JobRecord, iso_ms
from runtime.queue.admin import Admin
from runtime.queue.admin_stats import FunctionStats, Stats
from runtime.queue.dlq import DlqFilter, DlqReport
from runtime.queue.peek import Peek
from runtime.server.appkeys import BROKER_KEY, MODE_KEY, REGISTRY_KEY, SETTINGS_KEY
from runtime.server.routes import function_body

MAX_JOB_ID_CHARS = 300
MAX_ENVELOPE_SHOWN = 262_144  # a larger envelope is sized, not fetched
RECENT_FAILURES = 10


class Page(msgspec.Struct):
    number: int  # from 0
    size: int
    total: int

    @property
    def count(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        return (self.number + 1) * self.size < self.total


def admin(app: web.Application) -> Admin:
    settings = app[SETTINGS_KEY]
    return Admin(app[BROKER_KEY].redis, settings.namespace)


def page_size(app: web.Application) -> int:
    return app[SETTINGS_KEY].ui.page_size


# -- the fleet overview ----------------------------------------------------------------------


class Overview(msgspec.Struct):
    stats: Stats
    page: Page
    query: str


async def overview(app: web.Application, number: int, query: str) -> Overview:
    """One page of the registered functions (sorted, filtered by a substring of the
    name), with their stats: two pipelined round trips for the page, whatever the fleet."""
    registry = app[REGISTRY_KEY]
    names = sorted(n for n in registry.names if query in n)
    size = page_size(app)
    page = Page(max(0, min(number, (len(names) - 1) // size if names else 0)), size, len(names))
    shown = names[page.number * size : (page.number + 1) * size]
    on_page = set(shown)
    caps = {s.name: s.options.max_in_flight for s in registry if s.name in on_page}
    stats = await admin(app).stats(shown, caps, registered=shown)
    return Overview(stats, page, query)


# -- one function -----------------------------------------------------------------------------


class FunctionView(msgspec.Struct):
    name: str
    limits: dict[str, Any]
    stats: FunctionStats
    failures: Peek  # the newest dead letters, with tracebacks
    runs: list[dict[str, Any]] | None  # run history; None: not available


async def function_view(app: web.Application, name: str) -> FunctionView | None:
    registry = app[REGISTRY_KEY]
    spec = next((s for s in registry if s.name == name), None)
    if spec is None:
        return None
    limits = function_body(spec)
    limits.pop("payload_schema", None)
    limits["rate_limit"] = getattr(spec.options, "rate_limit", None)
    a = admin(app)
    stats = await a.stats([name], {name: spec.options.max_in_flight}, registered=[name])
    failures = await a.peek(name, is_dlq=True, count=RECENT_FAILURES, with_traceback=True)
    return FunctionView(name, limits, stats.functions[0], failures, await recent_runs(app, name))


# -- one job ----------------------------------------------------------------------------------


class JobView(msgspec.Struct):
    record: JobRecord
    times: dict[str, str | None]
    payload: str | None = None  # pretty JSON
    payload_error: str | None = None
    result: str | None = None
    trace_id: str | None = None
    trace_link: str | None = None
    progress: dict[str, Any] | None = None  # None: not available
    can_cancel: bool = False


def job_function(job_id: str) -> str | None:
    if len(job_id) > MAX_JOB_ID_CHARS:
        return None
    try:
        return function_of(job_id) or None
    except PayloadError:
        return None


def trace_id_of(trace: dict[str, str]) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``)."""
    parts = trace.get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        try:
            int(parts[1], 16)
        except ValueError:
            return None
        return parts[1].lower()
    return None


def _pretty(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


async def job_view(app: web.Application, job_id: str) -> JobView | None:
    function = job_function(job_id)
    if function is None:
        return None
    broker = app[BROKER_KEY]
    record = await broker.job(job_id)
    if record is None:
        return None
    view = JobView(
        record,
        {
            "enqueued": iso_ms(record.enqueued_ms),
            "started": iso_ms(record.started_ms),
            "finished": iso_ms(record.finished_ms),
        },
    )
    if record.result is not None:
        try:
            view.result = _pretty(msgspec.json.decode(record.result))
        except (msgspec.DecodeError, RecursionError):
            view.result = record.result[:2000].decode("utf-8", "replace")
    await _read_envelope(app, job_id, view)
    trace_url = app[SETTINGS_KEY].ui.trace_url
    if view.trace_id and trace_url:
        view.trace_link = trace_url.replace("{trace_id}", view.trace_id)
    view.progress = await progress_of(app, record)
    view.can_cancel = (await cancel_available(app)) and not record.is_terminal
    return view


async def _read_envelope(app: web.Application, job_id: str, view: JobView) -> None:
    """Payload and trace context from the stored envelope (sized first, then fetched)."""
    redis = app[BROKER_KEY].redis
    key = admin(app).keys(view.record.function).job(job_id)
    size = int(await redis.hstrlen(key, "env"))
    if size == 0:
        view.payload_error = "no envelope stored"
        return
    if size > MAX_ENVELOPE_SHOWN:
        view.payload_error = f"envelope of {size} bytes not fetched"
        return
    raw = await redis.hget(key, "env")
    try:
        env = envelope.decode(raw if isinstance(raw, bytes) else b"", MAX_ENVELOPE_SHOWN)
        view.trace_id = trace_id_of(dict(env.trace))
        view.payload = _pretty(msgspec.msgpack.decode(env.payload))
    except (envelope.EnvelopeError, msgspec.DecodeError, msgspec.EncodeError, TypeError) as exc:
        view.payload_error = f"payload not shown: {exc}"[:500]
    except RecursionError:
        view.payload_error = "payload not shown: nested too deep"


# -- the DLQ ----------------------------------------------------------------------------------


class DlqView(msgspec.Struct):
    function: str
    entries: Peek
    page: Page
    reasons: tuple[str, ...]
    older_than_s: float
    hidden: int  # entries of this page that do not match the filter


def dlq_filter(reasons: list[str], older_than_s: float) -> DlqFilter:
    return DlqFilter(tuple(r for r in reasons if r), max(0.0, older_than_s))


async def dlq_view(app: web.Application, function: str, number: int, flt: DlqFilter) -> DlqView:
    """One page of the DLQ, newest first: one bounded LRANGE and one HMGET per entry,
    whatever its length. The filter hides the entries of this page it does not match;
    the filter actions (requeue or purge what matches) go through the whole DLQ."""
    size = page_size(app)
    a = admin(app)
    total = await a.dlq_length(function)
    number = max(0, min(number, (total - 1) // size if total else 0))
    peek = await a.peek(function, is_dlq=True, count=size, offset=number * size)
    shown = [j for j in peek.jobs if _matches(j.reason, j.age_s, flt)]
    hidden = len(peek.jobs) - len(shown)
    peek.jobs = shown
    return DlqView(function, peek, Page(number, size, total), flt.reasons, flt.older_than_s, hidden)


def _matches(reason: str | None, age: float | None, flt: DlqFilter) -> bool:
    if flt.reasons and (reason or "") not in flt.reasons:
        return False
    return not flt.older_than_s or (age is not None and age >= flt.older_than_s)


async def dlq_action(
    app: web.Application, function: str, action: str, flt: DlqFilter, ids: list[str], offset: int
) -> DlqReport:
    """Requeue or purge what matches the filter, or the selected ids: the CLI's passes
    (``runtime requeue-dlq`` / ``purge-dlq``) and their report."""
    a = admin(app)
    if ids:
        return await a.pick_dlq(function, action, ids, from_tail=offset)
    if action == "requeue":
        return await a.requeue_dlq(function, flt)
    return await a.purge_dlq(function, flt)


# -- deployments ------------------------------------------------------------------------------


class VersionRow(msgspec.Struct):
    version: int
    is_active: bool
    manifest: Manifest | None
    problem: str | None
    created_at: str | None


class DeploymentsView(msgspec.Struct):
    is_deploy_mode: bool
    active: int | None = None
    versions: list[VersionRow] = []
    statuses: list[InstanceStatus] = []
    problem: str | None = None


def _store(app: web.Application) -> DeployStore:
    settings: Settings = app[SETTINGS_KEY]
    keep = settings.deploy.keep_versions
    return DeployStore(app[BROKER_KEY].redis, settings.namespace, keep_versions=keep)


async def deployments_view(app: web.Application) -> DeploymentsView:
    settings = app[SETTINGS_KEY]
    if app[MODE_KEY] != "deploy" or not settings.deploy.signing_key:
        return DeploymentsView(is_deploy_mode=False)
    store = _store(app)
    view = DeploymentsView(is_deploy_mode=True)
    try:
        view.active = await store.active()
    except DeployError as exc:
        view.problem = str(exc)
    for version in (await store.versions())[: settings.deploy.keep_versions]:
        manifest, problem = await _manifest(app, store, version)
        created = iso_ms(manifest.created_at_ms) if manifest else None
        view.versions.append(
            VersionRow(version, version == view.active, manifest, problem, created)
        )
    view.statuses = await store.statuses()
    return view


async def _manifest(
    app: web.Application, store: DeployStore, version: int
) -> tuple[Manifest | None, str | None]:
    settings = app[SETTINGS_KEY]
    try:
        stored = await store.stored(version)
        if stored is None:
            return None, "not stored"
        manifest = verify_manifest(
            settings.deploy.signing_key,
            stored.manifest_json,
            stored.signature,
            namespace=settings.namespace,
            version=version,
        )
    except (BundleRefused, DeployError) as exc:
        return None, str(exc)[:300]
    return manifest, None


async def rollback(app: web.Application, version: int) -> int | None:
    """Activate a stored version whose manifest verifies (what ``runtime rollback N``
    does); the runtimes following deployments load it. Returns the version active before."""
    store = _store(app)
    manifest, problem = await _manifest(app, store, version)
    if manifest is None:
        raise DeployError(f"refusing to activate version {version}: {problem}")
    return (await store.activate(version)).before


# -- job control: adapters to the queue layer's history, cancellation and progress ------------


async def recent_runs(app: web.Application, function: str) -> list[dict[str, Any]] | None:
    """The function's latest finished runs (finish time, state, reason, duration,
    attempts), newest first: one page of the run history (``GET /v1/jobs``)."""
    page = await app[BROKER_KEY].history(function, limit=page_size(app))
    return [
        {
            "id": run.id,
            "state": run.state,
            "finished_at": iso_ms(run.finished_ms),
            "reason": run.reason or "",
            "duration_s": "" if run.duration_ms is None else f"{run.duration_ms / 1000:.3f}",
            "attempts": run.attempts,
        }
        for run in page.jobs
    ]


async def cancel_available(app: web.Application) -> bool:
    """Whether this build can cancel jobs (see :func:`cancel`)."""
    return True


async def cancel(app: web.Application, job_id: str) -> str | None:
    """Ask for a job's cancellation (lua/cancel.lua); what it did: ``cancelled``,
    ``requested`` (running: its worker stops it), ``finished``, ``missing`` or ``corrupt``."""
    reply = await app[BROKER_KEY].cancel(job_id)
    return reply.outcome


async def progress_of(app: web.Application, record: JobRecord) -> dict[str, Any] | None:
    """A job's last reported progress (``fraction``, ``message``); None: none reported."""
    if record.progress is None:
        return None
    return {"fraction": record.progress.fraction, "message": record.progress.message}
