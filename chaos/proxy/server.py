"""The composition root: settings → registry (with the ``--config`` proxies) → API app →
listening socket. ``ProxyServer`` starts and stops all of it as one; the CLI and the test
starters in ``chaos.proxy.testing`` both use it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from chaos.proxy.address import bind, join_host_port, resolve_listen
from chaos.proxy.api import REGISTRY_KEY, add_routes, toxiproxy_framing
from chaos.proxy.bodies import ProxyInput, decode_populate
from chaos.proxy.errors import ApiError, ConfigError, PopulateFailed
from chaos.proxy.registry import ProxyRegistry

SHUTDOWN_TIMEOUT_S = 2.0
"""How long in-flight API requests may finish when the server stops."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8474
    config: Path | None = None
    seed: int | None = None


SETTINGS_KEY = web.AppKey("settings", ServerSettings)
CONFIG_KEY = web.AppKey("config", list[ProxyInput])


def load_config(path: Path) -> list[ProxyInput]:
    """Read a populate-format JSON array; fail naming the file and the problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        return decode_populate(raw)
    except ApiError as exc:
        raise ConfigError(
            f"invalid config {path}: {exc.message} (expected a JSON array of "
            '{"name", "listen", "upstream", ["enabled"]} objects)'
        ) from None


@contextlib.asynccontextmanager
async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    registry = ProxyRegistry(random.Random(settings.seed))  # noqa: S311 — seeded fault injection must be reproducible, not secret
    try:
        await registry.populate(app[CONFIG_KEY])
    except PopulateFailed as exc:
        await registry.close()
        raise ConfigError(f"config {settings.config}: {exc.cause.message}") from None
    app[REGISTRY_KEY] = registry
    yield
    await registry.close()


def build_app(settings: ServerSettings) -> web.Application:
    app = web.Application(middlewares=[toxiproxy_framing])
    app[SETTINGS_KEY] = settings
    app[CONFIG_KEY] = load_config(settings.config) if settings.config else []
    app.cleanup_ctx.append(registry_ctx)
    add_routes(app)
    return app


class ProxyServer:
    """The API and its proxies. ``start`` returns the API's base URL."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Raises ``ConfigError`` or ``ListenError`` (naming the address) on failure."""
        address = await resolve_listen(join_host_port(self.settings.host, self.settings.port))
        app = build_app(self.settings)
        sock, actual = bind(address)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        return f"http://{actual}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
