"""Deployments in Redis, and their copies on a runtime's disk.

Redis holds versions (``keys.DeployKeys``): each a signed manifest and its files, one of
them active. The deployer publishes with one script (store, activate, notify, prune), so a
runtime never sees half a version, and a retried call changes nothing twice. A runtime
fetches the active version, verifies it (``bundle.open_bundle``) before a byte reaches its
disk, extracts it once into ``<deploy.dir>/<version>/`` and reports what it runs, or why it
refused, under ``{ns}:deploy:status`` for ``runtime deployments``.

Redis never holds the signing key: write access to Redis lets one choose among versions
that a key holder signed (a rollback), never run new code.

Nothing read here is trusted: a pointer or version id that is not a decimal number, or a
key of the wrong Redis type, is a ``DeployError`` (a version: ``BundleRefused``) naming
the key, never a ``ValueError`` or a raw Redis error escaping into the watcher.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import msgspec

from runtime.deploy.bundle import (
    BundleLimits,
    Manifest,
    VerifiedBundle,
    check_size,
    open_bundle,
    verify_manifest,
    write_files,
)
from runtime.errors import BrokerCommandError, BundleRefused, DeployError, RedisMemoryFull
from runtime.queue import scripts
from runtime.queue.connection import RedisClient
from runtime.queue.keys import DeployKeys

STATUS_ERROR_CHARS = 2000
KEEP_LOCAL_VERSIONS = 5  # extracted copies kept on disk besides the ones in use
MAX_VERSION_DIGITS = 18  # fits an int64, as INCR makes them


class PublishResult(msgspec.Struct, frozen=True):
    is_stored: bool  # False: the id already held another bundle (never happens with INCR)
    active_before: int | None
    active_after: int | None

    def is_active(self, version: int) -> bool:
        return self.active_after == version


class StoredVersion(msgspec.Struct, frozen=True):
    """A version as Redis holds it, signature not yet checked."""

    version: int
    manifest_json: bytes
    signature: bytes
    files_bytes: int  # length of the stored files blob


class InstanceStatus(msgspec.Struct, forbid_unknown_fields=True):
    """What one serving runtime runs, and the versions it refused (version -> why)."""

    instance: str
    host: str
    pid: int
    loaded: int | None = None
    refused: dict[int, str] = {}
    updated_ms: int = 0


_status_decoder = msgspec.json.Decoder(InstanceStatus)


def parse_version(raw: Any) -> int | None:
    """A version id as Redis holds it (decimal digits, or a script's integer reply); None
    when absent; ValueError for anything else."""
    if raw is None or raw in (b"", ""):
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    is_digits = isinstance(text, str) and text.isascii() and text.isdigit()
    if is_digits and len(text) <= MAX_VERSION_DIGITS:
        return int(text)
    raise ValueError(f"not a version number: {str(raw)[:60]}")


def _version_or_none(raw: Any) -> int | None:
    try:
        return parse_version(raw)
    except ValueError as exc:
        raise DeployError(f"Redis answered {exc}") from None


def _is_wrong_type(exc: BrokerCommandError) -> bool:
    return not isinstance(exc, RedisMemoryFull) and "WRONGTYPE" in str(exc)


class DeployStore:
    """The deployments of one namespace."""

    def __init__(self, redis: RedisClient, namespace: str, *, keep_versions: int) -> None:
        self.redis = redis
        self.namespace = namespace
        self.keys = DeployKeys(namespace)
        self._keep = keep_versions
        self._publish = scripts.register(redis, "deploy_publish")
        self._activate = scripts.register(redis, "deploy_activate")

    async def next_version(self) -> int:
        """A new version id. A deploy that fails after this leaves a gap, nothing else."""
        return int(await self.redis.incr(self.keys.seq))

    async def publish(
        self, version: int, manifest_json: bytes, signature: str, files_blob: bytes
    ) -> PublishResult:
        k = self.keys
        code, before, after = await self._publish(
            keys=[k.version(version), k.versions, k.active],
            args=[
                version,
                manifest_json,
                signature,
                files_blob,
                k.channel,
                self._keep,
                k.version_prefix,
            ],
        )
        return PublishResult(int(code) != 0, _version_or_none(before), _version_or_none(after))

    async def activate(self, version: int) -> int | None:
        """Make a stored version active and notify; returns the one active before."""
        before = await self._activate(
            keys=[self.keys.version(version), self.keys.active], args=[version, self.keys.channel]
        )
        if before is None:
            raise DeployError(f"version {version} is not stored (pruned, or never published)")
        return _version_or_none(before)

    async def active(self) -> int | None:
        """The active version; DeployError if the pointer is not a version number."""
        key = self.keys.active
        try:
            raw = await self.redis.get(key)
        except BrokerCommandError as exc:
            if _is_wrong_type(exc):
                raise DeployError(f"{key} is not a string key ({exc})") from None
            raise
        try:
            return parse_version(raw)
        except ValueError as exc:
            raise DeployError(f"{key} holds {exc}") from None

    async def versions(self) -> list[int]:
        """Stored version ids, newest first (a member that is not one is skipped)."""
        raw = cast("list[bytes]", await self.redis.zrevrange(self.keys.versions, 0, -1))
        out = []
        for member in raw:
            try:
                version = parse_version(member)
            except ValueError:
                continue
            if version is not None:
                out.append(version)
        return out

    async def stored(self, version: int) -> StoredVersion | None:
        """The version as stored; BundleRefused if its key is not a hash of bytes."""
        key = self.keys.version(version)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(key, ["manifest", "sig"])
        pipe.hstrlen(key, "files")
        try:
            (manifest_json, signature), files_bytes = await pipe.execute()
        except BrokerCommandError as exc:
            if _is_wrong_type(exc):
                raise BundleRefused(f"version {version}: {key} is not a hash ({exc})") from None
            raise
        if manifest_json is None or signature is None:
            return None
        if not isinstance(files_bytes, int):
            raise BundleRefused(f"version {version}: {key} answered {files_bytes!r}")
        return StoredVersion(version, manifest_json, signature, files_bytes)

    async def fetch(self, version: int, key: str, limits: BundleLimits) -> VerifiedBundle:
        """The version's files, verified; BundleRefused if it is missing or does not verify.

        The manifest's signature and this runtime's limits are checked before the files
        are fetched, so a forged entry cannot make a runtime read a huge blob.
        """
        stored = await self.stored(version)
        if stored is None:
            raise BundleRefused(f"version {version} is not stored (pruned or never published)")
        manifest = verify_manifest(
            key, stored.manifest_json, stored.signature, namespace=self.namespace, version=version
        )
        check_size(manifest, stored.files_bytes, limits)
        files_blob = await self.redis.hget(self.keys.version(version), "files")
        return open_bundle(
            key,
            stored.manifest_json,
            stored.signature,
            cast("bytes", files_blob or b""),
            namespace=self.namespace,
            version=version,
            limits=limits,
        )

    async def report(self, status: InstanceStatus) -> None:
        status.updated_ms = round(time.time() * 1000)
        status.refused = {v: why[:STATUS_ERROR_CHARS] for v, why in status.refused.items()}
        await self.redis.hset(self.keys.status, status.instance, msgspec.json.encode(status))

    async def forget(self, instance: str) -> None:
        await self.redis.hdel(self.keys.status, instance)

    async def statuses(self) -> list[InstanceStatus]:
        raw = cast("dict[bytes, bytes]", await self.redis.hgetall(self.keys.status))
        out = []
        for value in raw.values():
            try:
                out.append(_status_decoder.decode(value))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # written by a newer or broken runtime: not ours to show
        return sorted(out, key=lambda s: s.instance)


# -- the runtime's disk ----------------------------------------------------------------


def extract(bundle: VerifiedBundle, root: Path) -> Path:
    """``<root>/<version>/`` holding exactly the bundle's files.

    Written once, atomically (a private temp folder renamed into place), so runtimes that
    share a working directory share the copy; a copy already there is used only if it
    holds exactly the signed files, and replaced otherwise.
    """
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    version = bundle.manifest.version
    target = root / str(version)
    if target.exists():
        if _holds(target, bundle.manifest):
            return target
        stale = Path(tempfile.mkdtemp(prefix=f".stale-{version}-", dir=root))
        os.rename(target, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))  # mode 0700
    write_files(bundle.files, tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another runtime renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
        if not _holds(target, bundle.manifest):
            raise BundleRefused(f"{target} exists and does not hold the signed files") from None
    return target


def _holds(directory: Path, manifest: Manifest) -> bool:
    """Exactly the signed ``*.py`` files, byte for byte (no more: any .py would be loaded)."""
    try:
        on_disk = sorted(p.name for p in directory.glob("*.py"))
        if on_disk != sorted(e.name for e in manifest.files):
            return False
        return all(
            hashlib.sha256((directory / e.name).read_bytes()).hexdigest() == e.sha256
            for e in manifest.files
        )
    except OSError:
        return False


def prune_local(root: Path, in_use: set[int]) -> None:
    """Remove extracted versions older than the newest few, except those in use here.

    Another runtime sharing the folder may still run an older one: it has imported it
    already; only a process-executor child it starts later would miss its files, and that
    needs it to be more than ``KEEP_LOCAL_VERSIONS`` versions behind.
    """
    if not root.is_dir():
        return
    versions = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit()), reverse=True)
    for version in versions[KEEP_LOCAL_VERSIONS:]:
        if version not in in_use:
            shutil.rmtree(root / str(version), ignore_errors=True)
