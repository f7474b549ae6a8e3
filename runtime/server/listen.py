"""Running the app on its port: aiohttp's ``run_app``, cut to what ``runtime serve`` needs,
with two things it cannot do.

- The listening socket's protocol factory is the :class:`ConnectionGuard`'s, which caps
  open connections (limits.py).
- ``on_bound`` runs once the port is bound, before the first request: the generated token
  is written there, so a second ``runtime serve`` that cannot bind (the port is taken)
  leaves the running server's token file alone.

The rest is as in ``run_app``: the runner's SIGINT/SIGTERM handlers raise ``GracefulExit``,
the runner's cleanup unwinds ``cleanup_ctx`` (the drain), then leftover tasks are
cancelled and the loop closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from runtime.server.limits import ConnectionGuard

log = logging.getLogger("runtime.app")
BACKLOG = 1024  # a burst of connects waits in the kernel, not in SYN retries


class GuardedSite(web.TCPSite):
    """A TCP site whose connections are created through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard):
        super().__init__(runner, host, port, backlog=BACKLOG)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None  # noqa: S101 — narrows a type: BaseSite.start has just made the server
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.factory(server), self._host, self._port, backlog=BACKLOG
        )

    @property
    def bound(self) -> str:
        sockets = getattr(self._server, "sockets", None)  # asyncio's and uvloop's servers
        if not sockets:
            return self.name
        host, port = sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"


async def _serve_forever(
    app: web.Application,
    guard: ConnectionGuard,
    host: str,
    port: int,
    shutdown_timeout_s: float,
    on_bound: Callable[[], None],
) -> None:
    runner = web.AppRunner(
        app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout_s
    )
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, guard)
        await site.start()
        on_bound()
        log.info("======== Running on %s ========", site.bound)
        await asyncio.Event().wait()  # until the signal's GracefulExit cancels this
    finally:
        await runner.cleanup()


def run(
    app: web.Application,
    guard: ConnectionGuard,
    *,
    host: str,
    port: int,
    shutdown_timeout_s: float,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    on_bound: Callable[[], None],
) -> None:
    """Serve until SIGTERM/SIGINT, then clean up (``run_app``'s shape)."""
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    main = loop.create_task(_serve_forever(app, guard, host, port, shutdown_timeout_s, on_bound))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)


def _cancel_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            context: dict[str, Any] = {
                "message": "unhandled exception during shutdown",
                "exception": task.exception(),
                "task": task,
            }
            loop.call_exception_handler(context)
