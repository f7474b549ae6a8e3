"""``--reload``'s snapshots: private copies of an edited folder under
``<deploy.dir>/../reload/<pid>/<generation>/``, so an edit never changes code that already
runs and no stale bytecode is loaded. Used by :class:`runtime.deploy.watcher.Reloader`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import msgspec

from runtime.config.registry import Registry, load_registry
from runtime.config.schema import Settings
from runtime.deploy.bundle import (
    BundleLimits,
    collect_files,
    content_digest,
    file_entries,
    write_files,
)
from runtime.deploy.validate import relabel, shown_path
from runtime.errors import RegistryError


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    try:
        paths = [p for p in folder.iterdir() if p.suffix == ".py"]
        return {p.name: (st.st_mtime_ns, st.st_size) for p in paths for st in [p.stat()]}
    except OSError:
        return {}


def digest(files: list[Any]) -> str:
    return content_digest(file_entries(files))


def shown_as(registry: Registry, private: Path, shown: str) -> Registry:
    """The snapshot's registry, its sources named after the user's folder."""
    specs = {
        spec.name: msgspec.structs.replace(spec, source=relabel(spec.source, private, shown))
        for spec in registry
    }
    return Registry(registry.folder, specs)


def snapshot_root(settings: Settings) -> Path:
    """This process's private snapshots: ``<deploy.dir>/../reload/<pid>/``."""
    return Path(settings.deploy.dir).parent / "reload" / str(os.getpid())


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_snapshot(settings: Settings) -> Registry:
    """``--reload``'s first load, before serving: generation 1 of a fresh snapshot folder,
    imported here (a broken folder stops start-up with file:line, like ``runtime serve``)."""
    source = Path(settings.functions_dir)
    files = collect_files(source, BundleLimits.of(settings.deploy))
    root = snapshot_root(settings)
    for stale in root.parent.glob("*"):
        if stale.name.isdigit() and (stale == root or not _is_alive(int(stale.name))):
            shutil.rmtree(stale, ignore_errors=True)
    folder = root / "1"
    folder.mkdir(parents=True, mode=0o700)
    write_files(files, folder)
    shown = shown_path(source)
    try:
        registry = load_registry(folder, settings.functions)
    except RegistryError as exc:
        raise RegistryError([relabel(p, folder, shown) for p in exc.problems]) from None
    return shown_as(registry, folder, shown)


def retire_snapshot(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
