"""`runtime deploy`: real `runtime serve` processes following deployments in a real Redis.

Handlers append ``start|finish <job id> <version> <pid>`` lines to a witness file, so what
ran, on which version and how often, is checked outside Redis. The version string lives in
a helper module (``_tag.py``), so each swap also proves helpers are reloaded.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from runtime.client import Client
from runtime.deploy.bundle import BundleFile, encode_files, encode_manifest, file_entries, sign
from runtime.deploy.bundle import Manifest as BundleManifest
from runtime.deploy.store import DeployStore
from tests.integration.conftest import setup_client
from tests.integration.serving import ServeProcesses, wait_until

pytestmark = pytest.mark.integration

KEY = "integration-test-signing-key-" + "x" * 16
SWITCH_LIMIT_S = 2.0
ENV = {"RUNTIME_LOG__LEVEL": "INFO", "RUNTIME_DEPLOY__SIGNING_KEY": KEY}
HANDLERS = """\
    import asyncio, os
    from runtime import Context, function
    from _tag import VERSION

    WITNESS = {witness!r}
    GATE = WITNESS + ".open"
    if os.environ.get("DEPLOY_TEST_BREAK") == VERSION:  # a module this host lacks
        raise ImportError("No module named 'only_on_some_hosts'")

    def note(line: str) -> None:
        fd = os.open(WITNESS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    @function(concurrency=8, timeout_s=20)
    async def work(seconds: float, ctx: Context) -> str:
        note(f"start {{ctx.job_id}} {{VERSION}} {{os.getpid()}}")
        if seconds < 0:  # held until the test opens the gate: a condition, not a clock
            while not os.path.exists(GATE):
                await asyncio.sleep(0.02)
        else:
            await asyncio.sleep(seconds)
        note(f"finish {{ctx.job_id}} {{VERSION}} {{os.getpid()}}")
        return VERSION
"""
EXTRA = """
    @function
    async def extra(x: int) -> str:
        return "extra " + VERSION
"""


class Fleet(ServeProcesses):
    """A handler folder, the deploy CLI, and `runtime serve` processes (stopped by pid)."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        super().__init__(tmp, redis_url, ENV)
        self.src = tmp / "src"
        self.src.mkdir()
        self.witness = tmp / "witness.log"
        self.env.pop("DEPLOY_TEST_BREAK", None)

    def write(self, version: str, *, extra: bool = False) -> None:
        source = textwrap.dedent(HANDLERS.format(witness=str(self.witness)))
        if extra:
            source += textwrap.dedent(EXTRA)
        (self.src / "handlers.py").write_text(source)
        (self.src / "_tag.py").write_text(f"VERSION = {version!r}\n")

    def cli(self, *args: str, expect: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "runtime.cli.main", *args, "--redis", self.redis_url],
            cwd=self.tmp, env={**self.env, **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    def deploy(self, version: str, *args: str, extra: bool = False) -> int:
        self.write(version, extra=extra)
        out = self.cli("deploy", "src", "--json", *args).stdout
        body = json.loads(out)
        assert body["active"] is True
        return int(body["version"])

    def deployment(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        try:
            return dict(self.ready(process)[1]["checks"].get("deployment", {}))
        except OSError:
            return {}

    async def wait_loaded(
        self, version: int, *processes: subprocess.Popen[bytes], timeout_s: float = 15
    ) -> float:
        """Seconds until every process runs ``version`` and, when it follows deployments,
        said so in Redis. /readyz says it a moment before the status is written: a deploy
        started in that moment would not count the process among the followers (a CI run
        failed so: it stopped the process in that moment)."""
        started = time.monotonic()
        await wait_until(
            lambda: all(self.deployment(p).get("loaded") == version for p in processes),
            timeout_s,
            self.logs,
        )
        modes = await asyncio.to_thread(lambda: [self.deployment(p).get("mode") for p in processes])
        pids = [p.pid for p, mode in zip(processes, modes, strict=True) if mode == "deploy"]
        want = dict.fromkeys(pids, version)
        if not want:  # --reload: nothing is written to Redis
            return time.monotonic() - started
        client = setup_client(self.redis_url)
        store = DeployStore(client, "rt", keep_versions=3)

        async def reported() -> bool:
            return {s.pid: s.loaded for s in await store.statuses() if s.pid in want} == want

        try:
            await wait_until(reported, timeout_s, self.logs)
        finally:
            await client.aclose()
        return time.monotonic() - started

    def open_gate(self) -> None:
        """Let the jobs held by the gate (``work(-1)``) finish."""
        Path(str(self.witness) + ".open").touch()

    def witness_lines(self) -> list[list[str]]:
        if not self.witness.exists():
            return []
        return [line.split() for line in self.witness.read_text().splitlines() if line]


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    made = Fleet(tmp_path, redis_url)
    yield made
    made.stop_all()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    async with Client(redis_url) as c:
        yield c


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = setup_client(redis_url)  # a cluster client on a cluster (tests/cluster)
    yield client
    await client.aclose()


async def test_deploy_while_long_jobs_run_loses_and_duplicates_nothing(
    fleet: Fleet, client: Client
) -> None:
    assert fleet.deploy("v1", extra=True) == 1
    runtime = fleet.spawn()
    await fleet.wait_loaded(1, runtime)
    long = [await client.enqueue("work", -1.0) for _ in range(6)]  # held until the gate opens
    await wait_until(lambda: len(fleet.witness_lines()) == 6, 10, fleet.logs)

    assert fleet.deploy("v2") == 2  # `extra` is gone in v2
    await fleet.wait_loaded(2, runtime)
    assert not [p for p in fleet.witness_lines() if p[0] == "finish"]
    short = [await client.enqueue("work", 0.05) for _ in range(10)]
    fleet.open_gate()
    results = {job: await client.result(job, 20) for job in [*long, *short]}
    assert {results[j] for j in long} == {"v1"} and {results[j] for j in short} == {"v2"}

    lines = fleet.witness_lines()
    starts = collections.Counter(p[1] for p in lines if p[0] == "start")
    assert set(starts) == {*long, *short} and set(starts.values()) == {1}  # each ran once
    assert {(p[0], p[2]) for p in lines if p[1] in long} == {("start", "v1"), ("finish", "v1")}
    assert {(p[0], p[2]) for p in lines if p[1] in short} == {("start", "v2"), ("finish", "v2")}
    stats = await client.broker.stats("work")
    assert stats["completed"] == 16 and stats["in_flight"] == 0
    assert stats.get("recovered", 0) == 0 and stats.get("stale_acks", 0) == 0

    # A function the new version dropped: its job waits, it is not lost or dead-lettered.
    orphan = await client.enqueue("extra", 1)
    await asyncio.sleep(1.5)
    record = await client.job(orphan)
    assert record is not None and record.state == "queued"
    assert "version 1 is active again" in fleet.cli("rollback").stdout  # v1 has `extra`
    assert await client.result(orphan, 10) == "extra v1"


async def test_two_runtimes_switch_within_two_seconds(
    fleet: Fleet, redis: aioredis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.deploy("v1")
    a, b = fleet.spawn(), fleet.spawn()
    await fleet.wait_loaded(1, a, b)
    measured = {}
    # --no-wait: the command returns at once, so this measures the swap itself (waiting,
    # deploy prints it: "2 of 2 accepted version 2 (answers in 0.21 s)").
    fleet.deploy("v2", "--no-wait")  # pub/sub: notified at once
    measured["deploy"] = await fleet.wait_loaded(2, a, b, timeout_s=SWITCH_LIMIT_S)
    fleet.cli("rollback", "1", "--no-wait")
    measured["rollback"] = await fleet.wait_loaded(1, a, b, timeout_s=SWITCH_LIMIT_S)
    # No notification at all (a lost message): the periodic check (deploy.check_interval_s,
    # 1 s) notices it, then the load takes what it takes; on a busy 2-core CI box that can
    # approach a second, so this path gets the check interval on top of the budget.
    await redis.set("{rt}:deploy:active", "2")
    lost_limit_s = 1.0 + SWITCH_LIMIT_S
    measured["no pub/sub"] = await fleet.wait_loaded(2, a, b, timeout_s=lost_limit_s)
    with capsys.disabled():
        print(f"\nswitch-over, both runtimes: {measured}")
    assert measured["deploy"] < SWITCH_LIMIT_S and measured["rollback"] < SWITCH_LIMIT_S


async def test_tampered_bundles_are_refused_and_the_old_version_keeps_running(
    fleet: Fleet, client: Client, redis: aioredis.Redis
) -> None:
    fleet.deploy("v1")
    fleet.deploy("v2")
    runtime = fleet.spawn()
    await fleet.wait_loaded(2, runtime)
    evil_witness = fleet.tmp / "evil-ran"
    evil = [
        BundleFile("handlers.py", f"open({str(evil_witness)!r}, 'w').write('pwned')\n".encode()),
        BundleFile("_tag.py", b"VERSION = 'evil'\n"),
    ]

    async def activate(version: int) -> None:
        await redis.set("{rt}:deploy:active", str(version))
        await redis.publish("{rt}:deploy", str(version))

    # Bytes changed: version 1's files swapped for other code, signature left alone.
    await redis.hset("{rt}:deploy:v:1", "files", encode_files(evil))
    await activate(1)
    await wait_until(lambda: "1" in fleet.deployment(runtime).get("refused", {}), 5, fleet.logs)
    why = fleet.deployment(runtime)["refused"]["1"]
    assert "content does not match its signed sha256" in why

    # Signature changed: a consistent manifest for the evil files, signed with another key.
    manifest = msgspec.json.decode(
        await redis.hget("{rt}:deploy:v:1", "manifest"), type=BundleManifest
    )
    forged = encode_manifest(msgspec.structs.replace(manifest, files=file_entries(evil)))
    await redis.hset(
        "{rt}:deploy:v:1", mapping={"manifest": forged, "sig": sign("not-the-key" * 4, forged)}
    )
    await activate(1)  # an activation message: the instance tries version 1 again
    await wait_until(
        lambda: (
            "signature does not verify" in fleet.deployment(runtime).get("refused", {}).get("1", "")
        ),
        5,
        fleet.logs,
    )
    status, body = fleet.ready(runtime)
    assert status == 200 and body["checks"]["deployment"]["loaded"] == 2
    job = await client.enqueue("work", 0.0)
    assert await client.result(job, 10) == "v2"
    assert not evil_witness.exists()

    listing = json.loads(fleet.cli("deployments", "--json").stdout)
    v1 = next(v for v in listing["versions"] if v["version"] == 1)
    assert v1["signature"] == "INVALID" and v1["is_active"]
    assert [f"-{runtime.pid}-" in i for i in v1["refused_by"]] == [True]
    refused = fleet.cli("rollback", "1", expect=1)
    assert "refusing to activate version 1: signature does not verify" in refused.stderr
    assert KEY not in refused.stderr + fleet.logs()


async def test_a_bundle_that_fails_to_import_is_rejected_at_deploy_time(
    fleet: Fleet, redis: aioredis.Redis
) -> None:
    (fleet.src / "handlers.py").write_text("import os\n\nimport no_such_module_here\n")
    proc = fleet.cli("deploy", "src", expect=2)
    assert "src/handlers.py:3: cannot import: ModuleNotFoundError" in proc.stderr
    (fleet.src / "handlers.py").write_text("import os\nos._exit(3)\n")
    proc = fleet.cli("deploy", "src", expect=2)
    assert "src: validation process exited with code 3" in proc.stderr
    fleet.write("v1")
    (fleet.src / "_data.py").write_text("BLOB = " + repr("x" * 5000) + "\n")
    proc = fleet.cli("deploy", "src", expect=2, RUNTIME_DEPLOY__MAX_BUNDLE_BYTES="4096")
    assert "over deploy.max_bundle_bytes = 4096" in proc.stderr
    assert await redis.keys("{rt}:deploy*") == []  # nothing published, not even an id


async def test_a_version_failing_on_one_instance_keeps_its_old_version(
    fleet: Fleet, client: Client
) -> None:
    fleet.deploy("v1")
    healthy, lacking = fleet.spawn(), fleet.spawn(DEPLOY_TEST_BREAK="v2")
    await fleet.wait_loaded(1, healthy, lacking)
    # Validated on the deployer, where the module is "installed". --no-wait: published
    # without asking the fleet, so nothing puts version 1 back (test_deploy_truth.py).
    fleet.deploy("v2", "--no-wait")
    await fleet.wait_loaded(2, healthy)
    await wait_until(lambda: "2" in fleet.deployment(lacking).get("refused", {}), 5, fleet.logs)
    status, body = fleet.ready(lacking)
    assert status == 200  # reported, not unready: version 1 still serves there
    deployment = body["checks"]["deployment"]
    assert deployment["loaded"] == 1 and deployment["active"] == 2
    assert "only_on_some_hosts" in deployment["refused"]["2"]
    assert "handlers.py" in deployment["refused"]["2"]
    listing = json.loads(fleet.cli("deployments", "--json").stdout)
    v2 = next(v for v in listing["versions"] if v["version"] == 2)
    assert [f"-{healthy.pid}-" in i for i in v2["running_on"]] == [True]
    assert [f"-{lacking.pid}-" in i for i in v2["refused_by"]] == [True]
    assert "1 running, 1 refused" in fleet.cli("deployments").stdout

    fleet.cli("rollback")  # the previous version: 1
    await fleet.wait_loaded(1, healthy, lacking)
    jobs = [await client.enqueue("work", 0.0) for _ in range(10)]
    assert {await client.result(job, 10) for job in jobs} == {"v1"}


async def test_reload_picks_up_edits_and_refuses_broken_ones(fleet: Fleet, client: Client) -> None:
    fleet.write("v1")
    runtime = fleet.spawn("--functions", "src", "--reload")
    await fleet.wait_loaded(1, runtime)

    async def result() -> str:
        return str(await client.result(await client.enqueue("work", 0.0), 10))

    assert await result() == "v1"
    (fleet.src / "_tag.py").write_text("VERSION = 'v2'\n")  # same size: mtime alone changed
    await fleet.wait_loaded(2, runtime, timeout_s=3)
    assert await result() == "v2"

    handlers = fleet.src / "handlers.py"
    good = handlers.read_text()
    handlers.write_text(good + "\ndef broken(:\n")
    await wait_until(lambda: "refused" in fleet.deployment(runtime), 3, fleet.logs)
    why = next(iter(fleet.deployment(runtime)["refused"].values()))
    assert f"src/handlers.py:{good.count(chr(10)) + 2}: cannot import: SyntaxError" in why
    assert await result() == "v2"
    handlers.write_text(good.replace("timeout_s=20", "timeout_s=21"))
    await wait_until(lambda: "refused" not in fleet.deployment(runtime), 3, fleet.logs)
    assert await result() == "v2"
    assert fleet.ready(runtime)[0] == 200


async def test_publish_is_atomic_idempotent_and_the_newest_wins(redis: aioredis.Redis) -> None:
    from runtime.deploy.bundle import FunctionEntry, build_manifest
    from runtime.errors import DeployError
    from runtime.function import FunctionOptions

    store = DeployStore(redis, "rt", keep_versions=3)
    files = [BundleFile("h.py", b"x = 1\n")]
    fn = FunctionEntry("h", "async", FunctionOptions(), "h.py:1")

    async def publish(version: int) -> Any:
        manifest_json = encode_manifest(
            build_manifest(files, [fn], namespace="rt", version=version)
        )
        args = (version, manifest_json, sign(KEY, manifest_json), encode_files(files))
        return await store.publish(*args), args

    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("{rt}:deploy")
    first, args = await publish(await store.next_version())
    again = await store.publish(*args)  # what redis-py does when a reply is lost
    assert (first.is_stored, first.active_before, first.active_after) == (True, None, 1)
    assert (again.is_stored, again.active_after) == (True, 1)
    assert await redis.zrange("{rt}:deploy:versions", 0, -1) == [b"1"]
    notes = [await pubsub.get_message(timeout=0.2) for _ in range(2)]
    assert [n["data"] for n in notes if n] == [b"1"]  # notified once
    await pubsub.aclose()  # type: ignore[no-untyped-call]

    # Two deploys raced: 3 is published before 2; the newer id stays active.
    racing = [await store.next_version(), await store.next_version()]
    await publish(racing[1])
    late, _ = await publish(racing[0])
    assert late.is_stored and not late.is_active(racing[0]) and await store.active() == 3

    reserved = [await store.next_version(), await store.next_version()]  # 4, 5
    await publish(reserved[1])
    assert await store.versions() == [5, 3, 2]  # keep_versions=3: 1 pruned
    await store.activate(2)  # a rollback...
    await publish(reserved[0])  # ...then a late, older publish: 2 stays active
    assert await store.versions() == [5, 4, 3, 2]  # the oldest is active: never pruned
    assert await store.active() == 2
    with pytest.raises(DeployError, match="version 1 is not stored"):
        await store.activate(1)


async def test_invoke_validates_against_the_active_deployment(fleet: Fleet) -> None:
    """On a machine with no functions folder, `runtime invoke` fetches the active version,
    verifies its signature, and validates the payload against the deployed types."""
    fleet.deploy("v1")
    serve = fleet.spawn()
    await fleet.wait_loaded(1, serve)
    assert not (fleet.tmp / "functions").exists()
    ok = fleet.cli("invoke", "work", "0.0")
    assert ok.stdout.strip() == '"v1"'
    bad = fleet.cli("invoke", "work", '"soon"', expect=2)
    assert "work: expected float, got str" in bad.stderr
    unknown = fleet.cli("invoke", "wrok", "0.0", expect=2)
    assert "did you mean 'work'" in unknown.stderr
