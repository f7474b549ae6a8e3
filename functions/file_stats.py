"""A small-file job: size, sha256, lines and words of one file under a configured root.

The root comes from the operator's ``[params.file_stats] root = "..."``; a path that
resolves outside it (``..``, an absolute path elsewhere, a symlink out) is rejected, not
retried: asking again will not make it allowed.
"""

import hashlib
from pathlib import Path

import msgspec

from runtime import Context, Reject, function

MAX_FILE_BYTES = 64 * 1024 * 1024


class FileRef(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    size: int | None = None  # as seen by the producer (`runtime enqueue-dir`), informative
    mtime: float | None = None


class FileStats(msgspec.Struct):
    path: str
    size: int
    sha256: str
    lines: int
    words: int


@function(concurrency=8, timeout_s=30, max_attempts=3)
def file_stats(event: FileRef, ctx: Context) -> FileStats:
    root = Path(str(ctx.params.get("root", "."))).resolve()
    target = (root / event.path).resolve()
    if not target.is_relative_to(root):
        raise Reject(f"{event.path!r} is outside the allowed root {root}")
    if not target.is_file():
        raise Reject(f"{event.path!r} is not a file under {root}")
    size = target.stat().st_size
    if size > MAX_FILE_BYTES:
        raise Reject(f"{event.path!r} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    digest = hashlib.sha256()
    lines = words = 0
    with target.open("rb") as f:
        for line in f:
            digest.update(line)
            lines += 1
            words += len(line.split())
    return FileStats(str(target.relative_to(root)), size, digest.hexdigest(), lines, words)
