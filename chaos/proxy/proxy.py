"""One proxy: a listener, the connections it accepted, and its toxics.

States: *disabled* (no listener, ``listen`` as configured) and *enabled* (bound; ``listen``
is the actual address, e.g. ``localhost:0`` → ``127.0.0.1:41234``). Disabling closes the
listener, so new connects are refused, and closes every live connection; the toxics stay,
and enabling binds the stored address again, so the port is kept. Every API operation on
a proxy holds its ``lock``; the proxy owns its accept task and one task per connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Any

from chaos.proxy.address import bind, resolve_listen, upstream_host_port
from chaos.proxy.connection import Connection
from chaos.proxy.errors import PROXY_NOT_FOUND, NotFound
from chaos.proxy.toxic_collection import ToxicCollection

log = logging.getLogger("chaos.proxy")


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.toxics = ToxicCollection()
        self.lock = asyncio.Lock()
        self.is_enabled = False
        self.is_deleted = False
        self._rng = rng
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._connection_tasks: set[asyncio.Task[None]] = set()

    def to_json(self) -> dict[str, Any]:
        # Go's marshal order; "Logger": {} is an exported field the real server leaks.
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.is_enabled,
            "Logger": {},
            "toxics": [toxic.to_json() for toxic in self.toxics.all()],
        }

    def check_not_deleted(self) -> None:
        """A request that waited for the lock of a proxy deleted meanwhile gets a 404."""
        if self.is_deleted:
            raise NotFound(PROXY_NOT_FOUND)

    async def start(self) -> None:
        """Bind the stored listen address; raises ``ListenError``. No-op when enabled."""
        if self.is_enabled:
            return
        listener, actual = bind(await resolve_listen(self.listen))
        self._listener = listener
        self.listen = actual
        self.is_enabled = True
        self._accept_task = asyncio.create_task(self._accept(listener))
        log.info("proxy %s listening on %s → %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        """Close the listener and every connection. No-op when disabled."""
        if not self.is_enabled:
            return
        self.is_enabled = False
        tasks = [task for task in (self._accept_task, *self._connection_tasks) if task]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        self._accept_task = None
        log.info("proxy %s stopped", self.name)

    async def is_readdressed_by(self, listen: str, upstream: str) -> bool:
        """True when ``listen`` resolves elsewhere than the current address, or the
        upstream changes (re-stating ``localhost:P`` for ``127.0.0.1:P`` is no change)."""
        resolved = await resolve_listen(listen)
        return resolved.text != self.listen or upstream != self.upstream

    async def update(self, listen: str, upstream: str, *, is_enabled: bool) -> None:
        if await self.is_readdressed_by(listen, upstream):
            await self.stop()
            self.listen = listen
            self.upstream = upstream
        if is_enabled:
            await self.start()
        else:
            await self.stop()

    async def has_same_address(self, listen: str, upstream: str) -> bool:
        """Whether populate may keep this proxy untouched for that listen and upstream."""
        return not await self.is_readdressed_by(listen, upstream)

    # -- data path ---------------------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError as exc:
                # Out of descriptors and the like: back off instead of spinning.
                log.warning("proxy %s: accept failed: %s", self.name, exc)
                await asyncio.sleep(0.05)
                continue
            task = asyncio.create_task(self._serve(client))
            self._connection_tasks.add(task)
            task.add_done_callback(self._connection_tasks.discard)

    async def _serve(self, client_socket: socket.socket) -> None:
        try:
            client = await asyncio.open_connection(sock=client_socket)
        except BaseException:
            client_socket.close()
            raise
        try:
            # Like Go's net.Dial: no timeout of our own; stop() cancels a pending dial.
            host, port = upstream_host_port(self.upstream)
            upstream = await asyncio.open_connection(host, port)
        except (OSError, ValueError) as exc:
            # Accept, then close: the client reads EOF rather than a refused connect.
            log.info("proxy %s: upstream %s unavailable: %s", self.name, self.upstream, exc)
            client[1].close()
            return
        except BaseException:
            client[1].transport.abort()
            raise
        # Build and attach in one step (no await between) so a concurrent toxic edit
        # either sees this connection or is already in its toxic list.
        connection = Connection(client, upstream, self.toxics.all(), self._rng)
        links = list(connection.links.values())
        self.toxics.attach(links)
        try:
            await connection.run()
        finally:
            self.toxics.detach(links)
