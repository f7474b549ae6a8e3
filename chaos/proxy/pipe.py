"""The plumbing between the stages of one link: timestamped chunks, the end-of-stream
marker, single-consumer channels, and the link-wide byte budget that gives back-pressure.

Channels are unbounded so that a stage never blocks while sending; that keeps toxic
interrupts simple (an interrupted stage always returns promptly) and lets a latency stage
queue as much as it needs. Memory stays bounded by the ``FlowBudget`` instead: every channel
of a link counts its queued bytes there, and the link's socket reader waits while the total
is above the high-water mark, so a stalled toxic pushes back on the sender through TCP.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass
from typing import Literal

READ_SIZE = 32 * 1024
"""Bytes read from a socket at a time; Go's ``io.Copy`` uses the same 32 KiB buffer."""

HIGH_WATER_BYTES = 32 * 1024 * 1024
"""Bytes one link may hold in its channels before its reader stops reading: the size of
Go's latency buffer (1024 chunks of 32 KiB), so a pipelined latency does not cap
throughput below what the real server allows."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read from a socket and the loop time (seconds) they were read or last released."""

    data: bytes
    read_at: float


class Signal(enum.Enum):
    """What a stage can receive instead of a chunk."""

    EOF = "eof"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed out"


Item = Chunk | Literal[Signal.EOF]


class FlowBudget:
    """The bytes queued in one link's channels; the reader waits for room."""

    def __init__(self, high_water_bytes: int = HIGH_WATER_BYTES) -> None:
        self.high_water_bytes = high_water_bytes
        self.queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None

    def add(self, count: int) -> None:
        self.queued_bytes += count

    def remove(self, count: int) -> None:
        self.queued_bytes -= count
        waiter = self._waiter
        if self.queued_bytes <= self.high_water_bytes and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_room(self) -> None:
        while self.queued_bytes > self.high_water_bytes:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class Channel:
    """A FIFO of chunks with exactly one consumer (a stage or a link's writer).

    Once an EOF has been queued the channel is closed: later puts are dropped, which is
    what a dead link wants for data that arrives after its destination was closed.
    """

    def __init__(self, budget: FlowBudget) -> None:
        self._budget = budget
        self._items: deque[Item] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.is_closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        if self.is_closed:
            return
        if isinstance(item, Chunk):
            self._budget.add(len(item.data))
        else:
            self.is_closed = True
        self._items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take(self) -> Item:
        """Remove the oldest item; the caller has checked that there is one."""
        item = self._items.popleft()
        if isinstance(item, Chunk):
            self._budget.remove(len(item.data))
        return item

    async def get(self) -> Item:
        """Wait for the next item (the writer's side; stages wait through ``Stage``)."""
        while not self._items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.take()

    def discard(self) -> None:
        """Drop what is queued and everything that comes later (the destination is gone)."""
        while self._items:
            self.take()
        self.is_closed = True
