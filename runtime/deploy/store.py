"""Deployments in Redis, and their copies on a runtime's disk.

Redis holds versions (``keys.DeployKeys``): each a signed manifest and its files, one of
them active. The deployer publishes with one script (store, activate, notify, prune), so a
runtime never sees half a version, and a retried call changes nothing twice. A runtime
fetches the active version, verifies it (``bundle.open_bundle``) before a byte reaches its
disk, extracts it once into ``<deploy.dir>/<version>/`` (``disk.py``) and reports what it
runs, or why it refused, under ``{ns}:deploy:status`` for ``runtime deployments``.

Redis never holds the signing key: write access to Redis lets one choose among versions
that a key holder signed (a rollback), never run new code.

Nothing read here is trusted: a pointer or version id that is not a decimal number, or a
key of the wrong Redis type, is a ``DeployError`` (a version: ``BundleRefused``) naming
the key, never a ``ValueError`` or a raw Redis error escaping into the watcher. Sizes are
asked first (``STRLEN``, ``HSTRLEN``): a value over its limit is refused without a byte of
it crossing the network, so a huge value written into Redis cannot make a runtime (or the
deploy command) read it.
"""

from __future__ import annotations

import time
from typing import Any, cast

import msgspec

from runtime.deploy.bundle import (
    MAX_MANIFEST_BYTES,
    SIGNATURE_CHARS,
    BundleLimits,
    Keys,
    VerifiedBundle,
    check_size,
    open_bundle,
    verify_manifest,
)
from runtime.deploy.disk import extract, prune_local
from runtime.errors import BrokerCommandError, BundleRefused, DeployError, RedisMemoryFull
from runtime.queue import scripts
from runtime.queue.connection import RedisClient
from runtime.queue.keys import DeployKeys

STATUS_ERROR_CHARS = 2000
__all__ = ["Activation", "Attempt", "DeployStore", "InstanceStatus", "StoredVersion",
           "extract", "parse_version", "prune_local"]  # fmt: skip
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
    activation: int = 0  # times it was made active (0: published by an older deployer)


class Attempt(msgspec.Struct, frozen=True):
    """A version as it stood when a runtime tried it, read without fetching its bundle:
    the activation (``deploy_activate.lua`` counts them), the signature (the HMAC digest
    of the manifest) and the stored sizes. Trying an equal attempt again gives the same
    answer, so a refused version is tried again only when one of these changes: an
    explicit activation (``runtime rollback N``) or new content, never a notification."""

    activation: int
    signature: str
    manifest_bytes: int
    files_bytes: int


UNREADABLE = Attempt(-1, "", -1, -1)  # the version's key is not a hash: refused as such


class _Fields(msgspec.Struct, array_like=True):
    """``deploy_read.lua``'s reply: field sizes, then the small fields (b"": not sent)."""

    manifest_bytes: int
    sig_bytes: int
    files_bytes: int
    activations_bytes: int
    manifest: bytes
    sig: bytes
    activations: bytes


class InstanceStatus(msgspec.Struct):
    """What one serving runtime runs, and the versions it refused (version -> why, and
    version -> the activation it refused: the deploy command waits for an answer to *its*
    activation, not an old one). Unknown fields are ignored: a newer runtime's status
    still shows here."""

    instance: str
    host: str
    pid: int
    loaded: int | None = None
    refused: dict[int, str] = {}
    updated_ms: int = 0
    refused_activation: dict[int, int] = {}

    def answer(self, version: int, activation: int) -> str | None:
        """ "accepted", "refused", or None (no answer yet) to that activation of a version."""
        if self.loaded == version:
            return "accepted"
        if version in self.refused and self.refused_activation.get(version, 0) >= activation:
            return "refused"
        return None


class Activation(msgspec.Struct, frozen=True):
    """What ``activate`` did: the version active before, and which activation this was
    (0 when nothing changed: the pointer had moved on)."""

    is_done: bool
    before: int | None
    activation: int


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


def _count_or_refuse(raw: Any, what: str) -> int:
    try:
        return parse_version(raw) or 0
    except ValueError as exc:
        raise BundleRefused(f"{what}: {exc}") from None


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
        self._read_script = scripts.register_read_only(redis, "deploy_read")

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

    async def activate(self, version: int, *, if_active: int | None = None) -> Activation:
        """Make a stored version active and notify. With ``if_active``, only while the
        pointer still names that version (putting back the previous one after a refusal
        must not undo someone else's newer deploy): ``is_done`` False otherwise."""
        code, before, activation = await self._activate(
            keys=[self.keys.version(version), self.keys.active],
            args=[version, self.keys.channel, "" if if_active is None else if_active],
        )
        if int(code) == 0:
            raise DeployError(f"version {version} is not stored (pruned, or never published)")
        return Activation(int(code) == 1, _version_or_none(before), int(activation))

    async def active(self) -> int | None:
        """The active version; DeployError if the pointer is not a version number (a huge
        value is refused by its length: at most a few bytes of it are read)."""
        key = self.keys.active
        pipe = self.redis.pipeline(transaction=False)
        pipe.strlen(key)
        pipe.getrange(key, 0, MAX_VERSION_DIGITS)
        try:
            length, raw = await pipe.execute()
        except BrokerCommandError as exc:
            if _is_wrong_type(exc):
                raise DeployError(f"{key} is not a string key ({exc})") from None
            raise
        if int(length) > MAX_VERSION_DIGITS:
            raise DeployError(f"{key} holds a {length}-byte value, not a version number")
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

    async def _read(self, version: int, *, max_manifest_bytes: int) -> _Fields:
        """The version's field sizes, and its small fields if within their limits (one
        atomic script: nothing over a limit is sent); BundleRefused if not a hash."""
        key = self.keys.version(version)
        try:
            reply = await self._read_script(
                keys=[key], args=[max_manifest_bytes, SIGNATURE_CHARS, MAX_VERSION_DIGITS]
            )
        except BrokerCommandError as exc:
            if _is_wrong_type(exc):
                raise BundleRefused(f"version {version}: {key} is not a hash ({exc})") from None
            raise
        try:
            return msgspec.convert(reply, _Fields)
        except msgspec.ValidationError as exc:
            raise BundleRefused(f"version {version}: {key} answered {exc}") from None

    async def stored(self, version: int) -> StoredVersion | None:
        """The version as stored, None if it is not; BundleRefused if its key is not a
        hash, or its manifest or signature is over its size (then it is not fetched)."""
        f = await self._read(version, max_manifest_bytes=MAX_MANIFEST_BYTES)
        if f.manifest_bytes == 0 or f.sig_bytes == 0:
            return None
        if f.manifest_bytes > MAX_MANIFEST_BYTES:
            raise BundleRefused(
                f"manifest is {f.manifest_bytes} bytes, over {MAX_MANIFEST_BYTES}: not fetched"
            )
        if f.sig_bytes != SIGNATURE_CHARS:
            raise BundleRefused(
                f"signature is {f.sig_bytes} bytes, not a {SIGNATURE_CHARS}-digit hex HMAC"
            )
        activation = _count_or_refuse(f.activations, f"version {version}: activations")
        return StoredVersion(version, f.manifest, f.sig, f.files_bytes, activation)

    async def attempt(self, version: int) -> Attempt:
        """How the version stands now, its manifest and files not fetched (see
        :class:`Attempt`); ``UNREADABLE`` if its key is not a hash."""
        try:
            f = await self._read(version, max_manifest_bytes=0)
        except BundleRefused:
            return UNREADABLE
        try:
            activation = _count_or_refuse(f.activations, "activations")
        except BundleRefused:
            activation = -1
        signature = f.sig.decode("ascii", "replace")
        return Attempt(activation, signature, f.manifest_bytes, f.files_bytes)

    async def fetch(self, version: int, keys: Keys, limits: BundleLimits) -> VerifiedBundle:
        """The version's files, verified; BundleRefused if it is missing or does not verify.

        The manifest's signature and this runtime's limits are checked before the files
        are fetched, so a forged entry cannot make a runtime read a huge blob.
        """
        stored = await self.stored(version)
        if stored is None:
            raise BundleRefused(f"version {version} is not stored (pruned or never published)")
        manifest = verify_manifest(
            keys, stored.manifest_json, stored.signature, namespace=self.namespace, version=version
        )
        check_size(manifest, stored.files_bytes, limits)
        files_blob = await self.redis.hget(self.keys.version(version), "files")
        return open_bundle(
            keys,
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
        status.refused_activation = {
            v: n for v, n in status.refused_activation.items() if v in status.refused
        }
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
