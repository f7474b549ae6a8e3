"""The fleet figure of issue 15: 1, 2 and 3 `runtime serve` processes on ONE redis-server.

    PYTHONPATH=. .venv/bin/python benchmarks/fleet.py [--fleet 1,2,3] [--runs 3] [--json out.json]
        [--shards N]

For each fleet size N it starts N serve processes (run.py's no-op function, concurrency 256,
default settings) on one private redis-server, warms them up, then, ``--runs`` times: pauses
them all, enqueues ``--jobs`` × N no-op jobs with ``Client.enqueue_many``, resumes them and
times the drain (measure.measure_drain). It prints, per N, the median run's drain jobs/s, the
worker CPU (all N serve processes together) and the redis-server CPU per 1,000 jobs, the
cores each kept busy, the cores other processes used, and what one Redis core carries:
1 / (redis-server CPU per job), the drain rate at which Redis alone would fill one core.

``--shards N`` runs the no-op function with ``shards=N`` (a sharded function: its queue spread
over N hash tags, docs/architecture.md "Sharded functions"), set through the config override
``RUNTIME_FUNCTIONS__NOOP__SHARDS``; the producer spreads its jobs over the same N shards.

The machine's core count is printed with the figures: when N serve processes plus Redis
need more cores than there are, they share them and the drain rate says more about the
machine than about Redis; the Redis CPU per job is the figure that carries over.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import measure
import redis.asyncio as aioredis
import report
import run as bench
from measure import Children, CpuMeter, Drain

from runtime.client import Client


async def fleet_drains(
    client: Client,
    r: aioredis.Redis,
    serves: list[subprocess.Popen[bytes]],
    meter: CpuMeter,
    jobs: int,
    runs: int,
) -> list[tuple[Drain, list[float]]]:
    """``runs`` drains of ``jobs`` no-op jobs by all of ``serves``; with each drain, the CPU
    seconds each serve process used in it (to show that every one of them took part)."""
    out = []
    for _ in range(runs):
        await r.flushall()  # the workers are idle: they have nothing in Redis to lose
        cpu0 = [measure.session_cpu_s(s.pid) for s in serves]
        drain = await measure.measure_drain(
            system=f"runtime x{len(serves)}",
            r=r,
            jobs=jobs,
            worker=serves,
            meter=meter,
            enqueue=lambda: bench.enqueue_batch(client, bench.NOOP, jobs),
            remaining=lambda: bench.unfinished(client, bench.NOOP, jobs),
        )
        shares = [measure.session_cpu_s(s.pid) - c for s, c in zip(serves, cpu0, strict=True)]
        out.append((drain, shares))
    return out


async def measure_fleet(
    n: int, url: str, redis_pid: int, children: Children, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Start ``n`` serve processes, measure their drains, stop them."""
    serves = [bench.start_serve(children, tmp, url, name=f"serve-n{n}-{i}") for i in range(n)]
    try:
        async with aiohttp.ClientSession() as http, Client(url) as client:
            client.broker.shards[bench.NOOP] = args.shards
            for i, (proc, port) in enumerate(serves):
                await bench.wait_ready(http, proc, port, tmp / f"serve-n{n}-{i}.log")
            r = aioredis.Redis.from_url(url)
            try:
                await r.flushall()
                warmup = bench.WARMUP_JOBS * n
                await bench.enqueue_batch(client, bench.NOOP, warmup)

                async def is_warm() -> bool:
                    return await bench.unfinished(client, bench.NOOP, warmup) <= 0

                await measure.wait_for(is_warm, f"warm-up of {n} serve processes", 60.0)
                procs = [p for p, _ in serves]
                meter = CpuMeter([p.pid for p in procs], redis_pid)
                drains = await fleet_drains(client, r, procs, meter, args.jobs * n, args.runs)
            finally:
                await r.aclose()
    finally:
        for proc, _ in serves:
            children.stop(proc)
    median, shares = sorted(drains, key=lambda d: d[0].jobs_s)[len(drains) // 2]
    s = median.summary()
    redis_per_job_s = median.usage.redis_s / median.jobs
    return {
        "serve_processes": n,
        "jobs": median.jobs,
        "runs_drain_jobs_s": [round(d.jobs_s) for d, _ in drains],
        "drain_jobs_s": s["drain_jobs_s"],
        "worker_cpu_s_per_1k": s["worker_cpu_s_per_1k"],
        "worker_cores": s["worker_cores"],
        "redis_cpu_s_per_1k": s["redis_cpu_s_per_1k"],
        "redis_cores": s["redis_cores"],
        "bench_cores": s["bench_cores"],
        "foreign_cores": s["foreign_cores"],
        "cmds_per_job": s["cmds_per_job"],
        "per_process_cpu_s": [round(x, 3) for x in shares],
        # /proc counts CPU in 10 ms ticks: more digits than hundreds would be made up.
        "redis_core_jobs_s": round(1 / redis_per_job_s, -2) if redis_per_job_s > 0 else None,
        "is_noisy": median.usage.is_noisy,
    }


def print_fleet(head: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    cpus = head["cpus"]
    print(
        f"fleet benchmark, {head['date']}: {cpus} CPUs, Python {head['python']}, "
        f"redis-server {head['redis_server']} (loopback, no persistence)"
    )
    print(
        f"N `runtime serve` processes on ONE redis-server; no-op handler at concurrency="
        f"{bench.CONCURRENCY}, max_in_flight=0, shards={head['shards']}; "
        f"{head['jobs_per_process']:,} jobs per serve "
        f"process enqueued with Client.enqueue_many (workers paused), then drained; "
        f"median of {head['runs']} run(s)"
    )
    print(
        f"this machine has {cpus} cores, shared by the N serve processes, redis-server and "
        "this benchmark: once they want more than that (see the cores columns) the drain "
        "rate measures the machine; the redis-server CPU per job is what carries over"
    )
    print()
    rows_s = [
        [
            str(row["serve_processes"]),
            f"{row['jobs']:,}",
            f"{row['drain_jobs_s']:,}",
            f"{row['worker_cpu_s_per_1k']:.4f}",
            f"{row['worker_cores']:.2f}",
            f"{row['redis_cpu_s_per_1k']:.4f}",
            f"{row['redis_cores']:.2f}",
            report.cores(row["foreign_cores"]),
            f"{row['redis_core_jobs_s']:,.0f}" if row["redis_core_jobs_s"] else "-",
            " ".join(f"{x:.2f}" for x in row["per_process_cpu_s"]),
        ]
        for row in rows
    ]
    print(
        report.table(
            "serve processes|jobs|drain jobs/s|worker CPU s/1k|worker cores|"
            "redis CPU s/1k|redis cores|other cores|one Redis core ≈ jobs/s|CPU s per process",
            rows_s,
        )
    )
    print()
    for row in rows:
        print(
            f"N={row['serve_processes']}: one Redis core carries ≈ "
            f"{row['redis_core_jobs_s']:,.0f} jobs/s (1 / redis-server CPU per job); "
            f"drain runs {row['runs_drain_jobs_s']}"
        )
    if any(row["is_noisy"] for row in rows):
        print(f"* other processes used more than {measure.NOISY_CORES} cores meanwhile")


async def run_fleet(args: argparse.Namespace, children: Children, tmp: Path) -> dict[str, Any]:
    os.environ["RUNTIME_FUNCTIONS__NOOP__SHARDS"] = str(args.shards)  # serve inherits it
    redis_server, url = bench.start_redis(children, tmp)
    r = aioredis.Redis.from_url(url)
    try:
        await measure.wait_for(r.ping, "redis-server", 10.0)
        version = (await r.info("server"))["redis_version"]
    finally:
        await r.aclose()
    bench.write_functions(tmp)
    head = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_server": version,
        "runs": args.runs,
        "jobs_per_process": args.jobs,
        "shards": args.shards,
        "env_overrides": sorted(k for k in os.environ if k.startswith("RUNTIME_")),
    }
    rows = []
    for n in args.fleet:
        bench.progress(f"{n} serve process(es)")
        rows.append(await measure_fleet(n, url, redis_server.pid, children, tmp, args))
    print_fleet(head, rows)
    return {"header": head, "fleet": rows}


def fleet_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fleet {text!r}: give counts like 1,2,3") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--fleet {text!r}: every count must be 1 or more")
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fleet", type=fleet_sizes, default=[1, 2, 3], help="serve process counts")
    p.add_argument("--runs", type=int, default=3, help="drains per fleet size (median shown)")
    p.add_argument("--jobs", type=int, default=bench.THROUGHPUT_JOBS, help="jobs per process")
    p.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    p.add_argument("--shards", type=int, default=1, help="shards of the no-op function")
    args = p.parse_args(argv)
    return bench.run_with_children(args, run_fleet, "runtime-fleet-")


if __name__ == "__main__":
    sys.exit(main())
