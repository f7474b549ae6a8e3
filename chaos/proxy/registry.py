"""Every proxy of the server, by name: create, delete, populate, reset, shutdown.

Operations that change the set of proxies hold the registry's lock, and take a proxy's
own lock before touching that proxy; nothing takes them in the other order.
"""

from __future__ import annotations

import asyncio
import random

from chaos.proxy.bodies import ProxyInput
from chaos.proxy.errors import (
    PROXY_EXISTS,
    PROXY_NOT_FOUND,
    ApiError,
    Conflict,
    NotFound,
    PopulateFailed,
)
from chaos.proxy.proxy import Proxy


class ProxyRegistry:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self._proxies.get(name)
        if proxy is None:
            raise NotFound(PROXY_NOT_FOUND)
        return proxy

    def all(self) -> list[Proxy]:
        """Sorted by name, as Go marshals a map."""
        return [self._proxies[name] for name in sorted(self._proxies)]

    async def create(self, item: ProxyInput) -> Proxy:
        """Conflict (409) if the name is taken; a bind failure (500) adds nothing."""
        async with self._lock:
            if item.name in self._proxies:
                raise Conflict(PROXY_EXISTS)
            return await self._add(item)

    async def delete(self, name: str) -> None:
        async with self._lock:
            proxy = self.get(name)
            await self._remove(proxy)

    async def populate(self, items: list[ProxyInput]) -> list[Proxy]:
        """Create or replace each item in order. A proxy with the same upstream and the
        same resolved listen is kept untouched (toxics, connections and enabled state).
        A failure keeps the items done so far and reports them."""
        async with self._lock:
            done: list[Proxy] = []
            for item in items:
                try:
                    done.append(await self._populate_one(item))
                except ApiError as exc:
                    raise PopulateFailed(exc, [proxy.to_json() for proxy in done]) from exc
            return done

    async def _populate_one(self, item: ProxyInput) -> Proxy:
        existing = self._proxies.get(item.name)
        if existing is not None:
            async with existing.lock:
                if await existing.has_same_address(item.listen, item.upstream):
                    return existing
            await self._remove(existing)
        return await self._add(item)

    async def reset(self) -> None:
        """Enable every proxy and remove all toxics; proxies and connections stay."""
        async with self._lock:
            for proxy in self.all():
                async with proxy.lock:
                    await proxy.start()
                    await proxy.toxics.remove_all()

    async def close(self) -> None:
        """Stop every proxy (server shutdown)."""
        async with self._lock:
            for proxy in self.all():
                await self._remove(proxy)

    async def _add(self, item: ProxyInput) -> Proxy:
        proxy = Proxy(item.name, item.listen, item.upstream, self._rng)
        if item.is_enabled:
            await proxy.start()
        self._proxies[item.name] = proxy
        return proxy

    async def _remove(self, proxy: Proxy) -> None:
        async with proxy.lock:
            await proxy.stop()
            proxy.is_deleted = True
        del self._proxies[proxy.name]
