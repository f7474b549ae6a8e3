"""A deployment bundle: the handler files of one folder, their manifest, its signature.

Pure functions over bytes and files, no Redis and no handler code imported here:

- :func:`collect_files` reads a folder's ``*.py`` files (helpers ``_*.py`` included), each
  with a plain name, within the size limits;
- :func:`build_manifest` describes them: functions with their effective limits, each
  file's sha256, the content digest, who published it and when;
- :func:`sign` is HMAC-SHA256 over the manifest's exact JSON bytes. The manifest holds
  every file's sha256, so one signature covers every byte a runtime will import;
- :func:`open_bundle` is what a runtime does before it writes anything to disk: check the
  signature first (nothing untrusted is decoded before), then the manifest's claims, the
  limits, the names and every file's hash. Any failure is :class:`BundleRefused`.

The key never leaves the process: it is not stored in Redis and is never part of a log
line or an error message. No pickle: the manifest is JSON, the files are msgpack.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import re
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from runtime.config.schema import DeploySettings
from runtime.errors import BundleRefused, RegistryError
from runtime.function import Executor, FunctionOptions

FORMAT = 1
MAX_MANIFEST_BYTES = 1_048_576
SIGNATURE_CHARS = 64  # a hex HMAC-SHA256
# msgpack framing of the file list: a few bytes a file on top of names and contents.
_FRAMING_BYTES_PER_FILE = 128
# A plain module file name: no path separator, no "..", no leading dot, no second dot.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}\.py$")
_SIGNED_CONTEXT = b"runtime-deploy-manifest/1\n"  # a signature for this use only


class BundleLimits(msgspec.Struct, frozen=True):
    max_bundle_bytes: int
    max_files: int

    @classmethod
    def of(cls, settings: DeploySettings) -> BundleLimits:
        return cls(settings.max_bundle_bytes, settings.max_files)


class BundleFile(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    name: str
    data: bytes


class FileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    size: int
    sha256: str


class FunctionEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A function as validated: its effective options (decorator, then config overrides)."""

    name: str
    executor: Executor
    options: FunctionOptions
    source: str  # file:line in the deployer's folder


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int
    namespace: str
    version: int
    digest: str  # sha256 of "<sha256>  <name>\n" lines sorted by name (sha256sum's output)
    size_bytes: int
    files: list[FileEntry]
    functions: list[FunctionEntry]
    created_by: str  # user@host
    created_at_ms: int
    message: str = ""

    @property
    def function_names(self) -> list[str]:
        return [f.name for f in self.functions]

    @property
    def overrides(self) -> dict[str, dict[str, Any]]:
        """The effective options as ``[functions.<name>]`` overrides: every runtime applies
        the limits the deployer validated, not its own config."""
        return {f.name: msgspec.to_builtins(f.options) for f in self.functions}


class VerifiedBundle(msgspec.Struct, frozen=True):
    manifest: Manifest
    files: list[BundleFile]


_manifest_encoder = msgspec.json.Encoder()
_manifest_decoder = msgspec.json.Decoder(Manifest)
_files_encoder = msgspec.msgpack.Encoder()
_files_decoder = msgspec.msgpack.Decoder(list[BundleFile])


def is_plain_name(name: str) -> bool:
    return bool(_FILE_NAME.match(name))


def created_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def collect_files(folder: str | Path, limits: BundleLimits) -> list[BundleFile]:
    """Every ``*.py`` file of ``folder`` (not its subfolders), sorted by name.

    Raises RegistryError listing every problem: a name that is not plain, a link out of
    the folder, an unreadable file, too many files or too many bytes (naming the limit).
    """
    root = Path(folder)
    if not root.is_dir():
        raise RegistryError([f"{folder}: functions folder not found"])
    real_root = root.resolve()
    problems: list[str] = []
    files: list[BundleFile] = []
    for path in sorted(root.iterdir()):
        if path.suffix != ".py" or not path.is_file():
            continue
        if not is_plain_name(path.name):
            problems.append(
                f"{path}: refused: a bundled file name must be letters, digits, '_' or '-' "
                "followed by .py (no dots, no leading dot); rename it"
            )
            continue
        real = path.resolve()
        if not real.is_relative_to(real_root):
            problems.append(
                f"{path}: refused: it links to {real}, outside the folder; copy the file in"
            )
            continue
        try:
            files.append(BundleFile(path.name, real.read_bytes()))
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc}")
    if len(files) > limits.max_files:
        problems.append(
            f"{folder}: {len(files)} files, over deploy.max_files = {limits.max_files}; "
            "remove some or raise the limit"
        )
    total = sum(len(f.data) for f in files)
    if total > limits.max_bundle_bytes:
        biggest = sorted(files, key=lambda f: -len(f.data))[:3]
        named = ", ".join(f"{f.name} ({len(f.data)} bytes)" for f in biggest)
        problems.append(
            f"{folder}: the bundle would be {total} bytes, over deploy.max_bundle_bytes = "
            f"{limits.max_bundle_bytes} (largest: {named}); move data out of the handler "
            "folder or raise the limit"
        )
    if problems:
        raise RegistryError(problems)
    return files


def write_files(files: Iterable[BundleFile], directory: Path) -> None:
    """Write files (plain names only) into an existing private directory, read-only."""
    for f in files:
        if not is_plain_name(f.name):  # open_bundle and collect_files checked; never trust
            raise BundleRefused(f"file name {f.name!r} is not a plain name")
        path = directory / f.name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as out:
            out.write(f.data)


def file_entries(files: Sequence[BundleFile]) -> list[FileEntry]:
    return [FileEntry(f.name, len(f.data), hashlib.sha256(f.data).hexdigest()) for f in files]


def content_digest(entries: Iterable[FileEntry]) -> str:
    """sha256 of ``sha256sum``'s output for the files: reproducible from a shell with
    ``cd DIR && LC_ALL=C sha256sum *.py | sha256sum``."""
    lines = "".join(f"{e.sha256}  {e.name}\n" for e in sorted(entries, key=lambda e: e.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def build_manifest(
    files: Sequence[BundleFile],
    functions: Sequence[FunctionEntry],
    *,
    namespace: str,
    version: int,
    message: str = "",
    now_ms: int | None = None,
) -> Manifest:
    entries = file_entries(files)
    return Manifest(
        format=FORMAT,
        namespace=namespace,
        version=version,
        digest=content_digest(entries),
        size_bytes=sum(e.size for e in entries),
        files=entries,
        functions=sorted(functions, key=lambda f: f.name),
        created_by=created_by(),
        created_at_ms=round(time.time() * 1000) if now_ms is None else now_ms,
        message=message,
    )


def encode_manifest(manifest: Manifest) -> bytes:
    return _manifest_encoder.encode(manifest)


def encode_files(files: Sequence[BundleFile]) -> bytes:
    return _files_encoder.encode(list(files))


def sign(key: str, manifest_json: bytes) -> str:
    if not key:
        raise ValueError("no signing key")
    return hmac.new(key.encode(), _SIGNED_CONTEXT + manifest_json, hashlib.sha256).hexdigest()


Keys = str | tuple[str, ...]  # one key, or every key a signature may verify with


def _as_keys(keys: Keys) -> tuple[str, ...]:
    return tuple(k for k in ((keys,) if isinstance(keys, str) else keys) if k)


def is_signed_by(keys: Keys, manifest_json: bytes, signature: bytes | str) -> bool:
    """True if the signature is the HMAC of the manifest under any of ``keys`` (each is
    compared in constant time; which key matched is not revealed to anyone)."""
    sig = signature.decode("ascii", "replace") if isinstance(signature, bytes) else signature
    matches = [hmac.compare_digest(sign(k, manifest_json), sig) for k in _as_keys(keys)]
    return any(matches)


def peek_manifest(manifest_json: bytes) -> Manifest | None:
    """Decode a manifest *without* trusting it (for listings); None if it does not decode."""
    try:
        return _manifest_decoder.decode(manifest_json)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def verify_manifest(
    keys: Keys, manifest_json: bytes, signature: bytes | str, *, namespace: str, version: int
) -> Manifest:
    """The manifest, if it is signed with one of ``keys`` and claims this namespace and
    version. The refusal never shows a key, only how many were tried."""
    if len(manifest_json) > MAX_MANIFEST_BYTES:
        raise BundleRefused(f"manifest is {len(manifest_json)} bytes, over {MAX_MANIFEST_BYTES}")
    if not is_signed_by(keys, manifest_json, signature):
        count = len(_as_keys(keys))
        tried = "the key" if count == 1 else f"any of the {count} keys"
        raise BundleRefused(
            f"signature does not verify with {tried} this process holds "
            "(deploy.signing_key, deploy.verify_keys): the manifest or its signature was "
            "changed in Redis, or it was signed with a key this process does not hold "
            "(another key, or one rotated out of deploy.verify_keys)"
        )
    try:
        manifest = _manifest_decoder.decode(manifest_json)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BundleRefused(f"signed manifest does not decode: {exc}") from None
    if manifest.format != FORMAT:
        raise BundleRefused(f"manifest format {manifest.format} is not {FORMAT}; upgrade")
    if manifest.namespace != namespace or manifest.version != version:
        raise BundleRefused(
            f"manifest is for {manifest.namespace!r} version {manifest.version}, stored as "
            f"{namespace!r} version {version}: a signed bundle copied to another place"
        )
    return manifest


def open_bundle(
    keys: Keys,
    manifest_json: bytes,
    signature: bytes | str,
    files_blob: bytes,
    *,
    namespace: str,
    version: int,
    limits: BundleLimits,
) -> VerifiedBundle:
    """Verify everything a runtime is about to import; BundleRefused says what failed."""
    manifest = verify_manifest(keys, manifest_json, signature, namespace=namespace, version=version)
    check_size(manifest, len(files_blob), limits)
    names = [e.name for e in manifest.files]
    bad = [n for n in names if not is_plain_name(n)]
    if bad or len(set(names)) != len(names):
        raise BundleRefused(f"manifest lists bad or repeated file names: {bad or names}")
    try:
        files = _files_decoder.decode(files_blob)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BundleRefused(f"files do not decode: {exc}") from None
    by_name = {f.name: f for f in files}
    if sorted(by_name) != sorted(names) or len(files) != len(names):
        raise BundleRefused(
            f"stored files {sorted(by_name)} are not the signed list {sorted(names)}"
        )
    for entry in manifest.files:
        data = by_name[entry.name].data
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BundleRefused(f"{entry.name}: content does not match its signed sha256")
    if content_digest(manifest.files) != manifest.digest:
        raise BundleRefused("content digest does not match the signed file list")
    return VerifiedBundle(manifest, [by_name[n] for n in sorted(names)])


def check_size(manifest: Manifest, stored_bytes: int, limits: BundleLimits) -> None:
    """This runtime's own limits, checked on the signed claims and on the stored size
    before the files are fetched or decoded."""
    if manifest.size_bytes > limits.max_bundle_bytes:
        raise BundleRefused(
            f"bundle is {manifest.size_bytes} bytes, over this runtime's "
            f"deploy.max_bundle_bytes = {limits.max_bundle_bytes}"
        )
    if len(manifest.files) > limits.max_files:
        raise BundleRefused(
            f"bundle has {len(manifest.files)} files, over deploy.max_files = {limits.max_files}"
        )
    most = manifest.size_bytes + _FRAMING_BYTES_PER_FILE * (len(manifest.files) + 1)
    if stored_bytes > most:
        raise BundleRefused(f"stored files are {stored_bytes} bytes, the manifest allows {most}")
