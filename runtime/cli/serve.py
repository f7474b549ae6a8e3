"""The ``serve`` command: which code it runs, then the HTTP app and the dispatcher.

The code comes from the functions folder (``--functions DIR``, or no signing key), from
snapshots of the folder hot-swapped on edits (``--reload``), or from the active deployment
(plain ``runtime serve`` with a signing key), followed as versions are published.

SIGTERM always ends the process: the drain is bounded by the longest ``timeout_s`` of the
loaded functions plus a margin, at most ``worker.shutdown_grace_s`` (server/drain.py);
handler threads still running past their timeout are not waited for; and behind it
:class:`ShutdownWatchdog`, armed at the first SIGTERM/SIGINT, ends the process (an ERROR
line, exit status 1) if it is still alive ``WATCHDOG_EXTRA_S`` after that bound, whatever
its tasks do: a task that swallows its cancellation, a Redis call that never returns, an
aiohttp cleanup that waits on either. Jobs it held are reclaimed when their leases
expire, as after a crash.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.cli.exits import ExitStatus
from runtime.config.registry import Registry, load_registry
from runtime.config.schema import Settings
from runtime.server.drain import WATCHDOG_EXTRA_S, exit_past_stragglers

if TYPE_CHECKING:
    from runtime.deploy.watcher import ServeMode

log = logging.getLogger("runtime.deploy")  # where deploy mode's warnings have always been
shutdown_log = logging.getLogger("runtime.shutdown")


class ShutdownWatchdog:
    """The last resort behind a graceful stop: a daemon timer thread, started by ``arm``,
    that ends the process with ``os._exit`` when it fires (it does not need the event
    loop, which may be the thing that is stuck)."""

    def __init__(self, extra_s: float = WATCHDOG_EXTRA_S, exit_status: int = 1) -> None:
        self.extra_s = extra_s
        self.limit_s = 0.0  # set by arm: the drain's bound + extra_s
        self._exit_status = exit_status
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self, drain_s: float) -> None:
        """Start counting ``drain_s + extra_s`` (idempotent: a second signal does not
        restart the count)."""
        with self._lock:
            if self._timer is not None:
                return
            self.limit_s = drain_s + self.extra_s
            self._timer = threading.Timer(self.limit_s, self._fire)
            self._timer.name = "shutdown-watchdog"
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _fire(self) -> None:
        shutdown_log.error(
            "shutdown did not finish within %gs of the stop signal; exiting now (jobs "
            "still held are reclaimed when their leases expire)",
            self.limit_s,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(self._exit_status)


def serve_main(args: argparse.Namespace, settings: Settings) -> ExitStatus:
    from runtime.server.app import serve

    mode = serve_mode(args, settings)
    registry = serve_registry(mode, settings)
    watchdog = ShutdownWatchdog()
    try:
        serve(settings, registry, mode=mode, on_stop=watchdog.arm)
        exit_past_stragglers()
    finally:
        watchdog.disarm()
    return ExitStatus.OK


def serve_mode(args: argparse.Namespace, settings: Settings) -> ServeMode:
    """``--reload``: reload mode; ``--functions DIR`` or no signing key: the folder, as
    ever; otherwise (plain ``runtime serve`` with a key): follow the active deployment."""
    if getattr(args, "reload", False):
        return "reload"
    if getattr(args, "functions", None) is None and settings.deploy.verification_keys():
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
