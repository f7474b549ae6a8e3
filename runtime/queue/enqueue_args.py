"""The arguments of ``lua/enqueue.lua``: one job to create (``NewJob``) and the KEYS and
ARGV of its call, as bytes (``EnqueueArgs``)."""

from __future__ import annotations

from typing import NamedTuple

from runtime.function import Priority
from runtime.queue.keys import FunctionKeys
from runtime.queue.resp import bulk

ENQUEUE_KEYS = 11  # KEYS of lua/enqueue.lua
ENQUEUE_ARGV = 12  # ARGV of lua/enqueue.lua
_FLAG = {True: bulk(b"1"), False: bulk(b"0")}
_NO_DELAY = bulk(b"0")


class NewJob(NamedTuple):
    """One job for ``enqueue``/``enqueue_many``: its full id, envelope and placement."""

    job_id: str
    envelope: bytes
    priority: Priority = "default"
    delay_s: float | None = None
    idempotency_key: str | None = None
    own_id: bool = False  # the caller chose the id (not envelope.new_job_id's random one)


class EnqueueArgs:
    """The arguments of lua/enqueue.lua that are the same for every job of a function,
    encoded once per function (RedisBroker._fixed): redis-py's packing of str and int
    arguments was most of enqueue_many's time."""

    def __init__(
        self, k: FunctionKeys, keep_result_s: int, wake: str, function: str, sha: str
    ) -> None:
        self.k = k
        self.job_prefix = k.job("").encode()  # a job's key is this and its id
        self.ready = {p: lane.encode() for p, lane in k.ready.items()}
        self.priority = {p: p.encode() for p in k.ready}
        self.delayed = k.delayed.encode()
        self.no_idem = k.idem("-").encode()
        self.park_and_lanes = [k.parked.encode(), k.park.encode(), k.leased.encode()] + [
            lane.encode() for lane in k.lanes
        ]
        self.results = k.results.encode()
        self.keep_result_s = b"%d" % keep_result_s
        self.tail = [wake.encode(), function.encode(), k.prefix.encode()]
        # resp(): the same arguments, packed once (see runtime/queue/packed.py)
        head = [b"EVALSHA", sha.encode(), b"%d" % ENQUEUE_KEYS]
        self._head = b"*%d\r\n" % (len(head) + ENQUEUE_KEYS + ENQUEUE_ARGV)
        self._head += b"".join(map(bulk, head))
        self._lanes = {p: bulk(self.ready[p]) + bulk(self.delayed) for p in self.ready}
        self._no_idem = bulk(self.no_idem)
        self._keys_tail = b"".join(map(bulk, [*self.park_and_lanes, self.results]))
        self._priority = {p: bulk(name) for p, name in self.priority.items()}
        self._argv_mid = b"".join(map(bulk, [self.keep_result_s, b"0", *self.tail]))

    def idem(self, key: str) -> bytes:
        return self.k.idem(key).encode()

    def call(self, job: NewJob, notify: bool, *, fresh: bool) -> tuple[list[bytes], list[bytes]]:
        """KEYS and ARGV of lua/enqueue.lua for ``job``; ``fresh``: the first send of an id
        the runtime made (see enqueue.lua)."""
        key = job.idempotency_key
        job_id = job.job_id.encode()
        keys = [
            self.job_prefix + job_id,
            self.ready[job.priority],
            self.delayed,
            self.idem(key) if key else self.no_idem,
            *self.park_and_lanes,
            self.results,
        ]
        delay_ms = round((job.delay_s or 0) * 1000)
        args = [
            job_id,
            job.envelope,
            self.priority[job.priority],
            b"%d" % delay_ms if delay_ms > 0 else b"0",
            b"1" if key else b"0",
            self.keep_result_s,
            b"1" if notify else b"0",
            *self.tail,
            b"1" if job.own_id else b"0",
            b"1" if fresh and not job.own_id else b"0",
        ]
        return keys, args

    def resp(self, job: NewJob, *, fresh: bool) -> bytes:
        """``EVALSHA`` of lua/enqueue.lua for ``job`` packed as RESP, without notify: the
        same command as ``call(job, False, fresh=fresh)`` (a unit test holds them equal)."""
        key = job.idempotency_key
        job_id = job.job_id.encode()
        delay_ms = round((job.delay_s or 0) * 1000)
        return b"".join(
            (
                self._head,
                bulk(self.job_prefix + job_id),
                self._lanes[job.priority],
                bulk(self.idem(key)) if key else self._no_idem,
                self._keys_tail,
                bulk(job_id),
                bulk(job.envelope),
                self._priority[job.priority],
                bulk(b"%d" % delay_ms) if delay_ms > 0 else _NO_DELAY,
                _FLAG[bool(key)],
                self._argv_mid,
                _FLAG[job.own_id],
                _FLAG[fresh and not job.own_id],
            )
        )
