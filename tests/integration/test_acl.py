"""Least-privilege Redis users: the ``ACL SETUSER`` lines of docs/security.md, set on a real
redis-server, each role doing its job (serve, HTTP invoke, Client enqueue and result,
deploy/rollback, stats/peek/deployments, purge-dlq) and refused outside it with one line
naming the missing permission."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runtime.client import Client
from runtime.errors import BrokerPermissionError, JobFailed
from tests.integration.serving import ServeProcesses, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DOC = Path(__file__).parents[2] / "docs" / "security.md"
PASSWORD = "acl-test-password-" + "p" * 16
KEY = "acl-test-signing-key-" + "k" * 24
TOKEN = "acl-test-token-" + "t" * 24
HANDLERS = """\
from runtime import Reject, function


@function
async def echo(x: int) -> int:
    return x


@function(max_attempts=1)
async def doomed(x: int) -> int:
    raise Reject(f"no {x}")
"""


def roles() -> dict[str, list[str]]:
    """Role user -> its ACL rules, as docs/security.md gives them."""
    lines = re.findall(r"^ACL SETUSER (rt-[a-z-]+) (.+)$", DOC.read_text(), re.M)
    assert len(lines) == 5, lines
    return {user: rules.replace("{password}", PASSWORD).split() for user, rules in lines}


class Roles(ServeProcesses):
    def __init__(self, tmp: Path, redis_url: str) -> None:
        env = {"RUNTIME_DEPLOY__SIGNING_KEY": KEY, "RUNTIME_HTTP__TOKEN": TOKEN}
        super().__init__(tmp, redis_url, env)
        self.admin = redis.Redis.from_url(redis_url)
        for user, rules in roles().items():
            self.admin.execute_command("ACL", "SETUSER", user, *rules)
        (tmp / "src").mkdir()
        (tmp / "src" / "handlers.py").write_text(HANDLERS)

    def url(self, user: str) -> str:
        return self.redis_url.replace("redis://", f"redis://{user}:{PASSWORD}@")

    def cli(self, user: str, *args: str) -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "runtime.cli.main", *args, "--redis", self.url(user)],
            cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return proc.returncode, proc.stdout, proc.stderr

    def ok(self, user: str, *args: str) -> str:
        code, out, err = self.cli(user, *args)
        assert code == 0, (user, args, out, err)
        return out

    def refused(self, user: str, *args: str) -> str:
        """The one stderr line of a command Redis refused for lack of a permission."""
        code, out, err = self.cli(user, *args)
        assert code != 0, (user, args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "NOPERM" in lines[0], (user, args, err)
        assert PASSWORD not in out + err
        return lines[0]

    def close(self) -> None:
        self.stop_all()
        for user in roles():
            self.admin.execute_command("ACL", "DELUSER", user)
        self.admin.close()


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Roles]:
    made = Roles(tmp_path, redis_url)
    yield made
    made.close()


def http(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_each_role_does_its_job_and_nothing_else(fleet: Roles) -> None:
    # deployers publish; a runtime under rt-serve (deploy mode) becomes ready and runs it:
    # its handoff channels are subscribed under &{rt}:* (a pattern subscription was not).
    assert json.loads(fleet.ok("rt-deployer", "deploy", "src", "--json"))["version"] == 1
    serve = fleet.spawn(redis_url=fleet.url("rt-serve"))
    fleet.wait_ready(serve)
    assert http(fleet.ports[serve.pid], "/v1/functions/echo/invoke", b"5") == (200, b"5")

    # producers enqueue and wait, and may not claim (no LPOP inside claim.lua)
    async with Client(fleet.url("rt-producer")) as producer:
        assert await producer.result(await producer.enqueue("echo", 7), 20) == 7
        with pytest.raises(JobFailed):
            await producer.result(await producer.enqueue("doomed", 1), 20)
        with pytest.raises(BrokerPermissionError, match="script 'claim'"):
            await producer.broker.claim("echo", 1, lease_ms=1000, max_in_flight=16)

    # read-only operators read everything, and may neither purge nor deploy
    assert "runtime instances" in fleet.ok("rt-operator", "stats", "--functions", "src")
    fleet.ok("rt-operator", "peek", "echo", "--functions", "src")
    assert "no 1" in fleet.ok("rt-operator", "peek", "doomed", "--dlq", "--functions", "src")
    assert "running" in fleet.ok("rt-operator", "deployments")
    fleet.refused("rt-operator", "purge-dlq", "doomed", "--yes", "--functions", "src")
    fleet.refused("rt-operator", "deploy", "src", "--force")

    # producers may not deploy or purge; deployers may not purge
    fleet.refused("rt-producer", "deploy", "src", "--force")
    fleet.refused("rt-producer", "purge-dlq", "doomed", "--yes", "--functions", "src")
    fleet.refused("rt-deployer", "purge-dlq", "doomed", "--yes", "--functions", "src")

    # DLQ admins purge; deployers publish again and roll back while the runtime runs
    assert "purged 1" in fleet.ok(
        "rt-dlq-admin", "purge-dlq", "doomed", "--yes", "--functions", "src"
    )
    fleet.ok("rt-deployer", "deploy", "src", "--force")
    fleet.ok("rt-deployer", "rollback")
    fleet.ok("rt-deployer", "deployments")
    answer = http(fleet.ports[serve.pid], "/v1/functions/echo/invoke", b"8")
    assert answer == (200, b"8"), answer[1].decode()

    assert fleet.ready(serve)[0] == 200
    serve.terminate()  # the clean exit's writes too (unpark, deregister, deploy status)
    assert serve.wait(timeout=30) == 0
    log = (fleet.tmp / "serve-0.log").read_text()
    assert "NOPERM" not in log and "Traceback" not in log, log[-3000:]
    assert "using Redis at redis://rt-serve:**@" in log
    denied = fleet.admin.acl_log()
    assert not [e for e in denied if e["username"] == "rt-serve"], denied


def test_deploy_without_incrby_says_so_in_one_line(fleet: Roles) -> None:
    fleet.admin.execute_command("ACL", "SETUSER", "rt-deployer", "-incrby")
    line = fleet.refused("rt-deployer", "deploy", "src")
    assert "'+incrby'" in line and "'incrby'" in line, line


async def test_a_refused_channel_is_named_with_its_rule(fleet: Roles) -> None:
    fleet.ok("rt-deployer", "deploy", "src")
    fleet.admin.execute_command("ACL", "SETUSER", "rt-serve", "resetchannels")
    serve = fleet.spawn(redis_url=fleet.url("rt-serve"))
    # never ready: the listener is refused, and the log names the channel and the rule
    await wait_until(lambda: "'&{rt}:*'" in fleet.logs(), 20, fleet.logs)
    assert "NOPERM" in fleet.logs()
    assert fleet.ready(serve)[0] == 503
