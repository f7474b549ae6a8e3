"""The commands about the functions themselves: ``check`` and ``functions`` (a folder's
functions and their effective limits, as a table) and ``invoke`` (run one, print its result).

``invoke`` validates the payload before enqueueing it, against the local folder or, on a
machine without one but with the signing key, against the active deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

from runtime.cli.exits import ExitStatus
from runtime.cli.table import table_text
from runtime.config.registry import Registry, load_registry
from runtime.config.schema import Settings
from runtime.errors import JobFailed, RegistryError, ResultTimeout

FUNCTION_COMMANDS = frozenset({"check", "functions", "invoke"})


def functions_main(
    args: argparse.Namespace, settings: Settings, redis_url: Callable[[], str]
) -> ExitStatus:
    if args.command == "invoke" and _follows_deployments(args, settings):
        registry = asyncio.run(_deployed_registry(settings, redis_url))
    else:
        registry = load_registry(settings.functions_dir, settings.functions)
    if args.command in ("check", "functions"):
        print(_registry_table(registry))
        if args.command == "check":
            print(f"\n{len(registry)} function(s) OK in {settings.functions_dir}")
        return ExitStatus.OK
    assert args.command == "invoke", args.command  # noqa: S101 — argparse allows only these commands; a guard for the developer
    return asyncio.run(_invoke(args, settings, registry, redis_url))


def _registry_table(registry: Registry) -> str:
    header = ("function", "executor", "concurrency", "max_in_flight", "timeout_s",
              "max_attempts", "max_recoveries", "priority", "source")  # fmt: skip
    rows = [header]
    for spec in registry:
        o = spec.options
        rows.append((
            spec.name, spec.executor, str(o.concurrency), str(o.max_in_flight or "-"),
            f"{o.timeout_s:g}", str(o.max_attempts), str(o.max_recoveries), o.priority,
            spec.source,
        ))  # fmt: skip
    return table_text(rows)


def _follows_deployments(args: argparse.Namespace, settings: Settings) -> bool:
    """`invoke` validates against the active deployment when there is no local folder to
    validate against (a deployer's or operator's machine) and a signing key is set."""
    no_folder = not args.functions and not Path(settings.functions_dir).is_dir()
    return no_folder and bool(settings.deploy.verification_keys())


async def _deployed_registry(settings: Settings, redis_url: Callable[[], str]) -> Registry:
    """The active deployment's registry: fetched, its signature verified, extracted where
    the runtimes extract it, and loaded with the limits the deployer validated."""
    from runtime.deploy.bundle import BundleLimits
    from runtime.deploy.store import DeployStore, extract
    from runtime.queue.connection import connect

    redis = connect(settings.redis, redis_url())
    try:
        store = DeployStore(redis, settings.namespace, keep_versions=settings.deploy.keep_versions)
        version = await store.active()
        if version is None:
            raise RegistryError(
                [f"no functions folder {settings.functions_dir!r} and no active deployment: "
                 "give --functions DIR, or deploy one with `runtime deploy DIR`"]
            )  # fmt: skip
        limits = BundleLimits.of(settings.deploy)
        bundle = await store.fetch(version, settings.deploy.verification_keys(), limits)
    finally:
        await redis.aclose()
    folder = extract(bundle, Path(settings.deploy.dir))
    return load_registry(folder, bundle.manifest.overrides)


async def _invoke(
    args: argparse.Namespace, settings: Settings, registry: Registry, redis_url: Callable[[], str]
) -> ExitStatus:
    from runtime.client import Client

    spec = registry.get(args.name)
    payload = spec.decode_json(args.payload.encode())
    async with Client.from_settings(settings, redis_url(), registry) as client:
        job_id = await client.enqueue(
            args.name,
            payload,
            job_id=args.job_id,
            idempotency_key=args.idempotency_key,
            priority=args.priority,
            delay_s=args.delay,
            notify=not args.is_async,
        )
        if args.is_async:
            print(job_id)
            return ExitStatus.OK
        timeout_s = args.timeout
        if timeout_s is None:
            attempts = spec.options.max_attempts
            timeout_s = spec.options.timeout_s * attempts + (args.delay or 0) + 30
        try:
            result = await client.result(job_id, timeout_s)
        except JobFailed as exc:
            print(f"error: job {exc.job_id} failed ({exc.reason}): {exc.error}", file=sys.stderr)
            return ExitStatus.FAILED
        except ResultTimeout as exc:
            print(f"error: {exc}", file=sys.stderr)
            return ExitStatus.FAILED
        print(json.dumps(result, ensure_ascii=False))
        return ExitStatus.OK
