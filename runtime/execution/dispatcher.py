"""The dispatcher: one FunctionWorker per registered function, and the wake listener.

A hot swap (a new deployment, or ``--reload``) replaces the workers in one step: see
:meth:`Dispatcher.swap`.

Idle workers sleep on an event; the enqueue script publishes the function's name on the
namespace's wake channel when a lane goes from empty to non-empty, and the listener sets
that worker's event. A dropped subscription wakes every worker on reconnect (a message may
have been missed), and each worker also polls at ``idle_poll_s``: a handful of commands per
second when idle, a few milliseconds from enqueue to start when not.

Handoff: the same connection subscribes, by name, to this process's handoff channels, one
per worker (no pattern: a Redis ACL can grant ``&{ns}:*`` for these, never a pattern with
a random instance id in it; see runtime/queue/keys.py). A worker made by a swap may park
once the listener has subscribed its channel (within one poll); a retired worker's
channel is unsubscribed once its retirement ends. A worker whose claim finds nothing is
parked on its channel (claim.lua), and enqueue leases a new job straight to it and
publishes it there (enqueue.lua): the job starts one round trip sooner, with the same
lease and fencing token as a claimed one. A drain un-parks every worker and waits for the
fence message that follows each unpark, so no handed-off job arrives unseen.
docs/architecture.md lists how each lost, late or unrunnable handoff ends.

The listener runs under the dispatcher's supervisor (``wake-listener``), each worker's
loops under the worker's own: a task that fails is restarted, and ``down`` names what is
down now for ``/readyz``. Any Redis error is a lost subscription (reconnect, wake every
worker); a message that is not a function name or a handoff is refused (``rejects``) and
skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Mapping

from runtime.config.registry import Registry
from runtime.config.schema import Settings
from runtime.errors import BrokerError, BrokerPermissionError
from runtime.execution.channels import (
    follow_channels,
    handoffs,
    listened,
    shard_counts,
    shard_names,
    wake_channels,
)
from runtime.execution.quarantine import Quarantine
from runtime.execution.worker import FunctionWorker
from runtime.function import FunctionSpec
from runtime.jobs.records import ClaimedJob, parse_handoff
from runtime.jobs.settle import Release
from runtime.observe import rejects
from runtime.observe.metrics import Metrics
from runtime.observe.supervisor import Supervisor, raise_if_cancelled
from runtime.observe.tracing import Tracing
from runtime.queue.broker import RedisBroker
from runtime.queue.connection import close_pubsub
from runtime.queue.keys import handoff_channel
from runtime.queue.shards import handed, split_name

log = logging.getLogger("runtime.dispatcher")

LISTENER = "wake-listener"
MAX_WAKE_BYTES = 1000
CANCEL_HINT = "cancel:"  # a wake message asking for a heartbeat now (cancel.lua)


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
        instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # One channel per worker under this instance id, each subscribed by name: a job
        # handed to a worker reaches that worker (a retiring one releases it), and each
        # worker adopts only what was handed to itself.
        self._instance = instance
        self._by_channel: dict[bytes, FunctionWorker] = {}
        self._serial = 0
        self.workers: Mapping[str, FunctionWorker] = {
            spec.name: self._worker(spec) for spec in registry
        }
        # Workers of a replaced registry, finishing the jobs they had (see swap).
        self.retiring: set[FunctionWorker] = set()
        self._retirements: set[asyncio.Task[None]] = set()
        self._supervisor = Supervisor("dispatcher")
        self.is_subscribed = False
        self._fences = 0  # fence messages received (one follows each unpark)
        self._fence_seen = asyncio.Event()
        self._orphans: set[asyncio.Task[None]] = set()  # releases of unknown functions' jobs
        self._counts: dict[str, int] = {}  # function -> shards listened to (on a cluster)

    def _worker(self, spec: FunctionSpec) -> FunctionWorker:
        self._broker.shards[spec.name] = spec.options.shards
        worker = FunctionWorker(
            spec,
            self._broker,
            self._settings.worker,
            params=self._settings.params.get(spec.name),
            quarantine=self.quarantine,
            metrics=self._metrics.for_function(spec.name) if self._metrics is not None else None,
            tracing=self._tracing,
        )
        self._serial += 1
        worker.handoff_channel = handoff_channel(
            self._broker.namespace, self._instance, self._serial
        )
        for name in shard_names(spec.name, spec.options.shards):
            self._by_channel[listened(self._broker, worker.handoff_channel, name)] = worker
        return worker

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        self._supervisor.spawn(LISTENER, self._listen)

    @property
    def is_running(self) -> bool:
        """The listener and every worker's loops run, none down (restarting)."""
        listening = self._supervisor.is_running(LISTENER)
        return listening and all(w.is_alive for w in self.workers.values())

    @property
    def down(self) -> dict[str, str]:
        """The tasks down now (the listener's, the current workers'): name -> error."""
        found = self._supervisor.down
        for worker in self.workers.values():
            found.update(worker.down)
        return found

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
        for w in old:
            w.allow_parking(False)  # new jobs go to the new workers; _retire un-parks these
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
            worker.allow_parking(False)  # until the listener has subscribed its channel
            worker.start()
        retirement = asyncio.create_task(self._retire(old, drains), name="retire")
        self._retirements.add(retirement)
        retirement.add_done_callback(self._retirements.discard)
        return retirement

    async def _retire(self, old: list[FunctionWorker], drains: list[asyncio.Task[None]]) -> None:
        try:
            await self._unpark(old)  # a job handed to them meanwhile is released (stopping)
            for worker, result in zip(
                old, await asyncio.gather(*drains, return_exceptions=True), strict=True
            ):
                if isinstance(result, Exception):
                    log.error("%s: the old worker failed to drain: %r", worker.name, result)
        finally:
            self.retiring.difference_update(old)
            for channel in [c for c, w in self._by_channel.items() if w in old]:
                del self._by_channel[channel]

    async def drain(self, grace_s: float) -> None:
        """Graceful stop: every worker stops claiming and finishes or releases its jobs.

        Workers still retiring from a swap get the same grace: a second drain cuts theirs.
        """
        workers = [*self.workers.values(), *self.retiring]
        await self._unpark(list(self.workers.values()))
        await asyncio.gather(*(w.drain(grace_s) for w in workers))
        await asyncio.gather(*self._retirements, return_exceptions=True)
        await self._supervisor.stop(timeout_s=2.0)

    def _wake_all(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    def _set_parking(self, subscribed: bool) -> None:
        self.is_subscribed = subscribed
        for worker in self.workers.values():
            worker.allow_parking(subscribed)

    async def _unpark(self, workers: list[FunctionWorker], timeout_s: float = 1.0) -> None:
        """Un-park ``workers`` in Redis, then wait (at most ``timeout_s``) for the fence of
        each unpark: every job handed to them before it has then reached ``accept``."""
        for worker in workers:
            worker.allow_parking(False)
        if not self.is_subscribed or not workers:
            return
        target = self._fences
        try:
            async with asyncio.timeout(timeout_s):
                for worker in workers:
                    await self._broker.unpark(worker.name, worker.handoff_channel)
                    target += 1
                while self._fences < target:
                    self._fence_seen.clear()
                    await self._fence_seen.wait()
        except (TimeoutError, BrokerError) as exc:
            # Parks expire by themselves; a job handed over meanwhile is released (stopping)
            # or, if its message never arrives, reclaimed when its lease expires. (Not
            # raise_if_cancelled(): a drain runs in aiohttp's main task, already cancelled.)
            log.warning("un-parking before the drain did not complete: %r", exc)

    def _handoff(self, channel: bytes, data: bytes) -> None:
        if not data:
            self._fences += 1
            self._fence_seen.set()
            return
        parsed = parse_handoff(data)
        if parsed is None:
            # Not from enqueue.lua: if a job was leased to us with it, its lease expires.
            rejects.reject("handoff_message", rejects.sample(data))
            return
        name, job, now_ms = parsed
        function = handed(name, job)  # the function of the shard it was leased on
        worker = self._by_channel.get(channel)
        if worker is not None:
            worker.accept(job, now_ms)
            return
        task = asyncio.create_task(self._release(function, job), name=f"release:{job.id}")
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _release(self, function: str, job: ClaimedJob) -> None:
        """A job handed over for a function no longer served here: back to its lane."""
        try:
            await self._broker.settle(function, [Release(job.id, job.token)])
        except BrokerError as exc:
            log.warning("releasing job %s failed (its lease will expire): %s", job.id, exc)

    async def _channels(self) -> tuple[set[bytes], dict[bytes, FunctionWorker]]:
        """The wake channels and the handoff channels (-> worker) to listen on now: on a
        cluster, those of every shard still claimed (channels.py)."""
        counts = await shard_counts(self._broker, self.workers, self._counts)
        wakes = wake_channels(self._broker, self.workers, counts)
        return wakes, handoffs(self._by_channel, self._broker, self.workers, counts)

    def _wake(self, data: object) -> None:
        on_wake(self.workers, data)

    async def _listen(self) -> None:
        retry_s = 0.1
        poll_s = min(1.0, self._settings.redis.timeout_s / 2)
        while True:
            pubsub = self._broker.redis.pubsub(ignore_subscribe_messages=True)
            try:
                wakes, by_channel = await self._channels()
                subscribed = {*wakes, *by_channel}
                await pubsub.subscribe(*subscribed)
                self._set_parking(True)
                self._wake_all()  # messages may have been missed while unsubscribed
                while True:
                    wakes, by_channel = await self._channels()  # a deploy changes them
                    wanted = {**dict.fromkeys(wakes), **by_channel}
                    for worker in await follow_channels(pubsub, subscribed, wanted):
                        if worker in self.workers.values():  # not retired meanwhile
                            worker.allow_parking(True)
                    message = await pubsub.get_message(timeout=poll_s)
                    retry_s = 0.1  # subscribed: a cluster refuses SSUBSCRIBE in a reply
                    if message is None or message["type"] != "message":
                        continue
                    channel, data = message["channel"], message["data"]
                    if channel in wakes:
                        self._wake(data)
                    elif isinstance(channel, bytes) and isinstance(data, bytes):
                        self._handoff(channel, data)
                    else:
                        rejects.reject("handoff_message", rejects.sample(data))
            except BrokerError as exc:
                raise_if_cancelled()  # a stop that redis-py turned into a timeout
                if self.is_subscribed:
                    log.warning("wake channel lost (%s); reconnecting", exc)
                self._set_parking(False)
                await asyncio.sleep(retry_s)
                # A cluster's failover ends at a moment no error announces: look again soon.
                # A refusal (ACL) is a setting to fix, not a moment to wait for: back off.
                soon = self._broker.redis.is_cluster and not isinstance(exc, BrokerPermissionError)
                retry_s = min(retry_s * 2, 0.2 if soon else 1.0)
            finally:
                self._set_parking(False)
                await close_pubsub(pubsub)


def on_wake(workers: Mapping[str, FunctionWorker], data: object) -> None:
    """A wake message: the function (shard) whose lane went from empty to non-empty, or
    ``cancel:<function>`` (lua/cancel.lua): a running job of that function is to be
    cancelled, so its holder's heartbeat reads which now rather than at its next turn (only
    a hint: the request itself is read from the job's record)."""
    if not isinstance(data, bytes) or len(data) > MAX_WAKE_BYTES:
        rejects.reject("wake_channel", f"not a function name: {rejects.sample(data)}")
        return
    try:
        name = data.decode()
    except UnicodeDecodeError:
        rejects.reject("wake_channel", f"not UTF-8: {rejects.sample(data)}")
        return
    is_cancel = name.startswith(CANCEL_HINT)
    base = name.removeprefix(CANCEL_HINT) if is_cancel else name
    worker = workers.get(split_name(base)[0])  # any shard wakes the function's claims
    if worker is not None and is_cancel:
        worker.beat_now()
    elif worker is not None:
        worker.wake()
