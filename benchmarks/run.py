"""Benchmark one `runtime serve` process against a private, loopback-only redis-server.

    .venv/bin/python benchmarks/run.py [--quick] [--json out.json] [--peers]

It starts its own redis-server (no persistence, data in a temporary folder), writes a
functions folder with a no-op handler and a 5 ms handler, starts ONE `runtime serve` on it,
and prints: (1) no-op throughput, 20,000 jobs enqueued first and then drained; (2) end-to-end
latency at a steady 200 and 1,000 jobs/s with the 5 ms handler; (3) worker CPU seconds per
1,000 jobs; (4) Redis commands per job; then the targets of issue 2, PASS or MISS. With
``--peers`` it also drains the same 20,000 no-op jobs through arq, saq and dramatiq (from
``benchmarks/.venv-peers``, see setup-peers.sh and peers.py) and prints the ratios.
docs/performance.md explains each figure and the method.

Every process it starts runs in a session of its own and is stopped by its pid on exit, on
an exception and on Ctrl-C (measure.Children).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import floor
import measure
import peers
import redis.asyncio as aioredis
import report
from measure import Children, CpuMeter, Drain, Latency

from runtime.client import Client

HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / ".venv-peers" / "bin" / "python"

NOOP, SLEEP = "noop", "sleep5ms"
HANDLER_S = 0.005
CONCURRENCY = 256
THROUGHPUT_JOBS = 20_000
PRODUCE_ONLY = "produce_only"  # a function no worker serves: the producer runs alone
PRODUCER_JOBS = 20_000  # jobs of an enqueue_many run (and of the concurrent calls)
LOOP_JOBS = 5_000  # jobs of a plain enqueue loop run (one call at a time)
CONCURRENT_CALLS = 100
WARMUP_JOBS = 500
TARGET_JOBS_S = 10_000
TARGET_P99_OVERHEAD_MS = 3.0

FUNCTIONS = f'''\
"""Handlers for benchmarks/run.py (written by it into a temporary folder)."""

import asyncio

from runtime import function


@function(concurrency={CONCURRENCY}, max_in_flight=0, max_attempts=1)
async def {NOOP}(event) -> None:
    return None


@function(concurrency={CONCURRENCY}, max_in_flight=0, max_attempts=1)
async def {SLEEP}(event) -> None:
    await asyncio.sleep({HANDLER_S})
'''


@dataclass(frozen=True)
class Plan:
    throughput_runs: int  # the median run is the headline
    rates: tuple[tuple[int, float], ...]  # (jobs/s, seconds) of each latency run
    warmup_s: float  # latency samples of each run's first warmup_s are dropped
    idle_s: float  # window for measuring the serve process's idle background traffic


FULL = Plan(throughput_runs=3, rates=((200, 15.0), (1000, 10.0)), warmup_s=1.0, idle_s=2.0)
QUICK = Plan(throughput_runs=1, rates=((200, 5.0), (1000, 4.0)), warmup_s=0.5, idle_s=1.0)


# -- the runtime ----------------------------------------------------------------------


def serve_argv() -> list[str]:
    script = Path(sys.executable).with_name("runtime")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from runtime.cli.main import main; main()", "serve"]


async def enqueue_batch(client: Client, function: str, jobs: int) -> float:
    """Enqueue no-op jobs with ``Client.enqueue_many`` (the public bulk path)."""
    started = time.perf_counter()
    results = await client.enqueue_many(function, [None] * jobs)
    elapsed = time.perf_counter() - started
    failed = [r.error for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {jobs} jobs not enqueued: {failed[0]}")
    return elapsed


async def producer_rates(client: Client, r: aioredis.Redis, runs: int) -> dict[str, Any]:
    """One producer process, jobs/s into a function no worker serves (the producer's cost
    alone): a plain ``enqueue`` loop, CONCURRENT_CALLS concurrent ``enqueue`` calls, and
    ``enqueue_many``; medians of ``runs``, in this order each run (same Redis, same load)."""
    rates: dict[str, list[float]] = {"enqueue_loop": [], "enqueue_concurrent": [], "many": []}

    async def loop() -> None:
        for _ in range(LOOP_JOBS):
            await client.enqueue(PRODUCE_ONLY)

    async def concurrent() -> None:
        async def one_caller() -> None:
            for _ in range(PRODUCER_JOBS // CONCURRENT_CALLS):
                await client.enqueue(PRODUCE_ONLY)

        await asyncio.gather(*(one_caller() for _ in range(CONCURRENT_CALLS)))

    for _ in range(runs):
        for name, jobs, send in (
            ("enqueue_loop", LOOP_JOBS, loop),
            ("enqueue_concurrent", PRODUCER_JOBS, concurrent),
        ):
            started = time.perf_counter()
            await send()
            rates[name].append(jobs / (time.perf_counter() - started))
            await _drop(r, PRODUCE_ONLY)
        rates["many"].append(
            PRODUCER_JOBS / await enqueue_batch(client, PRODUCE_ONLY, PRODUCER_JOBS)
        )
        await _drop(r, PRODUCE_ONLY)
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    return {
        "runs": {k: [round(x) for x in v] for k, v in rates.items()},
        "enqueue_loop_jobs_s": round(med["enqueue_loop"]),
        "enqueue_concurrent_jobs_s": round(med["enqueue_concurrent"]),
        "enqueue_many_jobs_s": round(med["many"]),
        "many_over_loop": round(med["many"] / med["enqueue_loop"], 1),
        "many_over_concurrent": round(med["many"] / med["enqueue_concurrent"], 1),
    }


async def _drop(r: aioredis.Redis, function: str) -> None:
    """Delete the jobs a producer run left (no worker serves ``function``)."""
    async for key in r.scan_iter(match=f"{{rt:{function}}}:*", count=5000):
        await r.unlink(key)


def print_producer(p: dict[str, Any]) -> None:
    print(
        f"\nproducer (one process, no worker): enqueue loop {p['enqueue_loop_jobs_s']:,} jobs/s, "
        f"{CONCURRENT_CALLS} concurrent enqueue {p['enqueue_concurrent_jobs_s']:,} jobs/s, "
        f"enqueue_many {p['enqueue_many_jobs_s']:,} jobs/s = {p['many_over_loop']}x the loop, "
        f"{p['many_over_concurrent']}x the concurrent calls"
    )


async def unfinished(client: Client, function: str, jobs: int) -> int:
    """Jobs of ``function`` not yet completed, from the broker's own counters."""
    stats = await client.broker.stats(function)
    if stats.get("dead", 0):
        raise RuntimeError(f"{stats['dead']} {function} job(s) dead-lettered: {stats}")
    return jobs - stats.get("completed", 0)


async def runtime_drains(
    client: Client, r: aioredis.Redis, serve: subprocess.Popen[bytes], meter: CpuMeter, runs: int
) -> list[Drain]:
    drains = []
    for _ in range(runs):
        await r.flushall()  # the worker is idle: it has nothing in Redis to lose
        drains.append(
            await measure.measure_drain(
                system="runtime",
                r=r,
                jobs=THROUGHPUT_JOBS,
                worker=serve,
                meter=meter,
                enqueue=lambda: enqueue_batch(client, NOOP, THROUGHPUT_JOBS),
                remaining=lambda: unfinished(client, NOOP, THROUGHPUT_JOBS),
            )
        )
    return drains


async def runtime_latency(
    client: Client, r: aioredis.Redis, meter: CpuMeter, plan: Plan
) -> list[Latency]:
    keys = client.broker.keys(SLEEP)
    lats = []
    for run, (rate, seconds) in enumerate(plan.rates):
        await r.flushall()
        prefix = f"{SLEEP}.r{run}-"  # a job id is "<function>.<suffix>"

        async def send(i: int, prefix: str = prefix) -> str:
            return await client.enqueue(SLEEP, job_id=f"{prefix}{i}", notify=True)

        def done_key(i: int, prefix: str = prefix) -> str:
            return keys.done(f"{prefix}{i}")

        lats.append(
            await measure.open_loop(
                r,
                rate=rate,
                seconds=seconds,
                warmup_s=plan.warmup_s,
                handler_ms=HANDLER_S * 1000,
                meter=meter,
                send=send,
                done_key=done_key,
                done_pattern=keys.done(prefix + "*"),
            )
        )
    return lats


async def floor_latency(
    url: str, r: aioredis.Redis, children: Children, redis_pid: int, tmp: Path, plan: Plan
) -> list[Latency]:
    """The same open-loop runs against benchmarks/floor.py (see its docstring)."""
    worker = children.start([sys.executable, str(HERE / "floor.py"), url], tmp / "floor.log")
    meter = CpuMeter(worker.pid, redis_pid)
    lats = []
    try:
        await measure.wait_for(_has_blocked_client(r), "floor worker", 10.0)
        for rate, seconds in plan.rates:
            await r.flushall()
            prefix = f"{rate}-"

            async def send(i: int, prefix: str = prefix) -> int:
                return int(await r.rpush(floor.QUEUE, f"{prefix}{i}"))

            def done_key(i: int, prefix: str = prefix) -> str:
                return f"{floor.DONE}{prefix}{i}"

            lats.append(
                await measure.open_loop(
                    r,
                    rate=rate,
                    seconds=seconds,
                    warmup_s=plan.warmup_s,
                    handler_ms=HANDLER_S * 1000,
                    meter=meter,
                    send=send,
                    done_key=done_key,
                    done_pattern=f"{floor.DONE}{prefix}*",
                )
            )
    finally:
        children.stop(worker)
    return lats


def _has_blocked_client(r: aioredis.Redis) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int((await r.info("clients"))["blocked_clients"]) > 0

    return check


# -- peers ----------------------------------------------------------------------------


def ensure_peer_venv() -> str | None:
    """Make benchmarks/.venv-peers usable (setup-peers.sh); None when it is, else why not."""
    check = [str(PEER_PYTHON), "-c", "import " + ", ".join(peers.PEERS)]
    if PEER_PYTHON.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    print("installing the peers into benchmarks/.venv-peers (setup-peers.sh) ...", flush=True)
    try:
        done = subprocess.run(
            ["bash", str(HERE / "setup-peers.sh")], capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        return "setup-peers.sh timed out"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return "cannot be installed: " + (lines[-1] if lines else f"exit {done.returncode}")
    return None


async def peer_drain(
    name: str, url: str, r: aioredis.Redis, redis_pid: int, children: Children, tmp: Path
) -> Drain | str:
    """One peer's no-op drain, or the reason it could not be measured."""
    check = await asyncio.create_subprocess_exec(
        str(PEER_PYTHON),
        "-c",
        f"import {name}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if await check.wait() != 0:
        return "not installed in benchmarks/.venv-peers (run benchmarks/setup-peers.sh)"
    argv = [str(PEER_PYTHON), str(HERE / "peers.py")]

    async def enqueue(jobs: int) -> float:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            "enqueue",
            name,
            "--redis",
            url,
            "--jobs",
            str(jobs),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{name} producer failed: {err.decode(errors='replace')[-300:]}")
        return float(json.loads(out.decode().strip().splitlines()[-1])["enqueue_s"])

    peer = peers.PEERS[name]
    command, key = peer.remaining

    async def remaining() -> int:
        return int(await r.execute_command(command, key))

    async def is_drained() -> bool:
        return await remaining() == 0

    await r.flushall()
    log = tmp / f"peer-{name}.log"
    worker = children.start(
        [*argv, "worker", name, "--redis", url, "--concurrency", str(peer.concurrency)], log
    )
    try:
        await enqueue(WARMUP_JOBS)  # warms the worker up, and proves that it runs
        await measure.wait_for(is_drained, f"{name} worker", 60.0)
        return await measure.measure_drain(
            system=name,
            r=r,
            jobs=THROUGHPUT_JOBS,
            worker=worker,
            meter=CpuMeter(worker.pid, redis_pid),
            enqueue=lambda: enqueue(THROUGHPUT_JOBS),
            remaining=remaining,
        )
    except RuntimeError as exc:
        tail = log.read_text(errors="replace")[-600:]
        return f"failed: {exc}\n{textwrap.indent(tail, '    ')}"
    finally:
        children.stop(worker)


async def run_peers(
    url: str, r: aioredis.Redis, redis_pid: int, children: Children, tmp: Path, ours: Drain
) -> dict[str, Any]:
    reason = await asyncio.to_thread(ensure_peer_venv)
    rows: list[tuple[str, Drain | str, str]] = []
    for name, peer in peers.PEERS.items():
        progress(name)
        res = reason or await peer_drain(name, url, r, redis_pid, children, tmp)
        rows.append((name, res, peer.setup))
    report.peers(ours, rows, CONCURRENCY)
    out: dict[str, Any] = {}
    for name, res, setup in rows:
        if isinstance(res, str):
            out[name] = {"error": res}
        else:
            ratio = round(ours.jobs_s / res.jobs_s, 2)
            out[name] = res.summary() | {"setup": setup, "runtime_over_peer": ratio}
    return out


def progress(what: str) -> None:
    print(f"  measuring {what} ...", file=sys.stderr, flush=True)


# -- the run --------------------------------------------------------------------------


def start_redis(children: Children, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free loopback port: no persistence, data in ``tmp``."""
    port = measure.free_port()
    proc = children.start(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
            "--protected-mode",
            "yes",
        ],
        tmp / "redis.log",
    )
    return proc, f"redis://127.0.0.1:{port}/0"


def write_functions(tmp: Path) -> Path:
    """The benchmark's functions folder and an empty config folder under ``tmp``."""
    functions = tmp / "functions"
    functions.mkdir()
    (functions / "bench.py").write_text(FUNCTIONS)
    (tmp / "config").mkdir()  # empty: the defaults, plus any RUNTIME_* the caller set
    return functions


def start_serve(
    children: Children, tmp: Path, url: str, name: str = "serve"
) -> tuple[subprocess.Popen[bytes], int]:
    """One `runtime serve` on ``tmp``'s functions folder (write_functions), logging to
    ``tmp/<name>.log``; returns the process and its HTTP port."""
    port = measure.free_port()
    env = {**os.environ, "RUNTIME_CONFIG_DIR": str(tmp / "config"), "RUNTIME_LOG__LEVEL": "WARNING"}
    proc = children.start(
        [*serve_argv(), "--functions", str(tmp / "functions"), "--port", str(port), "--redis", url],
        tmp / f"{name}.log",
        env=env,
        cwd=tmp,
    )
    return proc, port


async def wait_ready(
    http: aiohttp.ClientSession, serve: subprocess.Popen[bytes], port: int, log: Path
) -> None:
    """Until ``serve`` answers /readyz with 200; exits with its log if it died instead."""

    async def is_ready() -> bool:
        if serve.poll() is not None:
            tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
            raise SystemExit(f"error: runtime serve exited with {serve.returncode}:\n{tail}")
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await measure.wait_for(is_ready, "runtime serve", 30.0)


async def run(args: argparse.Namespace, children: Children, tmp: Path) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    redis_server, url = start_redis(children, tmp)
    r = aioredis.Redis.from_url(url)
    await measure.wait_for(r.ping, "redis-server", 10.0)
    write_functions(tmp)
    serve, http_port = start_serve(children, tmp, url)
    head = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_server": (await r.info("server"))["redis_version"],
        "mode": "quick" if args.quick else "full",
        "concurrency": CONCURRENCY,
        "env_overrides": sorted(k for k in os.environ if k.startswith("RUNTIME_")),
    }
    report.header(head)
    results: dict[str, Any] = {"header": head}
    meter = CpuMeter(serve.pid, redis_server.pid)
    async with aiohttp.ClientSession() as http, Client(url) as client:
        await wait_ready(http, serve, http_port, tmp / "serve.log")

        async def is_warm() -> bool:
            return await unfinished(client, NOOP, WARMUP_JOBS) <= 0

        # Warm both workers up: imports, connections, code paths.
        await asyncio.gather(*(client.enqueue(NOOP) for _ in range(WARMUP_JOBS)))
        await client.result(await client.enqueue(SLEEP, notify=True), 30.0)
        await measure.wait_for(is_warm, "warm-up", 30.0)

        before = await measure.commandstats(r)
        await asyncio.sleep(plan.idle_s)
        idle = measure.without_own(await measure.commandstats(r) - before)
        idle_per_s = idle.total() / plan.idle_s

        progress("producer")
        producer = await producer_rates(client, r, plan.throughput_runs)
        progress("throughput")
        drains = await runtime_drains(client, r, serve, meter, plan.throughput_runs)
        median = sorted(drains, key=lambda d: d.jobs_s)[len(drains) // 2]
        progress("latency")
        sleep_p50_ms = await measure.sleep_overshoot_ms(HANDLER_S)
        lats = await runtime_latency(client, r, meter, plan)
    children.stop(serve)  # the floor worker gets the machine to itself, as serve had
    progress("latency floor")
    floors = await floor_latency(url, r, children, redis_server.pid, tmp, plan)

    report.throughput(drains, median)
    report.latency(
        [*(("runtime", lat) for lat in lats), *(("floor", lat) for lat in floors)],
        HANDLER_S * 1000,
        sleep_p50_ms,
    )
    report.cpu(median, lats)
    report.commands(median, idle_per_s, idle)
    print_producer(producer)
    results |= {
        "throughput_runs": [d.summary() for d in drains],
        "throughput": median.summary(),
        "producer": producer,
        "idle_cmds_per_s": round(idle_per_s, 1),
        "idle_cmds": dict(idle),
        "latency": [lat.summary() for lat in lats],
        "latency_floor": [lat.summary() for lat in floors],
        "sleep_5ms_p50_ms": round(sleep_p50_ms, 3),
    }

    at200 = next(lat for lat in lats if lat.rate == 200).summary()
    results["targets"] = {
        "jobs_s": {
            "value": round(median.jobs_s),
            "target": TARGET_JOBS_S,
            "pass": median.jobs_s >= TARGET_JOBS_S,
        },
        "p99_overhead_ms_at_200": {
            "value": at200["p99_overhead_ms"],
            "target": TARGET_P99_OVERHEAD_MS,
            "pass": at200["missing"] == 0 and at200["p99_overhead_ms"] <= TARGET_P99_OVERHEAD_MS,
        },
    }
    noisy = any(d.usage.is_noisy for d in drains) or any(
        lat.usage is not None and lat.usage.is_noisy for lat in [*lats, *floors]
    )
    report.targets(results["targets"], noisy)

    if args.peers:
        results["peers"] = await run_peers(url, r, redis_server.pid, children, tmp, median)
    await r.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one throughput run, short latency runs")
    p.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    p.add_argument("--peers", action="store_true", help="also measure arq, saq and dramatiq")
    args = p.parse_args(argv)
    return run_with_children(args, run, "runtime-bench-")


def run_with_children(
    args: argparse.Namespace,
    body: Callable[[argparse.Namespace, Children, Path], Awaitable[dict[str, Any]]],
    prefix: str,
) -> int:
    """Run ``body`` in a temporary folder, every process it starts stopped by its pid on
    exit, on an exception, on SIGTERM and on Ctrl-C; write its figures to ``--json``."""
    if shutil.which("redis-server") is None:
        print("error: redis-server is not on PATH (apt-get install redis-server)", file=sys.stderr)
        return 2
    children = Children()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            try:
                results = asyncio.run(body(args, children, Path(tmp)))
            finally:
                children.stop_all()
    except KeyboardInterrupt:
        print("interrupted; every process the benchmark started is stopped", file=sys.stderr)
        return 130
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
