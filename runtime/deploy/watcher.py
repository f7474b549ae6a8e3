"""Hot swaps: which code a serving runtime runs, and when it changes.

Three ways to serve (``runtime serve``, see docs/deploying.md):

- ``local``: ``--functions DIR`` (or no signing key): the folder, loaded once, as always;
- ``reload``: ``--functions DIR --reload``: :class:`Reloader` polls the folder's files and
  swaps in each edit;
- ``deploy``: no ``--functions`` and a ``deploy.signing_key``: :class:`DeployWatcher`
  follows the namespace's active deployment.

Both watchers load a *private* folder (an extracted deployment, a snapshot of the edited
folder) through :class:`HotSwap`: validate in a child process (a broken handler cannot hurt
this one), import in this process, then swap the live registry and the dispatcher's
workers in one step. A version that fails is refused: the running one keeps serving, and
the refusal shows in ``/readyz`` (and, for deployments, in ``runtime deployments``).
Snapshots mean an edit never changes code that already runs, and no stale bytecode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from runtime.config.registry import LiveRegistry, Registry, forget_folder, load_registry
from runtime.config.schema import Settings
from runtime.deploy.bundle import BundleLimits, collect_files, write_files
from runtime.deploy.snapshots import (
    digest,
    load_snapshot,
    retire_snapshot,
    shown_as,
    snapshot_root,
    stamps,
)
from runtime.deploy.store import (
    Attempt,
    DeployStore,
    InstanceStatus,
    extract,
    parse_version,
    prune_local,
)
from runtime.deploy.validate import relabel, shown_path, validate
from runtime.errors import BrokerError, BundleRefused, DeployError, RegistryError
from runtime.execution.dispatcher import Dispatcher
from runtime.observe import rejects
from runtime.observe.supervisor import raise_if_cancelled
from runtime.queue.connection import close_pubsub
from runtime.queue.instances import Instances

log = logging.getLogger("runtime.watcher")

# load_snapshot and retire_snapshot (snapshots.py) are served from here too.
__all__ = ["DeployWatcher", "HotSwap", "Reloader", "ServeMode", "SwapState", "load_snapshot",
           "retire_snapshot"]  # fmt: skip

ServeMode = Literal["local", "reload", "deploy"]
RELOAD_POLL_S = 0.5
RELOAD_SETTLE_S = 0.1  # an editor's save can take two writes: look twice
MAX_REFUSALS_SHOWN = 10


class SwapState(msgspec.Struct):
    """What ``/readyz`` reports under ``checks.deployment``."""

    mode: ServeMode
    loaded: int | None = None  # deployment version, or --reload generation
    active: int | None = None  # deploy mode: the version Redis says should run
    is_checked: bool = False  # deploy mode: Redis was read at least once
    refused: dict[int, str] = {}  # version or generation -> why
    # Deploy mode: why nothing new is applied (the active pointer is unreadable).
    problem: str | None = None

    @property
    def is_ok(self) -> bool:
        """Unready only if nothing runs while something should: a refused version (or an
        unreadable pointer) is reported, not fatal, as long as an older one serves."""
        if self.mode != "deploy":
            return True
        if self.problem is not None:
            return self.loaded is not None
        return self.is_checked and (self.loaded is not None or self.active is None)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.is_ok, "mode": self.mode, "loaded": self.loaded}
        if self.mode == "deploy":
            out["active"] = self.active
        if self.problem is not None:
            out["problem"] = self.problem
        if self.refused:
            out["refused"] = {str(v): why for v, why in self.refused.items()}
        return out

    def refuse(self, version: int, why: str) -> None:
        self.refused[version] = why
        for old in sorted(self.refused)[:-MAX_REFUSALS_SHOWN]:
            del self.refused[old]


class HotSwap:
    """Loads private folders, one at a time, and swaps each into the live registry and the
    dispatcher. The previous folder leaves ``sys.path`` and ``sys.modules`` before the next
    one is imported (so ``import _helper`` finds the new one); ``on_retired`` gets it once
    its workers have finished their jobs."""

    def __init__(
        self,
        settings: Settings,
        live: LiveRegistry,
        dispatcher: Dispatcher,
        instances: Instances | None,
        on_retired: Callable[[Path], None] = lambda folder: None,
    ) -> None:
        self._settings = settings
        self._live = live
        self._dispatcher = dispatcher
        self._instances = instances
        self._on_retired = on_retired
        self.folder: Path | None = live.folder if len(live) else None

    async def load(
        self,
        folder: Path,
        overrides: Mapping[str, Mapping[str, Any]],
        *,
        expected: list[str] | None = None,
    ) -> Registry:
        """Validate ``folder`` in a child, then import it here; RegistryError if either
        fails or (``expected``) the functions are not the expected ones."""
        timeout_s = self._settings.deploy.validate_timeout_s
        validated = await validate(folder, overrides, timeout_s=timeout_s)
        names = sorted(f.name for f in validated)
        if expected is not None and names != sorted(expected):
            raise RegistryError([f"{folder}: functions {names}, the manifest says {expected}"])
        previous = self.folder
        if previous is not None:
            forget_folder(previous)
        try:
            registry = load_registry(folder, overrides)
            if registry.names != names:  # the child saw other functions: flaky imports
                raise RegistryError([f"{folder}: imported {registry.names}, validated {names}"])
        except BaseException as exc:
            forget_folder(folder)
            if previous is not None:
                sys.path.append(str(previous.resolve()))
            if isinstance(exc, SystemExit):  # passed in the child, exits here: refuse it
                raise RegistryError([f"{folder}: a module called exit() at import"]) from None
            raise
        return registry

    def swap(self, registry: Registry) -> None:
        """In one step: the registry the API answers with and the workers that claim."""
        previous = self.folder
        retirement = self._dispatcher.swap(registry)
        self._live.swap(registry)
        if self._instances is not None:
            self._instances.set_functions(registry.names)
        self.folder = registry.folder
        if previous is not None and previous != registry.folder:
            retirement.add_done_callback(lambda _: self._on_retired(previous))


class DeployWatcher:
    """Follows the active deployment: pub/sub for speed, a periodic read for safety.

    Any Redis error is retried (at most a second apart); an active pointer that is not a
    version number is reported (``SwapState.problem``) while the loaded version serves,
    and a notification that is not a version number is refused (``rejects``). A refused
    version is remembered with its :class:`Attempt` and tried again only when that
    changes (an explicit activation, new content): a notification alone fetches nothing.
    The status is reported at the first check, so ``runtime deploy`` knows this instance
    follows deployments and waits for its answer."""

    def __init__(
        self, settings: Settings, store: DeployStore, swap: HotSwap, instances: Instances
    ) -> None:
        self.state = SwapState("deploy")
        self._settings = settings
        self._store = store
        self._swap = swap
        self._root = Path(settings.deploy.dir)
        self._limits = BundleLimits.of(settings.deploy)
        info = instances.info
        self._status = InstanceStatus(info.id, info.host, info.pid)
        self._is_reported = False
        self._tried: dict[int, Attempt] = {}  # refused versions, as they stood when tried
        self._last_error_log = 0.0

    async def run(self) -> None:
        retry_s = 0.1
        while True:
            pubsub = self._store.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._store.keys.channel)
                retry_s = 0.1
                while True:
                    await self.check()
                    message = await pubsub.get_message(
                        timeout=self._settings.deploy.check_interval_s
                    )
                    if message is not None and message["type"] == "message":
                        self._notified(message["data"])
            except (BrokerError, OSError) as exc:  # OSError: check() prunes on disk
                raise_if_cancelled()  # a stop that redis-py turned into a timeout
                if time.monotonic() - self._last_error_log > 5:
                    self._last_error_log = time.monotonic()
                    log.warning("deployments: Redis failed (%s); retrying", exc)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, 1.0)
            finally:
                await close_pubsub(pubsub)

    def _notified(self, data: object) -> None:
        """A notification only wakes the loop (``check`` reads the pointer): one that is
        not a version number is counted and logged as a rejected input."""
        try:
            parse_version(data)
        except ValueError as exc:
            rejects.reject("deploy_notification", str(exc))

    async def check(self) -> None:
        try:
            active = await self._store.active()
        except DeployError as exc:
            why = f"nothing new is applied: {exc}"[:300]
            if why != self.state.problem:
                log.error("deployments: %s; the loaded version keeps serving", why)
            rejects.reject("deploy_pointer", str(exc))
            self.state.problem = why
            self.state.is_checked = True
            return
        self.state.problem = None
        self.state.active = active
        self.state.is_checked = True
        if active is not None and active != self.state.loaded:
            attempt = await self._store.attempt(active)  # sizes and a signature: cheap
            if self._tried.get(active) != attempt:
                await self._load(active, attempt)
        if not self._is_reported:
            await self._report()

    async def _load(self, version: int, attempt: Attempt) -> None:
        noticed = time.monotonic()
        keys = self._settings.deploy.verification_keys()
        try:
            bundle = await self._store.fetch(version, keys, self._limits)
            folder = await asyncio.to_thread(extract, bundle, self._root)
            registry = await self._swap.load(
                folder, bundle.manifest.overrides, expected=bundle.manifest.function_names
            )
        except (BundleRefused, RegistryError) as exc:
            self._refuse(version, attempt, str(exc))
            return
        except OSError as exc:  # the disk, not Redis: extracting failed
            self._refuse(version, attempt, f"cannot extract into {self._root}: {exc}")
            return
        previous = self.state.loaded
        self.state.refused.pop(version, None)  # refused before, accepted now
        self._tried.pop(version, None)
        self._swap.swap(registry)
        self.state.loaded = version
        self._status.loaded = version
        self._is_reported = False
        log.info(
            "deployment %d is live here (functions: %s; was %s), %.0f ms after it was seen",
            version,
            ", ".join(registry.names) or "none",
            previous if previous is not None else "none",
            (time.monotonic() - noticed) * 1000,
        )
        await self._report()  # before pruning on disk: `deploy --wait` hears of it first
        await asyncio.to_thread(prune_local, self._root, {version, previous or version})

    def _refuse(self, version: int, attempt: Attempt, why: str) -> None:
        running = self.state.loaded
        log.error(
            "deployment %d refused on this instance, %s: %s",
            version,
            f"version {running} keeps running" if running is not None else "nothing runs",
            why,
        )
        self.state.refuse(version, why)
        self._tried[version] = attempt
        self._tried = {v: a for v, a in self._tried.items() if v in self.state.refused}
        self._is_reported = False

    async def _report(self) -> None:
        self._status.refused = dict(self.state.refused)
        self._status.refused_activation = {v: a.activation for v, a in self._tried.items()}
        await self._store.report(self._status)
        self._is_reported = True

    async def leave(self) -> None:
        with contextlib.suppress(BrokerError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._store.forget(self._status.instance)


class Reloader:
    """``--reload``: polls the folder's ``*.py`` files every ``RELOAD_POLL_S`` (their names,
    sizes and mtimes), and loads a snapshot when their content changed."""

    def __init__(self, settings: Settings, folder: Path, swap: HotSwap, live: Registry) -> None:
        self.state = SwapState("reload", loaded=1)
        self._settings = settings
        self._folder = folder
        self._swap = swap
        self._limits = BundleLimits.of(settings.deploy)
        self._root = snapshot_root(settings)
        self._generation = 1
        self._loaded_digest = digest(collect_files(live.folder, self._limits))
        self._stamps = stamps(folder)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_POLL_S)
            now = stamps(self._folder)
            if now == self._stamps:
                continue
            await asyncio.sleep(RELOAD_SETTLE_S)
            if stamps(self._folder) != now:
                continue  # still being written: next poll
            self._stamps = now
            await self.reload()

    async def reload(self) -> None:
        shown = shown_path(self._folder)
        generation = self._generation + 1
        folder = self._root / str(generation)
        try:
            files = collect_files(self._folder, self._limits)
            content = digest(files)
            if content == self._loaded_digest:
                self.state.refused.clear()  # touched, or an edit undone: what runs is current
                return
            self._generation = generation
            folder.mkdir(parents=True, mode=0o700)
            write_files(files, folder)
            registry = await self._swap.load(folder, self._settings.functions)
        except RegistryError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            why = relabel(str(exc), folder, shown)
            log.error("reload refused, the running code stays: %s", why)
            self.state.refuse(generation, why)
            return
        self._swap.swap(shown_as(registry, folder, shown))
        self._loaded_digest = content
        self.state.loaded = generation
        self.state.refused.clear()
        log.info("reloaded %s (functions: %s)", shown, ", ".join(registry.names) or "none")
