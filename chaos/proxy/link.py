"""One direction of one proxied connection: a reader, a chain of stages, a writer.

    socket ─reader→ [noop head] → [toxic 1] → … → [toxic n] ─writer→ socket

The reader timestamps each chunk it reads. The hidden noop head gives every edit a stage
before the edited one. The writer writes what reaches the end of the chain and, at EOF,
closes the destination socket fully (not half-closed); that ends the opposite link's read,
so one side's FIN becomes a full close of both after in-flight data is delivered.

Chain edits keep every byte and its order: the stages around the edit are interrupted
(each hands on the chunk it holds), queued chunks are moved on in order, and the stages
restart. All edits of one proxy are serialized by the proxy's lock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from chaos.proxy.pipe import READ_SIZE, Channel, Chunk, FlowBudget, Signal
from chaos.proxy.stage import Stage
from chaos.proxy.toxics import Direction, Toxic, run_noop


@dataclass(slots=True)
class _Slot:
    toxic: Toxic | None  # None for the hidden noop head
    stage: Stage


class Link:
    def __init__(
        self,
        direction: Direction,
        toxics: Sequence[Toxic],
        source: asyncio.StreamReader,
        destination: asyncio.StreamWriter,
        rng: random.Random,
        *,
        is_resetting_on_close: bool,
    ) -> None:
        self.direction = direction
        self._source = source
        self._destination = destination
        self._rng = rng
        self._is_resetting_on_close = is_resetting_on_close
        self._budget = FlowBudget()
        self._output = Channel(self._budget)
        self._is_stopped = False
        self._slots: list[_Slot] = []
        channel = Channel(self._budget)
        for toxic in (None, *toxics):
            following = Channel(self._budget)
            self._slots.append(_Slot(toxic, Stage(channel, following, rng)))
            channel = following
        self._slots[-1].stage.output = self._output
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        for slot in self._slots:
            self._run(slot)
        self._reader = asyncio.create_task(self._read())
        self._writer = asyncio.create_task(self._write())

    async def wait_closed(self) -> None:
        """Return once the writer has closed the destination (or given up on it)."""
        if self._writer is not None:
            await asyncio.wait([self._writer])

    async def stop(self) -> None:
        """Cancel every task of the link and wait for them (the sockets are closed by the
        connection)."""
        self._is_stopped = True
        tasks = [self._reader, self._writer, *(slot.stage.task for slot in self._slots)]
        running = [task for task in tasks if task is not None and not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    # -- chain edits -------------------------------------------------------------------

    async def add(self, toxic: Toxic) -> None:
        """Append a toxic to the end of the chain; it applies to data already queued."""
        tail = self._slots[-1].stage
        await tail.stop()
        if self._is_stopped or tail.is_closed:
            return
        channel = Channel(self._budget)
        slot = _Slot(toxic, Stage(channel, tail.output, self._rng))
        tail.output = channel
        self._slots.append(slot)
        self._run(self._slots[-2])
        self._run(slot)

    async def update(self, toxic: Toxic) -> None:
        """Restart a toxic's stage with new settings (re-rolling its toxicity)."""
        slot = self._find(toxic.name)
        if slot is None:
            return
        await slot.stage.stop()
        slot.toxic = toxic
        self._run(slot)

    async def remove(self, name: str) -> None:
        """Take a toxic out of the chain, handing on everything it had queued; removing a
        timeout toxic closes the link instead (as the real server's cleanup does)."""
        slot = self._find(name)
        if slot is None:
            return
        index = self._slots.index(slot)
        previous = self._slots[index - 1]
        await asyncio.gather(slot.stage.stop(), previous.stage.stop())
        if self._is_stopped:
            return
        removed = slot.stage
        if slot.toxic is not None and slot.toxic.kind.is_closing_on_remove:
            removed.close()
        while removed.input:
            removed.output.put(removed.input.take())
        previous.stage.output = removed.output
        self._slots.remove(slot)
        self._run(previous)

    def _find(self, name: str) -> _Slot | None:
        for slot in self._slots[1:]:
            if slot.toxic is not None and slot.toxic.name == name:
                return slot
        return None

    def _run(self, slot: _Slot) -> None:
        if self._is_stopped:
            return
        toxic = slot.toxic
        if toxic is None or self._rng.random() >= toxic.toxicity:
            # Toxicity is rolled each time the stage (re)starts, not per chunk.
            slot.stage.start(lambda stage: run_noop(stage, {}))
        else:
            run, attributes = toxic.kind.run, toxic.attributes
            slot.stage.start(lambda stage: run(stage, attributes))

    # -- sockets -----------------------------------------------------------------------

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        head = self._slots[0].stage.input
        try:
            while True:
                await self._budget.wait_for_room()
                data = await self._source.read(READ_SIZE)
                if not data:
                    break
                head.put(Chunk(data, loop.time()))
        except OSError:
            pass  # a reset or a socket we closed ourselves: both are an end of stream
        head.put(Signal.EOF)

    async def _write(self) -> None:
        transport = self._destination.transport
        try:
            while True:
                item = await self._output.get()
                if not isinstance(item, Chunk):
                    break
                if transport.is_closing():
                    raise ConnectionResetError("destination closed")
                self._destination.write(item.data)
                await self._destination.drain()
        except OSError:
            self._output.discard()
            transport.abort()
            return
        if self._is_resetting_on_close:
            transport.abort()  # SO_LINGER=0 is set: this close sends an RST
        else:
            transport.close()  # flushes what is buffered, then sends FIN
