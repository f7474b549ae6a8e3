"""A runtime's copies of the versions it loads: ``<deploy.dir>/<version>/``, extracted
once, atomically, and pruned to the newest few. Runtimes sharing a working directory share
them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from runtime.deploy.bundle import Manifest, VerifiedBundle, write_files
from runtime.errors import BundleRefused

KEEP_LOCAL_VERSIONS = 5  # extracted copies kept on disk besides the ones in use


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
