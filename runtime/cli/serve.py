"""The ``serve`` command: which code it runs, then the HTTP app and the dispatcher.

The code comes from the functions folder (``--functions DIR``, or no signing key), from
snapshots of the folder hot-swapped on edits (``--reload``), or from the active deployment
(plain ``runtime serve`` with a signing key), followed as versions are published.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.cli.exits import ExitStatus
from runtime.config.registry import Registry, load_registry
from runtime.config.schema import Settings

if TYPE_CHECKING:
    from runtime.deploy.watcher import ServeMode

log = logging.getLogger("runtime.deploy")  # where deploy mode's warnings have always been


def serve_main(args: argparse.Namespace, settings: Settings) -> ExitStatus:
    from runtime.server.app import serve

    mode = serve_mode(args, settings)
    serve(settings, serve_registry(mode, settings), mode=mode)
    return ExitStatus.OK


def serve_mode(args: argparse.Namespace, settings: Settings) -> ServeMode:
    """``--reload``: reload mode; ``--functions DIR`` or no signing key: the folder, as
    ever; otherwise (plain ``runtime serve`` with a key): follow the active deployment."""
    if getattr(args, "reload", False):
        return "reload"
    if getattr(args, "functions", None) is None and settings.deploy.signing_key:
        return "deploy"
    return "local"


def serve_registry(mode: ServeMode, settings: Settings) -> Registry:
    """What ``serve`` starts with: the folder, a first snapshot of it, or nothing yet."""
    if mode == "local":
        return load_registry(settings.functions_dir, settings.functions)
    if mode == "reload":
        from runtime.deploy.watcher import load_snapshot  # serve-only: the dispatcher and its deps

        return load_snapshot(settings)
    if settings.functions:
        log.warning(
            "deploy mode ignores this instance's [functions.*] settings: limits come with "
            "each deployment (from the deployer's config)"
        )
    return Registry(Path(settings.deploy.dir), {})
