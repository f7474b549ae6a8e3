"""The dispatcher: one FunctionWorker per registered function, and the wake listener.

A hot swap (a new deployment, or ``--reload``) replaces the workers in one step: see
:meth:`Dispatcher.swap`.

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

from runtime.broker import REDIS_ERRORS, RedisBroker, close_pubsub
from runtime.function import FunctionSpec
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
        self._metrics = metrics
        self._tracing = tracing
        self.quarantine = Quarantine()  # one per process: a crash takes the whole process
        self.workers: Mapping[str, FunctionWorker] = {
            spec.name: self._worker(spec) for spec in registry
        }
        # Workers of a replaced registry, finishing the jobs they had (see swap).
        self.retiring: set[FunctionWorker] = set()
        self._retirements: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self.is_subscribed = False

    def _worker(self, spec: FunctionSpec) -> FunctionWorker:
        return FunctionWorker(
            spec,
            self._broker,
            self._settings.worker,
            params=self._settings.params.get(spec.name),
            quarantine=self.quarantine,
            metrics=self._metrics.for_function(spec.name) if self._metrics is not None else None,
            tracing=self._tracing,
        )

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        self._listener = asyncio.create_task(self._listen(), name="wake-listener")

    @property
    def is_running(self) -> bool:
        listening = self._listener is not None and not self._listener.done()
        return listening and all(w.is_alive for w in self.workers.values())

    @property
    def running_jobs(self) -> int:
        return sum(w.running for w in (*self.workers.values(), *self.retiring))

    def swap(self, registry: Registry) -> asyncio.Task[None]:
        """Run ``registry`` from now on; returns the task that ends when the old workers have.

        One step with no await, so the event loop sees the old workers or the new ones:
        every function gets a new worker (new code, new limits), and each old worker
        drains: it stops claiming, and its running jobs finish on the old code (each has
        its ``timeout_s`` plus one lease, as at shutdown), their leases renewed until
        settled. No job is dropped or run twice by the swap: a job is claimed by the old
        worker or by the new one, never both. The drains are created first, so they run
        first and stop the old claim loops before the new ones claim; a claim the old
        worker had already sent completes on the old code.

        While old jobs finish, a function may run more than ``concurrency`` jobs in this
        process (old ones plus new ones); ``max_in_flight`` still holds fleet-wide.
        Functions absent from ``registry`` stop being claimed: their jobs stay queued.
        """
        old = list(self.workers.values())
        lease_s = self._settings.worker.lease_s
        drains = [
            asyncio.create_task(
                w.drain(w.spec.options.timeout_s + lease_s), name=f"retire:{w.name}"
            )
            for w in old
        ]
        self.retiring.update(old)
        self.workers = {spec.name: self._worker(spec) for spec in registry}
        for worker in self.workers.values():
            worker.start()
        retirement = asyncio.create_task(self._retire(old, drains), name="retire")
        self._retirements.add(retirement)
        retirement.add_done_callback(self._retirements.discard)
        return retirement

    async def _retire(self, old: list[FunctionWorker], drains: list[asyncio.Task[None]]) -> None:
        try:
            for worker, result in zip(
                old, await asyncio.gather(*drains, return_exceptions=True), strict=True
            ):
                if isinstance(result, Exception):
                    log.error("%s: the old worker failed to drain: %r", worker.name, result)
        finally:
            self.retiring.difference_update(old)

    async def drain(self, grace_s: float) -> None:
        """Graceful stop: every worker stops claiming and finishes or releases its jobs.

        Workers still retiring from a swap get the same grace: a second drain cuts theirs.
        """
        workers = [*self.workers.values(), *self.retiring]
        await asyncio.gather(*(w.drain(grace_s) for w in workers))
        await asyncio.gather(*self._retirements, return_exceptions=True)
        if self._listener is not None:
            self._closing = True  # ends the loop even if a cancellation is swallowed
            self._listener.cancel()
            await asyncio.wait({self._listener}, timeout=2.0)

    def _wake_all(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    async def _listen(self) -> None:
        retry_s = 0.1
        poll_s = min(1.0, self._settings.redis.timeout_s / 2)
        while not self._closing:
            pubsub = self._broker.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._broker.wake_channel)
                self.is_subscribed = True
                retry_s = 0.1
                self._wake_all()  # messages may have been missed while unsubscribed
                while not self._closing:
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
                await close_pubsub(pubsub)
