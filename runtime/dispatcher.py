"""The dispatcher: one FunctionWorker per registered function, and the wake listener.

Idle workers sleep on an event; the enqueue script publishes the function's name on the
namespace's wake channel when a lane goes from empty to non-empty, and the listener sets
that worker's event. A dropped subscription wakes every worker on reconnect (a message may
have been missed), and each worker also polls at ``idle_poll_s``: a handful of commands per
second when idle, a few milliseconds from enqueue to start when not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from runtime.broker import REDIS_ERRORS, RedisBroker
from runtime.metrics import Metrics
from runtime.quarantine import Quarantine
from runtime.registry import Registry
from runtime.settings import Settings
from runtime.tracing import Tracing
from runtime.worker import FunctionWorker

log = logging.getLogger("runtime.dispatcher")


class Dispatcher:
    def __init__(
        self,
        registry: Registry,
        broker: RedisBroker,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self.quarantine = Quarantine()  # one per process: a crash takes the whole process
        self.workers: Mapping[str, FunctionWorker] = {
            spec.name: FunctionWorker(
                spec,
                broker,
                settings.worker,
                params=settings.params.get(spec.name),
                quarantine=self.quarantine,
                metrics=metrics.for_function(spec.name) if metrics is not None else None,
                tracing=tracing,
            )
            for spec in registry
        }
        self._listener: asyncio.Task[None] | None = None
        self.is_subscribed = False

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        self._listener = asyncio.create_task(self._listen(), name="wake-listener")

    @property
    def is_running(self) -> bool:
        listening = self._listener is not None and not self._listener.done()
        return listening and all(w.is_alive for w in self.workers.values())

    async def drain(self, grace_s: float) -> None:
        """Graceful stop: every worker stops claiming and finishes or releases its jobs."""
        await asyncio.gather(*(w.drain(grace_s) for w in self.workers.values()))
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    def _wake_all(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    async def _listen(self) -> None:
        retry_s = 0.1
        poll_s = min(1.0, self._settings.redis.timeout_s / 2)
        while True:
            pubsub = self._broker.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._broker.wake_channel)
                self.is_subscribed = True
                retry_s = 0.1
                self._wake_all()  # messages may have been missed while unsubscribed
                while True:
                    message = await pubsub.get_message(timeout=poll_s)
                    if message is not None and message["type"] == "message":
                        worker = self.workers.get(message["data"].decode())
                        if worker is not None:
                            worker.wake()
            except REDIS_ERRORS as exc:
                if self.is_subscribed:
                    log.warning("wake channel lost (%s); reconnecting", exc)
                self.is_subscribed = False
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, 2.0)
            finally:
                self.is_subscribed = False
                try:
                    await asyncio.wait_for(pubsub.aclose(), timeout=1.0)  # type: ignore[no-untyped-call]
                except (*REDIS_ERRORS, TimeoutError):
                    pass
