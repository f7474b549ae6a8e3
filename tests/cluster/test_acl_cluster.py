"""The least-privilege Redis users of docs/security.md on a 3-master Redis Cluster: the same
``ACL SETUSER`` lines, set on every node, and each role doing its job through a
``redis+cluster://user:password@...`` URL (serve, HTTP invoke, Client enqueue and result,
deploy/rollback, stats/peek/deployments, purge-dlq), with no refusal in any node's
``ACL LOG``. On a cluster the runtime sends other commands than on one Redis (sharded
pub/sub, the cluster's slot map) on other channels (each function's ``{rt:fn}:...``)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from runtime.client import Client
from runtime.errors import BrokerPermissionError, JobFailed
from tests.integration.serving import ServeProcesses, wait_until
from tests.integration.test_acl import DOC, KEY, PASSWORD, TOKEN, Roles, http, roles
from tests.redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def cluster_rules() -> dict[str, list[str]]:
    """Role user -> the rules docs/security.md adds to its line on a cluster."""
    rows = re.findall(r"^\| (rt-[a-z-]+) \| `([^`]+)` \|$", DOC.read_text(), re.M)
    assert sorted(user for user, _ in rows) == sorted(roles()), rows
    return {user: rules.split() for user, rules in rows}


class EveryNode:
    """The admin connection of test_acl.py's ``Roles``, on every master of the cluster."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.nodes = [redis.Redis(host="127.0.0.1", port=n.port) for n in cluster.live()]

    def execute_command(self, *args: Any) -> None:
        for node in self.nodes:
            node.execute_command(*args)  # type: ignore[no-untyped-call]

    def acl_log(self) -> list[dict[str, Any]]:
        return [entry for node in self.nodes for entry in node.acl_log()]

    def acl_log_reset(self) -> None:
        for node in self.nodes:
            node.acl_log_reset()

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class ClusterRoles(Roles):
    def __init__(self, tmp: Path, cluster: RedisCluster) -> None:
        env = {"RUNTIME_DEPLOY__SIGNING_KEY": KEY, "RUNTIME_HTTP__TOKEN": TOKEN}
        ServeProcesses.__init__(self, tmp, cluster.url, env)
        self.every = EveryNode(cluster)
        self.admin = self.every  # type: ignore[assignment]  # for Roles.close
        self.every.acl_log_reset()
        added = cluster_rules()
        for user, rules in roles().items():
            self.every.execute_command("ACL", "SETUSER", user, *rules)
            self.every.execute_command("ACL", "SETUSER", user, *added[user])
        (tmp / "src").mkdir()
        (tmp / "src" / "handlers.py").write_text(HANDLERS)

    def url(self, user: str) -> str:
        secret = urllib.parse.quote(PASSWORD, safe="")
        return self.redis_url.replace("+cluster://", f"+cluster://{user}:{secret}@")


HANDLERS = """\
from runtime import Reject, function


@function
async def echo(x: int) -> int:
    return x


@function(max_attempts=1)
async def doomed(x: int) -> int:
    raise Reject(f"no {x}")


@function(shards=3)
async def spread(x: int) -> int:
    return x
"""


@pytest.fixture
def fleet(tmp_path: Path, redis_cluster: RedisCluster) -> Iterator[ClusterRoles]:
    redis_cluster.flush()
    made = ClusterRoles(tmp_path, redis_cluster)
    yield made
    made.close()


def refusals(fleet: ClusterRoles, user: str) -> list[dict[str, Any]]:
    return [e for e in fleet.every.acl_log() if e["username"] == user]


async def test_each_role_does_its_job_on_a_cluster(fleet: ClusterRoles) -> None:
    assert json.loads(fleet.ok("rt-deployer", "deploy", "src", "--json"))["version"] == 1
    serve = fleet.spawn(redis_url=fleet.url("rt-serve"))
    fleet.wait_ready(serve, timeout_s=30)
    port = fleet.ports[serve.pid]
    assert http(port, "/v1/functions/echo/invoke", b"5") == (200, b"5")
    for x in range(6):  # every shard of a sharded function, each in its own slot
        assert http(port, "/v1/functions/spread/invoke", str(x).encode()) == (200, str(x).encode())

    async with Client(fleet.url("rt-producer")) as producer:
        assert await producer.result(await producer.enqueue("echo", 7), 30) == 7
        producer.broker.shards["spread"] = 3
        made = [await producer.enqueue("spread", x) for x in range(6)]
        assert [await producer.result(job, 30) for job in made] == list(range(6))
        with pytest.raises(JobFailed):
            await producer.result(await producer.enqueue("doomed", 1), 30)
        with pytest.raises(BrokerPermissionError, match="script 'claim'"):
            await producer.broker.claim("echo", 1, lease_ms=1000, max_in_flight=16)

    assert "runtime instances" in fleet.ok("rt-operator", "stats", "--functions", "src")
    fleet.ok("rt-operator", "peek", "spread", "--functions", "src")
    assert "no 1" in fleet.ok("rt-operator", "peek", "doomed", "--dlq", "--functions", "src")
    assert "running" in fleet.ok("rt-operator", "deployments")
    fleet.refused("rt-operator", "purge-dlq", "doomed", "--yes", "--functions", "src")
    fleet.refused("rt-producer", "deploy", "src", "--force")

    assert "purged 1" in fleet.ok(
        "rt-dlq-admin", "purge-dlq", "doomed", "--yes", "--functions", "src"
    )
    fleet.ok("rt-deployer", "deploy", "src", "--force")
    fleet.ok("rt-deployer", "rollback")
    fleet.ok("rt-deployer", "deployments")
    answer = http(port, "/v1/functions/echo/invoke", b"8")
    assert answer == (200, b"8"), answer[1].decode()

    assert fleet.ready(serve)[0] == 200
    serve.terminate()
    assert serve.wait(timeout=30) == 0
    log = (fleet.tmp / "serve-0.log").read_text()
    assert "NOPERM" not in log and "Traceback" not in log, log[-3000:]
    for user in ("rt-serve", "rt-deployer", "rt-dlq-admin"):
        assert refusals(fleet, user) == [], user
    # only what the test had them try outside their job (claim, deploy; purge, deploy)
    tried = {e["object"] for e in refusals(fleet, "rt-producer")}
    assert tried <= {"zrangebyscore", "incrby"}, tried
    operator = {e["object"] for e in refusals(fleet, "rt-operator")}
    assert operator <= {"evalsha", "set", "incrby"}, operator


async def test_a_refused_function_channel_is_named_with_its_rule(fleet: ClusterRoles) -> None:
    fleet.ok("rt-deployer", "deploy", "src")
    rules = [r for r in roles()["rt-serve"] + cluster_rules()["rt-serve"] if r != "&{rt:*}:*"]
    fleet.every.execute_command("ACL", "SETUSER", "rt-serve", "reset", *rules)
    fleet.spawn(redis_url=fleet.url("rt-serve"))
    # the listener is refused each function's channels, and the log names their rule (not
    # the namespace's, &{rt}:*, which the user has)
    await wait_until(lambda: "'&{rt:*}:*'" in fleet.logs(), 30, fleet.logs)
    assert "NOPERM" in fleet.logs()


async def test_a_refused_listener_backs_off(fleet: ClusterRoles) -> None:
    """A refusal that lasts is retried with a growing pause (up to 1 s), each retry logged:
    not every 0.1 s forever (the sharded subscription is refused after SSUBSCRIBE returns)."""
    fleet.ok("rt-deployer", "deploy", "src")
    rules = [r for r in roles()["rt-serve"] + cluster_rules()["rt-serve"] if r != "&{rt:*}:*"]
    fleet.every.execute_command("ACL", "SETUSER", "rt-serve", "reset", *rules)
    fleet.spawn(redis_url=fleet.url("rt-serve"))

    def lost() -> list[float]:
        stamps = re.findall(r"^\S+ \d\d:(\d\d):(\d\d),(\d{3}) WARNING runtime.dispatcher: wake "
                            r"channel lost", fleet.logs(), re.M)  # fmt: skip
        return [int(m) * 60 + int(s) + int(ms) / 1000 for m, s, ms in stamps]

    await wait_until(lambda: len(lost()) >= 6, 30, fleet.logs)
    gaps = [b - a for a, b in zip(lost(), lost()[1:], strict=False)]
    assert max(gaps[:5]) >= 0.5, gaps  # 0.1, 0.2, 0.4, 0.8, 1.0 s
