"""Redis Cluster behind the same seam: ``ClusterClient`` is redis-py's asyncio
``RedisCluster`` raising the runtime's errors, as ``RedisClient`` does for one Redis.

Chosen by the URL: ``redis+cluster://host:port[,host:port...]`` (``connect``). Every key of
a function shares its hash tag ``{ns:fn}`` and every namespace-wide key ``{ns}``, so each
script call and each transaction touches one slot; redis-py routes a call to the master
of its slot and follows MOVED/ASK (a slot migration, a failover) by refreshing its map of
slots, with no restart. A pipeline (``enqueue_many``) is split by node and sent to each
on one connection. Pub/sub is sharded (``ShardedPubSub``).

**Acknowledged by replicas** (``redis.replica_acks`` = N > 0): a master answers a write
before its replicas hold it, so a master that dies in that window takes the write with it
when a replica is promoted. With N > 0 every script call is followed, on the same
connection, by ``WAIT N replica_ack_timeout_ms`` (WAIT counts the replicas that hold
everything that connection wrote); a call whose write reached fewer replicas in time
fails with ``BrokerUnavailable``, and the caller retries it as after a lost reply (every
script is safe to run twice). So a reply the runtime acts on (an enqueue it acknowledges,
a settle it counts as done) is on N + 1 nodes. It does not make Redis synchronous: a
failover may still promote a replica that missed a write whose WAIT failed, which the
caller saw fail.

The retry rule of ``connection.py`` holds: a command that must not land twice goes to
the master of its key once (``target_nodes`` turns redis-py's cluster retry off).
"""

from __future__ import annotations

from typing import Any, cast

import redis.exceptions
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from runtime.config.cluster_url import parse_cluster_url
from runtime.config.schema import RedisSettings
from runtime.errors import BrokerUnavailable
from runtime.queue.connection import (
    _ONCE,
    _SCRIPT_RELOAD,
    _TRANSLATED,
    _UNAVAILABLE,
    _as_value,
    _is_idempotent,
    _raise_translated,
)
from runtime.queue.resp import with_hiredis_packing
from runtime.queue.sharded_pubsub import ShardedPubSub

# redis-py's cluster client may close a connection another call is opening when it
# refreshes its map of slots (its writer is then None): a broken connection, not a bug of
# the caller's, so BrokerUnavailable like any other (seen in the failover drill).
_TORN = (AttributeError,)
_ANY_NODE = "any node"  # resolved by TranslatedClusterPipeline.execute, once nodes are known
_SCRIPT_CALLS = frozenset({b"EVALSHA", b"EVAL", "EVALSHA", "EVAL"})


def _slot_key(args: tuple[Any, ...]) -> Any:
    """The key whose slot a command goes to: a script's first KEY, else its first arg."""
    if args[0] in _SCRIPT_CALLS:
        return args[3] if int(args[2]) > 0 else None
    return args[1] if len(args) > 1 else None


class ClusterClient(RedisCluster):
    """redis-py's asyncio cluster client, raising the runtime's errors (module docstring)."""

    is_cluster = True
    pubsub_refresh = False  # a subscription met a moved slot or a dead node: refresh first
    replica_acks = 0
    replica_ack_timeout_ms = 1000

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            if self.replica_acks and args[0] in _SCRIPT_CALLS and "target_nodes" not in options:
                return await self._acknowledged(args, options)
            # One try, on the master of its key: a call that must not land twice, and a script
            # call inside once() (not the SCRIPT LOAD a NOSCRIPT answer sends there: that
            # goes to every master, as redis-py routes it).
            is_once = _ONCE.get() and args[0] in _SCRIPT_CALLS
            if (is_once or not _is_idempotent(args[0])) and "target_nodes" not in options:
                key = _slot_key(args)
                if key is not None:  # one try, on the master of its key
                    options["target_nodes"] = await self.node_for(key)
            return await super().execute_command(*args, **options)
        except _SCRIPT_RELOAD:
            raise
        except _TRANSLATED as exc:
            if isinstance(exc, _UNAVAILABLE):
                self.refresh_slots()
            _raise_translated(exc, args)
        except _TORN as exc:
            raise BrokerUnavailable(f"a connection closed under the call: {exc}", "torn") from exc

    async def _acknowledged(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """A script call, then WAIT on the same node's same connection (a pipeline of two)."""
        key = _slot_key(args)
        if key is None:
            return await super().execute_command(*args, **options)
        node = await self.node_for(key)
        pipe = ClusterPipeline(self)  # type: ignore[abstract]
        pipe.execute_command(*args, **options)
        pipe.execute_command(
            "WAIT", self.replica_acks, self.replica_ack_timeout_ms, target_nodes=node
        )
        reply, acks = await pipe.execute(raise_on_error=False)
        if isinstance(reply, BaseException):
            raise reply
        self.check_acks(acks, node)
        if (
            now := self.get_node_from_key(key)
        ) is None or now.name != node.name:  # redirected: WAIT asked another
            raise BrokerUnavailable(
                f"the slot of {key!r} moved during the call: its copy to replicas is unknown",
                "WAIT",
            )
        return reply

    async def node_for(self, key: Any) -> ClusterNode:
        """The master of ``key``'s slot. A slot no master serves (its master failed, the
        promotion is not known yet) refreshes the map of slots before the next call."""
        await self.initialize()
        try:
            node = self.get_node_from_key(key)
        except redis.exceptions.SlotNotCoveredError:
            node = None
        if node is None:
            self.refresh_slots()
            raise redis.exceptions.SlotNotCoveredError(f"no master serves the slot of {key!r}")
        return node

    def refresh_slots(self) -> None:
        """Ask the cluster for its map of slots again before the next call (redis-py does
        so itself after a failure inside a call; this is for failures around one)."""
        self._initialize = True

    def check_acks(self, acks: Any, node: ClusterNode) -> None:
        if isinstance(acks, BaseException):
            raise acks
        if int(acks) < self.replica_acks:
            raise BrokerUnavailable(
                f"a write to {node.name} reached {int(acks)} of redis.replica_acks = "
                f"{self.replica_acks} replicas within redis.replica_ack_timeout_ms = "
                f"{self.replica_ack_timeout_ms}: not acknowledged (it may be lost in a "
                "failover); is a replica of that master down?",
                "WAIT",
            )

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        return TranslatedClusterPipeline(self, transaction or None)  # type: ignore[abstract]

    def pubsub(self, **kwargs: Any) -> ShardedPubSub:  # type: ignore[override]
        return ShardedPubSub(self)


def _queued(pipe: ClusterPipeline) -> list[Any]:
    """The commands queued in a cluster pipeline (redis-py keeps them in its strategy)."""
    return cast("list[Any]", cast("Any", pipe)._execution_strategy._command_queue)


class TranslatedClusterPipeline(ClusterPipeline):
    """A cluster pipeline whose ``execute`` raises the runtime's errors, loads the scripts
    put in ``scripts`` first (as redis-py's single-node pipeline does) and, with
    ``replica_acks``, ends each node's share with a WAIT."""

    def __init__(self, client: ClusterClient, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self.client = client
        self.scripts: set[Any] = set()

    # redis-py refuses these in a cluster pipeline (they name no key); any node answers them
    def time(self, **kwargs: Any) -> ClusterPipeline:  # type: ignore[override]
        return self.execute_command("TIME", target_nodes=_ANY_NODE)

    def echo(self, value: Any, **kwargs: Any) -> ClusterPipeline:  # type: ignore[override]
        return self.execute_command("ECHO", value, target_nodes=_ANY_NODE)

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self.client
        try:
            await client.initialize()  # knows its nodes (once; a no-op after)
            for command in _queued(self):
                if command.kwargs.get("target_nodes") is _ANY_NODE:
                    command.kwargs["target_nodes"] = client.get_random_node()
            for script in self.scripts:
                if not all(await client.script_exists(script.sha)):
                    await client.script_load(script.script)
            waits: list[ClusterNode] = []
            if client.replica_acks and not self._transaction:
                owners = {}
                for command in _queued(self):
                    if command.args[0] in _SCRIPT_CALLS and (key := _slot_key(command.args)):
                        node = await client.node_for(key)
                        owners[node.name] = node
                waits = list(owners.values())
                for node in waits:
                    self.execute_command(
                        "WAIT",
                        client.replica_acks,
                        client.replica_ack_timeout_ms,
                        target_nodes=node,
                    )
            if all(_is_idempotent(c.args[0]) for c in _queued(self)):
                replies = await super().execute(raise_on_error, allow_redirections)
            else:
                replies = await super().execute(raise_on_error, allow_redirections=False)
            if waits:
                for acks, node in zip(replies[-len(waits) :], waits, strict=True):
                    client.check_acks(acks, node)
                replies = replies[: -len(waits)]
        except _TRANSLATED as exc:
            if isinstance(exc, _UNAVAILABLE):
                client.refresh_slots()
            _raise_translated(exc)
        except _TORN as exc:
            raise BrokerUnavailable(f"a connection closed under the call: {exc}", "torn") from exc
        return [_as_value(r) for r in replies]


def connect_cluster(settings: RedisSettings, url: str) -> ClusterClient:
    """A cluster client from a ``redis+cluster://`` URL: every call has a timeout, and a
    call that meets a node down or a failover in progress is tried again on the fresh
    map of slots (up to 6 more times, with backoff) before ``BrokerUnavailable``."""
    parsed = parse_cluster_url(url)
    client = ClusterClient(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.seeds],
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.is_tls,
        max_connections=settings.max_connections,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=6),
        require_full_coverage=False,  # a slot whose master is down fails; the rest serve
    )
    # Its nodes' connections pack with hiredis, as one node's do (resp.py): the class in
    # the kwargs every node made from now on gets, and the seed nodes already made.
    fast = with_hiredis_packing(client.connection_kwargs["connection_class"])
    client.connection_kwargs["connection_class"] = fast
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = fast  # type: ignore[assignment]
    client.replica_acks = settings.replica_acks
    # WAIT must answer before the socket timeout, or a slow copy looks like a dead node
    client.replica_ack_timeout_ms = min(
        settings.replica_ack_timeout_ms, max(1, int(settings.timeout_s * 800))
    )
    return client
