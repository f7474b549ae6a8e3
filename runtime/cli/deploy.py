"""The deployment commands: ``deploy``, ``deployments``, ``rollback``. A thin shell over
``runtime.deploy``: ``bundle.py`` (build, sign), ``validate.py`` (the import child) and
``store.py`` (Redis); ``deploy_text.py`` prints for a person.

``runtime deploy DIR`` copies the folder's files into a private temp folder, validates that
copy exactly as ``runtime check`` would (in a child process; errors name the user's
``file:line``), and only then asks Redis for a version id and publishes: what was
validated is, byte for byte, what is signed and stored.

``deploy`` and ``rollback`` then wait (``--wait S``, default 10 s; ``--no-wait``) for every
live instance that follows deployments to answer (``runtime.deploy.fleet``), print who
accepted, who refused and why, and who did not answer, and exit 1 unless all accepted. A
version that any instance refused does not stay active: the version active before is put
back, atomically and only if the pointer still names the refused one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import msgspec

from runtime.cli.deploy_text import (
    VersionRow,
    confirmation_text,
    deployments_text,
    functions_table,
    progress_line,
)
from runtime.cli.exits import ExitStatus
from runtime.config.schema import Settings
from runtime.deploy.bundle import (
    BundleFile,
    BundleLimits,
    FunctionEntry,
    Manifest,
    build_manifest,
    collect_files,
    content_digest,
    encode_files,
    encode_manifest,
    file_entries,
    peek_manifest,
    sign,
    verify_manifest,
    write_files,
)
from runtime.deploy.fleet import Confirmation, Event, confirm
from runtime.deploy.store import DeployStore, InstanceStatus
from runtime.deploy.validate import relabel, shown_path, validate_sync
from runtime.errors import BundleRefused, ConfigError, DeployError, RegistryError
from runtime.queue.connection import connect
from runtime.queue.instances import live_instances, registry_keys

DEPLOY_COMMANDS = frozenset({"deploy", "deployments", "rollback"})
STATUS_STALE_MS = 60_000  # a status whose instance is gone is pruned after this


def _progress(event: Event, who: str, detail: str) -> None:
    print(progress_line(event, who, detail), file=sys.stderr, flush=True)


async def _confirm(
    store: DeployStore,
    settings: Settings,
    version: int,
    activation: int,
    previous: int | None,
    wait_s: float,
) -> Confirmation:
    window_s = max(3 * settings.metrics.refresh_s, 5.0)  # as a runtime counts live ones
    return await confirm(
        store, version, activation, previous, wait_s=wait_s, window_s=window_s, on_event=_progress
    )


def _wait_s(args: argparse.Namespace) -> float | None:
    return None if args.no_wait else float(args.wait)


def _key(settings: Settings) -> str:
    if not settings.deploy.signing_key:
        raise ConfigError(
            [
                "deploy.signing_key is not set: deployers and runtimes need the same key; "
                "set it in config/.secrets.toml ([deploy] signing_key = ...) or "
                "RUNTIME_DEPLOY__SIGNING_KEY"
            ]
        )
    return settings.deploy.signing_key


def deploy_main(
    args: argparse.Namespace, settings: Settings, redis_url: Callable[[], str]
) -> ExitStatus:
    if args.command == "deploy":
        files, functions = _validated(settings)
        return asyncio.run(_deploy(args, settings, redis_url(), files, functions))
    if args.command == "deployments":
        return asyncio.run(_deployments(args, settings, redis_url()))
    return asyncio.run(_rollback(args, settings, redis_url()))


def _validated(settings: Settings) -> tuple[list[BundleFile], list[FunctionEntry]]:
    """The folder's files and functions, validated as the copy that will be published."""
    _key(settings)  # before any work: a deploy without a key could never be loaded
    folder = Path(settings.functions_dir)
    files = collect_files(folder, BundleLimits.of(settings.deploy))
    shown = shown_path(folder)
    with tempfile.TemporaryDirectory(prefix="runtime-deploy-") as tmp:
        private = Path(tmp) / "functions"
        private.mkdir()
        write_files(files, private)
        try:
            timeout_s = settings.deploy.validate_timeout_s
            functions = validate_sync(private, settings.functions, timeout_s=timeout_s)
        except RegistryError as exc:
            raise RegistryError([relabel(p, private, shown) for p in exc.problems]) from None
    if not functions:
        raise RegistryError([f"{shown}: no functions found; nothing to deploy"])
    shown_functions = [
        msgspec.structs.replace(f, source=relabel(f.source, private, shown)) for f in functions
    ]
    return files, shown_functions


def _same_functions(a: Sequence[FunctionEntry], b: Sequence[FunctionEntry]) -> bool:
    def key(fs: Sequence[FunctionEntry]) -> list[tuple[str, str, bytes]]:
        return sorted((f.name, f.executor, msgspec.json.encode(f.options)) for f in fs)

    return key(a) == key(b)


async def _deploy(
    args: argparse.Namespace,
    settings: Settings,
    url: str,
    files: list[BundleFile],
    functions: list[FunctionEntry],
) -> ExitStatus:
    key = _key(settings)
    digest = content_digest(file_entries(files))
    redis = connect(settings.redis, url)
    confirmed: Confirmation | None = None
    try:
        store = DeployStore(redis, settings.namespace, keep_versions=settings.deploy.keep_versions)
        if not args.force:
            active = await _active_manifest(store, key)
            if active and active.digest == digest and _same_functions(active.functions, functions):
                print(
                    f"unchanged: version {active.version} is active with this content "
                    f"({digest[:12]}); nothing published (--force publishes anyway)"
                )
                return ExitStatus.OK
        version = await store.next_version()
        manifest = build_manifest(
            files, functions, namespace=settings.namespace, version=version, message=args.message
        )
        manifest_json = encode_manifest(manifest)
        result = await store.publish(
            version, manifest_json, sign(key, manifest_json), encode_files(files)
        )
        if not result.is_stored:
            raise DeployError(f"version id {version} already holds another bundle; deploy again")
        is_active = result.is_active(version)
        if not args.json:
            print(functions_table(manifest.functions))
            was = result.active_before if result.active_before is not None else "none"
            print(
                f"\npublished version {version} ({digest[:12]}, {len(files)} files, "
                f"{manifest.size_bytes} bytes)" + (f", active (was {was})" if is_active else ""),
                flush=True,
            )
        wait_s = _wait_s(args)
        if is_active and wait_s is not None:
            confirmed = await _confirm(store, settings, version, 1, result.active_before, wait_s)
    finally:
        await redis.aclose()
    if confirmed is not None and confirmed.reverted_to is not None:
        is_active = False
    if args.json:
        body = {
            "version": version,
            "active": is_active,
            "manifest": manifest,
            "fleet": confirmed.fleet if confirmed else None,
            "reverted_to": confirmed.reverted_to if confirmed else None,
        }
        print(msgspec.json.encode(body).decode())
    elif confirmed is not None:
        print(confirmation_text(confirmed))
    if confirmed is not None and not confirmed.fleet.is_accepted:
        return ExitStatus.FAILED
    if not is_active:
        print(
            f"warning: version {version} is stored but not active: version "
            f"{result.active_after} was published meanwhile and is newer; "
            f"`runtime rollback {version}` activates it",
            file=sys.stderr,
        )
        return ExitStatus.FAILED
    return ExitStatus.OK


async def _active_manifest(store: DeployStore, key: str) -> Manifest | None:
    active = await store.active()
    try:
        stored = await store.stored(active) if active is not None else None
    except BundleRefused:
        return None  # not trusted: never "unchanged"
    if active is None or stored is None:
        return None
    try:
        return verify_manifest(
            key, stored.manifest_json, stored.signature, namespace=store.namespace, version=active
        )
    except BundleRefused:
        return None  # not trusted: never "unchanged"


async def _deployments(args: argparse.Namespace, settings: Settings, url: str) -> ExitStatus:
    keys = settings.deploy.verification_keys()
    redis = connect(settings.redis, url)
    try:
        store = DeployStore(redis, settings.namespace, keep_versions=settings.deploy.keep_versions)
        active = await store.active()
        versions = (await store.versions())[: max(1, args.limit)]
        statuses = await _live_statuses(store, settings.namespace)
        rows = []
        for version in versions:
            try:
                stored = await store.stored(version)
            except BundleRefused as exc:  # e.g. a huge manifest: listed, never fetched
                rows.append(_refused_row(version, version == active, statuses, str(exc)))
                continue
            if stored is None:
                continue
            manifest = peek_manifest(stored.manifest_json)
            signature = "unverified"
            if keys:
                try:
                    verify_manifest(
                        keys,
                        stored.manifest_json,
                        stored.signature,
                        namespace=settings.namespace,
                        version=version,
                    )
                    signature = "ok"
                except BundleRefused:
                    signature = "INVALID"
            rows.append(
                VersionRow(
                    version=version,
                    is_active=version == active,
                    signature=signature,
                    digest=manifest.digest if manifest else None,
                    created_by=manifest.created_by if manifest else None,
                    created_at_ms=manifest.created_at_ms if manifest else None,
                    message=manifest.message if manifest else None,
                    functions=manifest.function_names if manifest else [],
                    running_on=[s.instance for s in statuses if s.loaded == version],
                    refused_by={
                        s.instance: s.refused[version] for s in statuses if version in s.refused
                    },
                )
            )
    finally:
        await redis.aclose()
    if args.json:
        print(msgspec.json.encode({"active": active, "versions": rows}).decode())
    elif not rows:
        print("no deployments yet: publish one with `runtime deploy DIR`")
    else:
        print(deployments_text(rows, has_key=bool(keys)))
    return ExitStatus.OK


def _refused_row(
    version: int, is_active: bool, statuses: list[InstanceStatus], why: str
) -> VersionRow:
    return VersionRow(
        version=version,
        is_active=is_active,
        signature="INVALID",
        digest=None,
        created_by=None,
        created_at_ms=None,
        message=why,
        functions=[],
        running_on=[s.instance for s in statuses if s.loaded == version],
        refused_by={s.instance: s.refused[version] for s in statuses if version in s.refused},
    )


async def _live_statuses(store: DeployStore, namespace: str) -> list[InstanceStatus]:
    """Statuses of live instances; those of instances gone for a while are pruned."""
    live = {i["id"] for i in await live_instances(store.redis, namespace, 30.0)}
    zset, _ = registry_keys(namespace)
    members = cast("list[bytes]", await store.redis.zrange(zset, 0, -1))
    known = {m.decode() for m in members}
    now_ms = round(time.time() * 1000)
    out = []
    for status in await store.statuses():
        if status.instance in live:
            out.append(status)
        elif status.instance not in known and now_ms - status.updated_ms > STATUS_STALE_MS:
            await store.forget(status.instance)
    return out


async def _rollback(args: argparse.Namespace, settings: Settings, url: str) -> ExitStatus:
    _key(settings)  # a deployer's command: it needs the key, though it signs nothing
    keys = settings.deploy.verification_keys()  # an older version may carry an older key
    redis = connect(settings.redis, url)
    try:
        store = DeployStore(redis, settings.namespace, keep_versions=settings.deploy.keep_versions)
        active = await store.active()
        versions = await store.versions()
        target = args.version
        if target is None:
            older = [v for v in versions if active is None or v < active]
            if not older:
                if active is None:
                    raise DeployError("no deployment is active yet; nothing to roll back")
                raise DeployError(f"no version older than {active} is stored; nothing to roll back")
            target = older[0]
        try:
            stored = await store.stored(target)
            if stored is None:
                listed = ", ".join(map(str, versions)) or "none"
                raise DeployError(f"version {target} is not stored (stored: {listed})")
            verify_manifest(
                keys,
                stored.manifest_json,
                stored.signature,
                namespace=settings.namespace,
                version=target,
            )
        except BundleRefused as exc:
            raise BundleRefused(f"refusing to activate version {target}: {exc}") from None
        activated = await store.activate(target)
        before = activated.before
        if not args.json:
            if before == target:
                # Activating it again is not useless: instances that refused it try again.
                print(f"version {target} was already active; runtimes that refused it retry now")
            else:
                print(f"version {target} is active again (was {before})", flush=True)
        wait_s = _wait_s(args)
        confirmed = None
        if wait_s is not None:
            confirmed = await _confirm(
                store, settings, target, activated.activation, before, wait_s
            )
    finally:
        await redis.aclose()
    if args.json:
        body = {
            "active": target if confirmed is None or confirmed.reverted_to is None else before,
            "was": before,
            "fleet": confirmed.fleet if confirmed else None,
            "reverted_to": confirmed.reverted_to if confirmed else None,
        }
        print(msgspec.json.encode(body).decode())
    elif confirmed is None:
        print("runtimes switch within ~2 s (--no-wait: not confirmed)")
    else:
        print(confirmation_text(confirmed))
    if confirmed is not None and not confirmed.fleet.is_accepted:
        return ExitStatus.FAILED
    return ExitStatus.OK
