"""One toxic running on one link: the stage reads chunks from its input channel, applies
its behaviour, and sends the result to its output channel.

A behaviour is a coroutine that runs until it is interrupted or until it has passed the
end of the stream on (``close``). The link interrupts a stage when a toxic is added after
it, removed, or updated, and restarts it afterwards (which re-rolls toxicity), so every
wait a behaviour makes, for input or for time, wakes up on an interrupt. Invariants:

- an interrupted behaviour returns without dropping the chunk it holds (it sends it on);
- a closed stage has queued an EOF on its output and is never started again;
- ``state`` outlives restarts, so per-link counters (``limit_data``) survive interrupts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from chaos.proxy.pipe import Channel, Chunk, Signal

log = logging.getLogger("chaos.proxy.stage")

Behaviour = Callable[["Stage"], Awaitable[None]]


class Stage:
    def __init__(self, input_channel: Channel, output: Channel, rng: random.Random) -> None:
        self.input = input_channel
        self.output = output
        self.rng = rng
        self.state: dict[str, int] = {}
        self.is_closed = False
        self.task: asyncio.Task[None] | None = None
        self._is_interrupted = False
        self._waiter: asyncio.Future[None] | None = None

    # -- used by behaviours ------------------------------------------------------------

    async def receive(self, idle_timeout_s: float | None = None) -> Chunk | Signal:
        """The next chunk or EOF; INTERRUPTED when interrupted; TIMED_OUT after
        ``idle_timeout_s`` without input."""
        loop = asyncio.get_running_loop()
        deadline = None if idle_timeout_s is None else loop.time() + idle_timeout_s
        while True:
            if self._is_interrupted:
                return Signal.INTERRUPTED
            if self.input:
                return self.input.take()
            if deadline is not None and loop.time() >= deadline:
                return Signal.TIMED_OUT
            await self._wait(deadline, is_watching_input=True)

    async def sleep_until(self, deadline: float) -> bool:
        """Wait until the loop time ``deadline``; False if interrupted first."""
        loop = asyncio.get_running_loop()
        while True:
            if self._is_interrupted:
                return False
            if loop.time() >= deadline:
                return True
            await self._wait(deadline, is_watching_input=False)

    async def sleep(self, delay_s: float) -> bool:
        """Wait ``delay_s`` seconds; False if interrupted first."""
        return await self.sleep_until(asyncio.get_running_loop().time() + delay_s)

    def send(self, chunk: Chunk) -> None:
        if chunk.data:
            self.output.put(chunk)

    def close(self) -> None:
        """Pass the end of the stream on; the link's writer then closes its destination."""
        self.is_closed = True
        self.output.put(Signal.EOF)

    # -- used by the link --------------------------------------------------------------

    def start(self, behaviour: Behaviour) -> None:
        if self.is_closed:
            return
        self._is_interrupted = False
        self.task = asyncio.create_task(self._run(behaviour))

    def interrupt(self) -> None:
        self._is_interrupted = True
        self._wake()

    async def stop(self) -> None:
        """Interrupt the behaviour and wait until it has returned."""
        self.interrupt()
        if self.task is not None:
            await asyncio.wait([self.task])

    async def _run(self, behaviour: Behaviour) -> None:
        try:
            await behaviour(self)
        except Exception:
            # A bug in a behaviour must end this connection, not hang it.
            log.exception("toxic stage failed; closing the link")
            self.close()

    async def _wait(self, deadline: float | None, *, is_watching_input: bool) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        if is_watching_input:
            self.input.waiter = waiter
        timer = None if deadline is None else loop.call_at(deadline, self._wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if is_watching_input and self.input.waiter is waiter:
                self.input.waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
