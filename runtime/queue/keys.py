"""Every Redis key the runtime uses, built in this one module.

All keys of one function share the hash tag ``{<namespace>:<function>}`` so that every
script touches a single slot and the same code runs on Redis Cluster.

Keys (type: what it holds; who removes it):

- ``{ns:fn}:ready:<priority>`` (list): job ids waiting, FIFO per lane; popped by claim.
- ``{ns:fn}:delayed`` (zset): job id -> due ms (scheduled, backoff); promoted by claim.
- ``{ns:fn}:leased`` (zset): job id -> lease deadline ms; removed by settle or reclaim.
- ``{ns:fn}:job:<id>`` (hash): envelope, state, counters, token, ``cxl`` (a cancel request),
  ``prg`` (progress); removed keep_result_s after completion or cancel (by the sweep
  below), kept while dead (until purged).
- ``{ns:fn}:results`` (zset): id of a completed or cancelled job -> when its record goes:
  settle adds completed ids in one command per batch (cheaper than an ``EXPIRE`` per job)
  and sweeps the due ones (``DEL`` of their records), as does reclaim, so records go while
  any runtime serves the function; enqueue takes out a caller-chosen id it reuses.
- ``{ns:fn}:history`` (zset): id of a finished job (completed, cancelled, dead) -> when it
  finished (Redis ms): the run history (``GET /v1/jobs``, ``runtime jobs``). Settle adds
  its batch's finished ids in one command, reclaim and cancel theirs; an id leaves with its
  record (the results sweep, a DLQ purge). A requeued dead job stays listed until it ends
  again (readers skip an id whose record is not finished).
- ``{ns:fn}:done:<id>`` (list): one marker once terminal, for waiters; keep_result_s.
- ``{ns:fn}:dlq`` (list): dead-lettered job ids; purge-dlq.
- ``{ns:fn}:idem:<key>`` (string): idempotency key -> job id; keep_result_s.
- ``{ns:fn}:claim:<claim id>`` (string): ids and tokens of one claim, for replay; 60 s.
- ``{ns:fn}:parked`` (zset): handoff channel of an idle worker -> park deadline ms; written
  by its claims, removed by the claim that finds it full, by unpark, or once expired.
- ``{ns:fn}:park`` (hash): handoff channel -> "room lease_ms max_in_flight" of that parked
  worker; removed with its ``parked`` entry.
- ``{ns:fn}:handed:<handoff channel>`` (set): ids enqueue leased to that worker channel and
  not yet settled, so its heartbeat adopts a job whose message was lost; removed by settle
  and reclaim; expires a day after the last handoff. Built inside the scripts (enqueue,
  extend, settle, reclaim) from the prefix and the channel they read from ``parked`` or
  the job hash's ``hand`` field: no caller can know the channel in advance.
- ``{ns:fn}:breaker`` (hash): ``host:pid`` -> JSON ``{"state", "at"}`` of each process's
  circuit breaker, for ``runtime stats`` and the backlog (``backlog.lua``); expires a day
  after the last report.
- ``{ns:fn}:rate`` (string): GCRA theoretical arrival time (ms) of the rate limit; expires.
- ``{ns:fn}:stats`` (hash): counters (completed, dead, stale acks, purged, requeued); never
  (tiny).
- ``{ns:fn}:minute:<unix minute>`` (hash): completed, retried, dead, recovered in that minute
  of Redis time, written by settle and reclaim for ``runtime stats`` rates; 2 h.
- ``{ns:fn}:admin:<call id>`` (string): the reply of one purge/requeue batch, for replay; 60 s.
- ``{ns}:wake`` (pub/sub channel): function name, published when work becomes ready;
  ``cancel:<function>`` when a running job of it is to be cancelled (its workers heartbeat).
- ``{ns}:done`` (pub/sub channel): id of a waited-for job (``notify``) that just ended.
- ``{ns}:handoff:<instance>:<n>`` (pub/sub channel): jobs leased by enqueue to worker
  ``n`` of that runtime instance while it is parked (``function\nid\nnow_ms\nenvelope``);
  an empty message is the fence an unpark sends after itself. Each process subscribes to
  its workers' channels by name (SUBSCRIBE, not a pattern: see "Channels and ACLs").

Namespace-wide (``NamespaceKeys``), under the hash tag ``{<namespace>}``:

- ``{ns}:epoch`` (string): a random token written once (SET NX) by the first runtime that
  finds it missing; a runtime that sees it gone or changed knows Redis lost its data
  (``epoch.py``); never deleted by the runtime.
- ``{ns}:instances`` (zset): runtime instance id -> last beat (Redis ms); pruned by the
  beat script ten windows after an instance goes silent, removed at a clean exit.
- ``{ns}:shards`` (zset): function -> the highest shard count ever used for it, only raised
  (``ZADD GT``) by the producers and workers that use it; never removed (shards.py).
- ``{ns}:instances:info`` (hash): instance id -> JSON (host, pid, version, functions,
  started); removed with its ``instances`` entry.

Deployments (``deploy.py``), all under the hash tag ``{<namespace>}``:

- ``{ns}:deploy:seq`` (string): the last version id handed out (INCR); never.
- ``{ns}:deploy:versions`` (zset): version id -> version id, the published versions;
  pruned to ``deploy.keep_versions`` by the publish script (never the active one).
- ``{ns}:deploy:v:<version>`` (hash): ``manifest`` (JSON), ``sig`` (HMAC-SHA256, hex),
  ``files`` (msgpack); deleted with its ``versions`` entry by the publish script's pruning
  (which builds the keys of the versions it prunes from ``DeployKeys.version_prefix``).
- ``{ns}:deploy:active`` (string): the version every runtime should run; never.
- ``{ns}:deploy:status`` (hash): instance id -> JSON (version loaded, refusals); the
  instance deletes its field at a clean exit, ``runtime deployments`` prunes dead ones.
- ``{ns}:deploy`` (pub/sub channel): a version id, published when it becomes active.

On Redis Cluster the same channels are shard channels (SPUBLISH/SSUBSCRIBE) in the slot
of their function: ``{ns:fn}:wake``, ``{ns:fn}:done``, ``{ns:fn}:handoff:<instance>:<n>``
(``shard_channel``); ``{ns}:deploy`` stays in the namespace's slot. A subscriber on a
cluster follows one wake and one handoff channel per function (sharded_pubsub.py).

Channels and ACLs: every channel is ``{ns}:<name>``, so a Redis user limited to its
namespace needs one channel rule, ``&{ns}:*`` (docs/security.md). The runtime never
subscribes to a pattern: Redis 7 checks a PSUBSCRIBE pattern *literally* against the
user's channel rules (``{ns}:handoff:<instance>:*`` would need that exact rule, and the
instance id is random), while a SUBSCRIBE channel is matched against them as a glob.

A sharded function (``@function(shards=N)``, shards.py) has these keys once per shard:
shard 0 under ``{ns:fn}`` as above, shard k >= 1 under ``{ns:fn#k}``, all built by
``FunctionKeys`` of the shard's name ``fn#k``.

A function's ``prefix`` is the ``{ns:fn}:`` string, passed to scripts so they can build the
keys of the ids they pop (``job:``, ``done:``, ``minute:``) and the ``handed:`` set of a
channel they read, all in the declared slot; no script builds any other key.
"""

from __future__ import annotations

from runtime.function import PRIORITIES, Priority


class FunctionKeys:
    """The keys of one function, computed once."""

    __slots__ = (
        "breaker",
        "delayed",
        "dlq",
        "function",
        "history",
        "leased",
        "park",
        "parked",
        "prefix",
        "rate",
        "ready",
        "results",
        "stats",
    )

    def __init__(self, namespace: str, function: str) -> None:
        self.function = function
        self.prefix = f"{{{namespace}:{function}}}:"
        self.ready: dict[Priority, str] = {p: f"{self.prefix}ready:{p}" for p in PRIORITIES}
        self.delayed = self.prefix + "delayed"
        self.leased = self.prefix + "leased"
        self.results = self.prefix + "results"  # finished job id -> when its record goes
        self.history = self.prefix + "history"  # finished job id -> finish ms
        self.dlq = self.prefix + "dlq"
        self.stats = self.prefix + "stats"
        self.rate = self.prefix + "rate"  # GCRA theoretical arrival time of the rate limit
        self.parked = self.prefix + "parked"  # idle workers' handoff channels -> deadline
        self.park = self.prefix + "park"  # handoff channel -> "room lease_ms max_in_flight"
        self.breaker = self.prefix + "breaker"  # host:pid -> breaker state JSON

    @property
    def lanes(self) -> list[str]:
        """Ready lists in strict priority order (high first)."""
        return [self.ready[p] for p in PRIORITIES]

    def claim_keys(self, claim_id: str) -> list[str]:
        """KEYS of lua/claim.lua, in its order."""
        own = [self.delayed, self.leased, self.claim(claim_id), self.dlq, self.stats, self.rate]
        return [*self.lanes, *own, self.parked, self.park]

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def raw_job(self, job_id: bytes) -> bytes:
        """The job key of an id as read from Redis, which need not be UTF-8."""
        return self.prefix.encode() + b"job:" + job_id

    def done(self, job_id: str) -> str:
        return f"{self.prefix}done:{job_id}"

    def idem(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    def claim(self, claim_id: str) -> str:
        return f"{self.prefix}claim:{claim_id}"

    def minute(self, unix_minute: int) -> str:
        return f"{self.prefix}minute:{unix_minute}"

    def admin_call(self, call_id: str) -> str:
        return f"{self.prefix}admin:{call_id}"

    def handed(self, channel: str) -> str:
        """Jobs handed to ``channel`` and not yet settled (the scripts build it too)."""
        return f"{self.prefix}handed:{channel}"


class NamespaceKeys:
    """The namespace-wide keys: data-loss epoch and the fleet registry."""

    __slots__ = ("epoch", "instances", "instances_info", "shards")

    def __init__(self, namespace: str) -> None:
        self.epoch = f"{{{namespace}}}:epoch"
        self.shards = f"{{{namespace}}}:shards"  # function -> highest shard count ever used
        self.instances = f"{{{namespace}}}:instances"  # id -> last beat ms
        self.instances_info = f"{{{namespace}}}:instances:info"  # id -> JSON


def shard_channel(channel: str, prefix: str) -> str:
    """On Redis Cluster, the shard channel on which the scripts of the function whose key
    prefix is ``prefix`` (``{ns:fn}:``) publish ``channel``: its hash tag becomes the
    function's (``{ns}:wake`` -> ``{ns:fn}:wake``), as ``publish`` in scripts.py does."""
    return prefix[:-1] + channel[channel.index("}") + 1 :]


def done_channel(namespace: str) -> str:
    """Job ids of waited-for jobs that ended (published by settle and reclaim)."""
    return f"{{{namespace}}}:done"


def wake_channel(namespace: str) -> str:
    return f"{{{namespace}}}:wake"


def handoff_channel(namespace: str, instance: str, worker: int) -> str:
    """Where enqueue publishes the jobs it leased to one parked worker of an instance."""
    return f"{{{namespace}}}:handoff:{instance}:{worker}"


class DeployKeys:
    """The keys of a namespace's deployments (see the module docstring)."""

    __slots__ = ("active", "channel", "prefix", "seq", "status", "version_prefix", "versions")

    def __init__(self, namespace: str) -> None:
        self.prefix = f"{{{namespace}}}:deploy:"
        self.seq = self.prefix + "seq"
        self.versions = self.prefix + "versions"
        self.active = self.prefix + "active"
        self.status = self.prefix + "status"
        self.channel = f"{{{namespace}}}:deploy"
        self.version_prefix = self.prefix + "v:"  # the publish script prunes by it

    def version(self, version: int) -> str:
        return f"{self.version_prefix}{version}"
