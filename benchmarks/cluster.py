"""The cluster figure of issue 16: one no-op function drained by 2 `runtime serve` processes
on a 3-master Redis Cluster, with 1 shard and with 3, and on one redis-server for comparison.

    PYTHONPATH=. .venv/bin/python benchmarks/cluster.py [--runs 3] [--jobs 20000]
        [--serves 2] [--shards 1,3] [--namespace auto] [--json out.json]

For each set-up (one redis-server, then the cluster; each with every ``--shards`` count) it
starts ``--serves`` serve processes (run.py's no-op function, concurrency 256) with
``RUNTIME_FUNCTIONS__NOOP__SHARDS`` set, warms them up, then ``--runs`` times: flushes
every node, pauses the serve processes, enqueues ``--jobs`` × serves no-op jobs with
``Client.enqueue_many``, resumes them and times the drain. Per node it reads the
redis-server's CPU (/proc/<pid>/stat: user + system of all its threads) and its commands
(``INFO commandstats``, the benchmark's polling taken out) before and after each drain, so
the table shows how the load spreads over the nodes. The median run (by drain rate) is shown.

Where a shard lives is fixed by the CRC16 of its hash tag ``{ns:fn#k}``: ``--namespace auto``
takes the first of bench, bench1, ... that puts the shards on distinct masters (the table
says which node holds which shard). The cluster is 3 redis-server processes in cluster
mode on free loopback ports, joined with ``redis-cli --cluster create``
(chaos/suite/redis_cluster.py) and stopped by pid at the end.

What one Redis core carries: 1 / (the busiest node's CPU per job) is the drain rate at which
that node alone fills one core; with the load spread evenly over K nodes (K shards or more,
their slots on K masters) a rate R needs about R × (all nodes' CPU per job) cores of Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import measure
import redis.asyncio as aioredis
import report
import run as bench
from measure import Children

from chaos.suite.redis_cluster import RedisCluster
from runtime.client import Client
from runtime.queue.keys import FunctionKeys
from runtime.queue.shards import shard_name

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def pid_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def loadavg() -> str:
    """The machine's 1, 5 and 15 minute load averages (/proc/loadavg)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Node:
    """One redis-server the benchmark reads: its pid (CPU) and a plain client (commands)."""

    name: str
    pid: int
    r: aioredis.Redis


@dataclass
class NodeDrain:
    enqueue_cpu_s: float
    cpu_s: float  # during the drain
    cmds: int  # during the drain


@dataclass
class Run:
    jobs: int
    drain_s: float
    serve_cpu_s: float
    foreign_s: float
    nodes: list[NodeDrain]

    @property
    def jobs_s(self) -> float:
        return self.jobs / self.drain_s


async def node_cmds(nodes: list[Node]) -> list[Counter[str]]:
    return [measure.without_own(await measure.commandstats(n.r)) for n in nodes]


async def drain_once(
    client: Client, nodes: list[Node], serves: list[subprocess.Popen[bytes]], jobs: int
) -> Run:
    """Flush, pause the serve processes, enqueue ``jobs``, resume them, time the drain."""
    for n in nodes:
        await n.r.flushall()  # the workers are idle: they have nothing in Redis to lose

    async def remaining() -> int:
        return await bench.unfinished(client, bench.NOOP, jobs)

    before = await node_cmds(nodes)
    await remaining()  # one poll, measured per node, taken out of the drain's commands
    probe = [a - b for a, b in zip(await node_cmds(nodes), before, strict=True)]
    for proc in serves:
        Children.signal(proc, signal.SIGSTOP)
    try:
        queued0 = [pid_cpu_s(n.pid) for n in nodes]
        await bench.enqueue_batch(client, bench.NOOP, jobs)
        cmds0 = await node_cmds(nodes)
        t0, busy0 = time.perf_counter(), measure.machine_busy_s()
        serve0 = sum(measure.session_cpu_s(p.pid) for p in serves)
        node0 = [pid_cpu_s(n.pid) for n in nodes]
        bench0 = time.process_time()
    finally:
        for proc in serves:
            Children.signal(proc, signal.SIGCONT)
    polls = 0
    while (left := await remaining()) > 0:
        polls += 1
        if time.perf_counter() - t0 > measure.DRAIN_TIMEOUT_S:
            raise RuntimeError(f"{left} of {jobs} jobs unfinished after the timeout")
        await asyncio.sleep(0.02)
    polls += 1
    wall = time.perf_counter() - t0
    node_s = [pid_cpu_s(n.pid) - c for n, c in zip(nodes, node0, strict=True)]
    serve_s = sum(measure.session_cpu_s(p.pid) for p in serves) - serve0
    own = time.process_time() - bench0
    foreign = max(0.0, measure.machine_busy_s() - busy0 - serve_s - sum(node_s) - own)
    cmds1 = await node_cmds(nodes)
    drained = [
        NodeDrain(n0 - q0, cpu, max(0, (c1 - c0).total() - p.total() * polls))
        for q0, n0, cpu, c0, c1, p in zip(queued0, node0, node_s, cmds0, cmds1, probe, strict=True)
    ]
    return Run(jobs, wall, serve_s, foreign, drained)


async def measure_setup(
    label: str,
    url: str,
    nodes: list[Node],
    placement: dict[int, str],
    shards: int,
    children: Children,
    tmp: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``args.serves`` serve processes on ``url`` with ``shards``: warm-up, then the runs."""
    os.environ["RUNTIME_FUNCTIONS__NOOP__SHARDS"] = str(shards)  # the serves inherit it
    tag = f"{label}-s{shards}"
    serves = [bench.start_serve(children, tmp, url, name=f"{tag}-{i}") for i in range(args.serves)]
    jobs = args.jobs * args.serves
    runs: list[Run] = []
    try:
        async with aiohttp.ClientSession() as http, Client(url, namespace=args.namespace) as client:
            client.broker.shards[bench.NOOP] = shards
            for i, (proc, port) in enumerate(serves):
                await bench.wait_ready(http, proc, port, tmp / f"{tag}-{i}.log")
            warmup = bench.WARMUP_JOBS * args.serves
            await bench.enqueue_batch(client, bench.NOOP, warmup)

            async def is_warm() -> bool:
                return await bench.unfinished(client, bench.NOOP, warmup) <= 0

            await measure.wait_for(is_warm, f"warm-up on {tag}", 60.0)
            procs = [p for p, _ in serves]
            for _ in range(args.runs):
                runs.append(await drain_once(client, nodes, procs, jobs))
    finally:
        for proc, _ in serves:
            children.stop(proc)
    return summarize(label, shards, placement, nodes, runs)


def summarize(
    label: str, shards: int, placement: dict[int, str], nodes: list[Node], runs: list[Run]
) -> dict[str, Any]:
    median = sorted(runs, key=lambda r: r.jobs_s)[len(runs) // 2]
    per_k = 1000 / median.jobs
    node_rows = [
        {
            "node": n.name,
            "shards": [s for s, owner in placement.items() if owner == n.name],
            "enqueue_cpu_s_per_1k": round(d.enqueue_cpu_s * per_k, 4),
            "cpu_s_per_1k": round(d.cpu_s * per_k, 4),
            "cores": round(d.cpu_s / median.drain_s, 2),
            "cmds_per_job": round(d.cmds / median.jobs, 2),
        }
        for n, d in zip(nodes, median.nodes, strict=True)
    ]
    # what a steady rate costs Redis: enqueue plus drain (claim, settle), per job
    costs = [(d.enqueue_cpu_s + d.cpu_s) / median.jobs for d in median.nodes]
    total, busiest = sum(costs), max(costs)
    return {
        "setup": label,
        "shards": shards,
        "jobs": median.jobs,
        "runs_drain_jobs_s": [round(r.jobs_s) for r in runs],
        "drain_jobs_s": round(median.jobs_s),
        "serve_cpu_s_per_1k": round(median.serve_cpu_s * per_k, 4),
        "serve_cores": round(median.serve_cpu_s / median.drain_s, 2),
        "foreign_cores": round(median.foreign_s / median.drain_s, 2),
        "redis_cpu_s_per_1k": round(total * 1000, 4),  # enqueue + drain, all nodes
        "nodes": node_rows,
        # /proc counts CPU in 10 ms ticks: more digits than hundreds would be made up.
        "busiest_core_jobs_s": round(1 / busiest, -2) if busiest > 0 else None,
        "redis_core_jobs_s": round(1 / total, -2) if total > 0 else None,
    }


def print_rows(head: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(
        f"cluster benchmark, {head['date']}: {head['cpus']} CPUs, Python {head['python']}, "
        f"redis-server {head['redis_server']} (loopback, no persistence); "
        f"load average before: {head['loadavg']}"
    )
    print(
        f"{head['serves']} `runtime serve` processes, no-op handler at concurrency="
        f"{bench.CONCURRENCY}, namespace {head['namespace']!r}; {head['jobs_per_serve']:,} "
        "jobs per serve process enqueued with Client.enqueue_many (workers paused), then "
        f"drained; median of {head['runs']} run(s). The serve processes, every "
        "redis-server and this benchmark share the machine's cores: the drain rate "
        "measures the machine, the CPU per job carries over."
    )
    print()
    cells = []
    for row in rows:
        for i, node in enumerate(row["nodes"]):
            first = i == 0
            cells.append(
                [
                    f"{row['setup']} shards={row['shards']}" if first else "",
                    f"{row['drain_jobs_s']:,}" if first else "",
                    f"{row['serve_cpu_s_per_1k']:.4f}" if first else "",
                    report.cores(row["foreign_cores"]) if first else "",
                    node["node"],
                    ",".join(map(str, node["shards"])) or "-",
                    f"{node['enqueue_cpu_s_per_1k']:.4f}",
                    f"{node['cpu_s_per_1k']:.4f}",
                    f"{node['cores']:.2f}",
                    f"{node['cmds_per_job']:.2f}",
                ]
            )
    print(
        report.table(
            "set-up|drain jobs/s|serve CPU s/1k|other cores|node|shards there|"
            "enqueue redis CPU s/1k|drain redis CPU s/1k|node cores|drain cmds/job",
            cells,
        )
    )
    print()
    for row in rows:
        print(
            f"{row['setup']} shards={row['shards']}: {row['redis_cpu_s_per_1k']:.4f} redis CPU "
            f"s/1k jobs, enqueue + drain, all nodes (one Redis core ≈ "
            f"{row['redis_core_jobs_s'] or 0:,.0f} jobs/s); the busiest node fills one core at ≈ "
            f"{row['busiest_core_jobs_s'] or 0:,.0f} jobs/s; drain runs {row['runs_drain_jobs_s']}"
        )


async def cluster_nodes(cluster: RedisCluster) -> list[Node]:
    pids = [n.process.pid for n in cluster.nodes if n.process is not None]
    return [
        Node(f"n{i}", pid, aioredis.Redis(host="127.0.0.1", port=n.port))
        for i, (n, pid) in enumerate(zip(cluster.nodes, pids, strict=True))
    ]


def placement_of(cluster: RedisCluster | None, shards: int, ns: str) -> dict[int, str]:
    """Shard -> the node serving its slot (hash tag ``{ns:fn#k}``)."""
    if cluster is None:
        return dict.fromkeys(range(shards), "n0")
    names = {n.address: f"n{i}" for i, n in enumerate(cluster.nodes)}
    return {
        s: names[cluster.owner(FunctionKeys(ns, shard_name(bench.NOOP, s)).stats).address]
        for s in range(shards)
    }


def pick_namespace(cluster: RedisCluster, wanted: str, shards: int) -> str:
    """``wanted``, or for ``auto`` the first of bench, bench1, ... whose function's first
    ``shards`` shards land on as many masters as they can (each hash tag's slot is fixed by
    CRC16: with the default namespace ``rt`` the no-op function's 3 shards share 2 masters)."""
    if wanted != "auto":
        return wanted
    spread = min(shards, len(cluster.nodes))
    for k in range(500):
        ns = f"bench{k or ''}"
        if len(set(placement_of(cluster, shards, ns).values())) == spread:
            return ns
    raise RuntimeError(f"no namespace spreads {shards} shards over {spread} masters")


async def run_cluster(args: argparse.Namespace, children: Children, tmp: Path) -> dict[str, Any]:
    bench.write_functions(tmp)
    head: dict[str, Any] = {"loadavg": loadavg()}
    cluster = RedisCluster()  # first: its namespace choice holds for both set-ups
    await asyncio.to_thread(cluster.start)
    nodes: list[Node] = []
    rows = []
    try:
        nodes = await cluster_nodes(cluster)
        args.namespace = pick_namespace(cluster, args.namespace, max(args.shards))
        os.environ["RUNTIME_NAMESPACE"] = args.namespace  # the serves inherit it
        redis_server, single_url = bench.start_redis(children, tmp)
        single = Node("n0", redis_server.pid, aioredis.Redis.from_url(single_url))
        try:
            await measure.wait_for(single.r.ping, "redis-server", 10.0)
            head.update(
                date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                cpus=os.cpu_count(),
                python=platform.python_version(),
                redis_server=(await single.r.info("server"))["redis_version"],
                runs=args.runs,
                jobs_per_serve=args.jobs,
                serves=args.serves,
                namespace=args.namespace,
            )
            for shards in args.shards:
                bench.progress(f"one redis-server, shards={shards}")
                placed = placement_of(None, shards, args.namespace)
                rows.append(
                    await measure_setup("one redis", single_url, [single], placed, shards,
                                        children, tmp, args)
                )  # fmt: skip
        finally:
            await single.r.aclose()
            children.stop(redis_server)
        for shards in args.shards:
            bench.progress(f"3-master cluster, shards={shards}")
            placed = placement_of(cluster, shards, args.namespace)
            rows.append(
                await measure_setup("cluster", cluster.url, nodes, placed, shards,
                                    children, tmp, args)
            )  # fmt: skip
    finally:
        for n in nodes:
            await n.r.aclose()
        cluster.stop()  # every node by its pid
    head["loadavg_after"] = loadavg()
    print_rows(head, rows)
    print(f"load average after: {head['loadavg_after']}")
    return {"header": head, "setups": rows}


def counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give counts like 1,3") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be 1 or more")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="drains per set-up (median shown)")
    p.add_argument("--jobs", type=int, default=bench.THROUGHPUT_JOBS, help="jobs per serve")
    p.add_argument("--serves", type=int, default=2, help="serve processes")
    p.add_argument("--shards", type=counts, default=[1, 3], help="shard counts, e.g. 1,3")
    p.add_argument(
        "--namespace",
        default="auto",
        help="the runtime's namespace; auto: one whose shards land on distinct masters",
    )
    p.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    args = p.parse_args(argv)
    return bench.run_with_children(args, run_cluster, "runtime-cluster-")


if __name__ == "__main__":
    sys.exit(main())
