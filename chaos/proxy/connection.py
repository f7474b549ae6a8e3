"""One proxied client: its socket, the upstream socket dialled for it, and the two links
between them (``upstream`` carries client → server, ``downstream`` server → client)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Sequence

from chaos.proxy.link import Link
from chaos.proxy.toxics import Direction, Toxic

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]

_LINGER_ZERO = struct.pack("ii", 1, 0)


class Connection:
    def __init__(
        self,
        client: StreamPair,
        upstream: StreamPair,
        toxics: Sequence[Toxic],
        rng: random.Random,
    ) -> None:
        self._writers = (client[1], upstream[1])
        # A reset_peer toxic present at accept makes every close of this connection an RST
        # (SO_LINGER=0 on both sockets); one added later only closes with a FIN.
        self.is_resetting = any(toxic.kind.is_resetting for toxic in toxics)
        if self.is_resetting:
            for writer in self._writers:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        self.links = {
            direction: Link(
                direction,
                [toxic for toxic in toxics if toxic.direction is direction],
                source,
                destination,
                rng,
                is_resetting_on_close=self.is_resetting,
            )
            for direction, source, destination in (
                (Direction.UPSTREAM, client[0], upstream[1]),
                (Direction.DOWNSTREAM, upstream[0], client[1]),
            )
        }

    async def run(self) -> None:
        """Proxy until both directions have closed their destination and both sockets have
        flushed what they were sent; when cancelled (the proxy stops), close both sockets
        at once, as Go's ``Close()`` does."""
        for link in self.links.values():
            link.start()
        try:
            for link in self.links.values():
                await link.wait_closed()
            # Returning only once the graceful closes are done keeps this task listed on
            # the proxy, so that disabling it can still abort a peer that never reads.
            for writer in self._writers:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        finally:
            for writer in self._writers:
                writer.transport.abort()
            for link in self.links.values():
                await link.stop()
