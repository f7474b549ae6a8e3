"""The toxics of one proxy, in order per direction, and the live links they apply to.

Adding, updating or removing a toxic changes the list first and then every link that was
live at that moment, so a connection accepted during the change is built from the new
list and never edited twice. Callers hold the proxy's lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from chaos.proxy.errors import TOXIC_EXISTS, TOXIC_NOT_FOUND, Conflict, NotFound
from chaos.proxy.link import Link
from chaos.proxy.toxics import Direction, Toxic

LinkEdit = Callable[[Link], Coroutine[Any, Any, None]]


class ToxicCollection:
    def __init__(self) -> None:
        self._toxics: dict[Direction, list[Toxic]] = {direction: [] for direction in Direction}
        self._links: dict[Direction, set[Link]] = {direction: set() for direction in Direction}

    def all(self) -> list[Toxic]:
        """Upstream toxics first, then downstream, each in order of addition."""
        return [*self._toxics[Direction.UPSTREAM], *self._toxics[Direction.DOWNSTREAM]]

    def get(self, name: str) -> Toxic:
        for toxic in self.all():
            if toxic.name == name:
                return toxic
        raise NotFound(TOXIC_NOT_FOUND)

    def check_name_is_free(self, name: str) -> None:
        """Names are unique across both streams of a proxy."""
        if any(toxic.name == name for toxic in self.all()):
            raise Conflict(TOXIC_EXISTS)

    def attach(self, links: Iterable[Link]) -> None:
        for link in links:
            self._links[link.direction].add(link)

    def detach(self, links: Iterable[Link]) -> None:
        for link in links:
            self._links[link.direction].discard(link)

    async def add(self, toxic: Toxic) -> None:
        self.check_name_is_free(toxic.name)
        self._toxics[toxic.direction].append(toxic)
        await self._edit(toxic.direction, lambda link: link.add(toxic))

    async def update(self, toxic: Toxic) -> None:
        chain = self._toxics[toxic.direction]
        chain[chain.index(self.get(toxic.name))] = toxic
        await self._edit(toxic.direction, lambda link: link.update(toxic))

    async def remove(self, name: str) -> None:
        toxic = self.get(name)
        self._toxics[toxic.direction].remove(toxic)
        await self._edit(toxic.direction, lambda link: link.remove(name))

    async def remove_all(self) -> None:
        for toxic in self.all():
            await self.remove(toxic.name)

    async def _edit(self, direction: Direction, edit: LinkEdit) -> None:
        links = list(self._links[direction])
        if links:
            await asyncio.gather(*(edit(link) for link in links))
