"""The links between the runtimes and Redis: one Toxiproxy proxy per runtime (and one for the
load generator when a scenario needs it), driven with the unmodified ``toxiproxy-python``
client against ``chaos.proxy`` or, when ``TOXIPROXY_URL`` is set, a real Toxiproxy.

``toxiproxy-python`` keeps its server address as class state and calls ``requests`` without
a timeout, so every call here runs under ``bounded()`` in a worker thread: a stalled API
fails the scenario instead of hanging it. Its 500s pass silently, so each toxic is read
back after it is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from toxiproxy import Toxiproxy

from chaos.proxy.probes import bounded
from chaos.proxy.testing import Target, port_of

T = TypeVar("T")
API_TIMEOUT_S = 5.0


async def _call(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    bound = functools.partial(bounded, call, *args, timeout_s=API_TIMEOUT_S, **kwargs)
    return await asyncio.to_thread(bound)


class Link:
    """One proxy: Redis as seen by one runtime (or the load generator)."""

    def __init__(self, proxy: Any, target: Target) -> None:
        self.proxy = proxy
        self.name: str = proxy.name
        self.port = port_of(proxy.listen)
        self.url = f"redis://{target.proxy_host}:{self.port}/0"
        self._toxics: set[str] = set()

    async def add_toxic(
        self,
        kind: str,
        *,
        stream: str = "downstream",
        attributes: Mapping[str, int] | None = None,
        toxicity: float = 1.0,
        name: str | None = None,
    ) -> str:
        """Add a toxic, read it back, and return its name."""
        name = name or f"{kind}_{stream}"
        await _call(
            self.proxy.add_toxic,
            type=kind,
            stream=stream,
            name=name,
            toxicity=toxicity,
            attributes=dict(attributes or {}),
        )
        if await _call(self.proxy.get_toxic, name) is None:
            raise RuntimeError(f"toxic {name!r} on proxy {self.name!r} was not created")
        self._toxics.add(name)
        return name

    async def remove_toxic(self, name: str) -> None:
        await _call(self.proxy.destroy_toxic, name)
        self._toxics.discard(name)

    async def clear(self) -> None:
        for name in list(self._toxics):
            await self.remove_toxic(name)

    async def disable(self) -> None:
        """Close the listener and every connection: new connects are refused."""
        await _call(self.proxy.disable)

    async def enable(self) -> None:
        await _call(self.proxy.enable)


class Network:
    """Creates the suite's proxies under a unique name prefix and destroys them at the end,
    so a shared real Toxiproxy keeps everybody else's proxies."""

    def __init__(self, target: Target, prefix: str) -> None:
        self.target = target
        self.prefix = prefix
        self._server = Toxiproxy()
        self._server.update_api_consumer(*target.api_host_port)
        self.links: list[Link] = []

    async def link(self, name: str, redis_port: int) -> Link:
        proxy = await _call(
            self._server.create,
            self.target.upstream(redis_port),
            f"{self.prefix}-{name}",
            listen=self.target.listen(),
        )
        link = Link(proxy, self.target)
        self.links.append(link)
        return link

    async def close(self) -> None:
        """Destroy every proxy this network created (their toxics go with them)."""
        for link in self.links:
            # A dead API must not hide the scenario's own outcome.
            with contextlib.suppress(Exception):
                await _call(self._server.destroy, link.proxy)
        self.links.clear()
