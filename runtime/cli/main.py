"""The ``runtime`` command: a thin shell over settings, registry, app and client.

Exit status: 0 success; 1 the job failed or did not finish in time (or an operator said no);
2 bad configuration, bad handler folder or bad input; 3 Redis unreachable; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.cli.admin import ADMIN_COMMANDS, admin_main
from runtime.cli.deploy import (
    DEPLOY_COMMANDS,
    deploy_main,
    serve_mode,
    serve_registry,
)
from runtime.cli.exits import KNOWN_ERRORS, ExitStatus, status_of
from runtime.cli.parser import build_parser
from runtime.cli.table import table_text
from runtime.cli.tools import TOOL_COMMANDS, tools_main
from runtime.config.registry import Registry, load_registry
from runtime.config.settings import Settings, load_settings, settings_to_dict
from runtime.errors import (
    EmbeddedRedisError,
    JobFailed,
    RegistryError,
    ResultTimeout,
)
from runtime.queue.broker import REDIS_ERRORS


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "functions_dir": getattr(args, "functions", None) or getattr(args, "dir", None),
        "http.host": getattr(args, "host", None),
        "http.port": getattr(args, "port", None),
        "redis.url": getattr(args, "redis", None),
    }
    return load_settings(config_dir=args.config, overrides=overrides)


def _registry(settings: Settings) -> Registry:
    return load_registry(settings.functions_dir, settings.functions)


def _table(registry: Registry) -> str:
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


def _redis_url(settings: Settings) -> str:
    if settings.redis.url:
        return settings.redis.url
    from runtime.server.embedded import discover

    url = discover(settings.redis.embedded_dir)
    if url is None:
        raise EmbeddedRedisError(
            f"no embedded Redis is running in {settings.redis.embedded_dir}: start "
            "`runtime serve` first, or give --redis URL / RUNTIME_REDIS__URL"
        )
    return url


def _follows_deployments(args: argparse.Namespace, settings: Settings) -> bool:
    """`invoke` validates against the active deployment when there is no local folder to
    validate against (a deployer's or operator's machine) and a signing key is set."""
    no_folder = not args.functions and not Path(settings.functions_dir).is_dir()
    return no_folder and bool(settings.deploy.signing_key)


async def _deployed_registry(settings: Settings) -> Registry:
    """The active deployment's registry: fetched, its signature verified, extracted where
    the runtimes extract it, and loaded with the limits the deployer validated."""
    from runtime.deploy.bundle import BundleLimits
    from runtime.deploy.store import DeployStore, extract
    from runtime.queue.broker import connect

    redis = connect(settings.redis, _redis_url(settings))
    try:
        store = DeployStore(redis, settings.namespace, keep_versions=settings.deploy.keep_versions)
        version = await store.active()
        if version is None:
            raise RegistryError(
                [f"no functions folder {settings.functions_dir!r} and no active deployment: "
                 "give --functions DIR, or deploy one with `runtime deploy DIR`"]
            )  # fmt: skip
        limits = BundleLimits.of(settings.deploy)
        bundle = await store.fetch(version, settings.deploy.signing_key, limits)
    finally:
        await redis.aclose()
    folder = extract(bundle, Path(settings.deploy.dir))
    return load_registry(folder, bundle.manifest.overrides)


async def _invoke(args: argparse.Namespace, settings: Settings, registry: Registry) -> ExitStatus:
    from runtime.client import Client

    spec = registry.get(args.name)
    payload = spec.decode_json(args.payload.encode())
    async with Client.from_settings(settings, _redis_url(settings), registry) as client:
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


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (default: the process's arguments); its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(_dispatch(args))
    except KNOWN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(status_of(exc))
    except (*REDIS_ERRORS,) as exc:
        print(f"error: Redis unreachable: {exc}", file=sys.stderr)
        return int(ExitStatus.REDIS)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)


def _dispatch(args: argparse.Namespace) -> ExitStatus:
    settings = _settings(args)
    if args.command == "config":
        if args.action == "show":
            print(json.dumps(settings_to_dict(settings, masked=True), indent=2))
        else:
            print("configuration OK")
        return ExitStatus.OK
    from runtime.observe.logs import setup_logging

    setup_logging(settings.log.level, settings.log.format)
    if args.command in ADMIN_COMMANDS:
        return asyncio.run(admin_main(args, settings, _redis_url(settings)))
    if args.command in TOOL_COMMANDS:
        return asyncio.run(tools_main(args, settings, _redis_url(settings)))
    if args.command in DEPLOY_COMMANDS:
        return deploy_main(args, settings, lambda: _redis_url(settings))
    if args.command == "serve":
        from runtime.server.app import serve

        mode = serve_mode(args, settings)
        serve(settings, serve_registry(mode, settings), mode=mode)
        return ExitStatus.OK
    if args.command == "invoke" and _follows_deployments(args, settings):
        registry = asyncio.run(_deployed_registry(settings))
    else:
        registry = _registry(settings)
    if args.command in ("check", "functions"):
        print(_table(registry))
        if args.command == "check":
            print(f"\n{len(registry)} function(s) OK in {settings.functions_dir}")
        return ExitStatus.OK
    assert args.command == "invoke", args.command
    return asyncio.run(_invoke(args, settings, registry))


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
