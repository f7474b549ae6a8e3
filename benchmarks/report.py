"""The benchmark's printed report: one table per figure, targets marked PASS or MISS.

Every number printed here comes from a ``summary()`` in measure.py; none is hard-coded.
A phase during which other processes kept the CPU busy is marked ``*``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from measure import NOISY_CORES, POLL_S, Drain, Latency


def table(header: str, rows: list[list[str]]) -> str:
    """Columns separated by ``|`` in ``header``; the first column left-aligned."""
    rows = [header.split("|"), *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def ms(value: float | None) -> str:
    """Milliseconds to two places; "-" when there were too few samples to say."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}"


def cores(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (" *" if value > NOISY_CORES else "")


def header(h: dict[str, Any]) -> None:
    print(
        f"runtime benchmark, {h['date']}: {h['cpus']} CPUs, Python {h['python']}, "
        f"redis-server {h['redis_server']} (loopback, no persistence), {h['mode']} run"
    )
    print(
        f"one `runtime serve`; both handlers at concurrency={h['concurrency']}, "
        "max_in_flight=0; worker settings at their defaults"
    )
    if h["env_overrides"]:
        print("RUNTIME_* settings passed through: " + ", ".join(h["env_overrides"]))
    print(flush=True)


def throughput(drains: list[Drain], median: Drain) -> None:
    print(
        f"1. No-op throughput: {median.jobs:,} jobs enqueued first (pipelined, worker paused), "
        "then drained"
    )
    rows = []
    for i, d in enumerate(drains, 1):
        s = d.summary()
        rows.append(
            [
                str(i),
                f"{d.enqueue_s:.2f}",
                f"{d.drain_s:.2f}",
                f"{d.jobs_s:,.0f}",
                f"{d.e2e_jobs_s:,.0f}",
                f"{d.usage.worker_s:.2f}",
                f"{s['worker_cores']:.2f}",
                f"{s['redis_cores']:.2f}",
                f"{s['bench_cores']:.2f}",
                cores(s["foreign_cores"]),
            ]
        )
    head = "run|enqueue s|drain s|drain jobs/s|end-to-end jobs/s|worker CPU s|worker cores"
    print(table(head + "|redis cores|bench cores|other cores", rows))
    s = median.summary()
    print(
        f"  median run: {s['drain_jobs_s']:,} jobs/s draining; {s['e2e_jobs_s']:,} jobs/s end "
        f"to end (enqueue at {median.jobs / median.enqueue_s:,.0f} jobs/s, then the drain)"
    )
    print(flush=True)


def latency(rows: list[tuple[str, Latency]], handler_ms: float, sleep_p50_ms: float) -> None:
    print(
        f"2. End-to-end latency, {handler_ms:g} ms handler, open-loop producer "
        "(enqueue -> result visible in Redis)"
    )
    out = []
    for label, lat in rows:
        s = lat.summary()
        out.append(
            [
                label,
                f"{lat.rate:,}",
                f"{s['samples']:,}",
                ms(s["p50_ms"]),
                ms(s["p95_ms"]),
                ms(s["p99_ms"]),
                ms(s["max_ms"]),
                ms(s["p50_overhead_ms"]),
                ms(s["p99_overhead_ms"]),
                ms(s["producer_lag_p99_ms"]),
                str(s["missing"]),
                cores(s["foreign_cores"]),
            ]
        )
    head = "system|jobs/s|samples|p50 ms|p95 ms|p99 ms|max ms|p50 overhead|p99 overhead"
    print(table(head + "|producer lag p99|missing|other cores", out))
    print(
        f"  overhead = latency - {handler_ms:g} ms. asyncio.sleep({handler_ms / 1000:g}) itself "
        f"takes {sleep_p50_ms:.2f} ms (p50) here, and that excess is in the overhead too."
    )
    print(
        "  floor = benchmarks/floor.py, a bare BLPOP -> sleep -> RPUSH worker timed the same "
        "way: what the machine and the measurement cost, not the runtime."
    )
    ours = {lat.rate: lat for label, lat in rows if label == "runtime"}
    floors = {lat.rate: lat for label, lat in rows if label == "floor"}
    shares = []
    for rate, floor in floors.items():
        if rate not in ours:
            continue
        a, b = ours[rate].summary(), floor.summary()
        is_noisy = any(x.usage is not None and x.usage.is_noisy for x in (ours[rate], floor))
        shares.append(
            f"{rate:,}/s p50 {a['p50_ms'] - b['p50_ms']:+.2f} ms, "
            f"p99 {a['p99_ms'] - b['p99_ms']:+.2f} ms" + (" *" if is_noisy else "")
        )
    if shares:
        print("  the runtime's own share (runtime - floor): " + "; ".join(shares))
    print(flush=True)


def cpu(median: Drain, lats: list[Latency]) -> None:
    s = median.summary()
    print(
        f"3. Worker CPU per 1,000 jobs: {s['worker_cpu_s_per_1k']:.3f} s draining no-op jobs "
        f"(serve busy {s['worker_cores']:.2f} cores; redis-server {s['redis_cpu_s_per_1k']:.3f} s)"
    )
    for lat in lats:
        t = lat.summary()
        print(
            f"   at a steady {lat.rate:,} jobs/s of the 5 ms handler: "
            f"{t['worker_cpu_s_per_1k']:.3f} s (redis-server {t['redis_cpu_s_per_1k']:.3f} s)"
        )
    print(flush=True)


def commands(median: Drain, idle_per_s: float, idle: Counter[str]) -> None:
    s = median.summary()
    print(
        f"4. Redis commands per job: {s['cmds_per_job']:.2f} (INFO commandstats, commands run "
        f"inside Lua included) = enqueue {s['enqueue_cmds_per_job']:.2f} + worker "
        f"{s['worker_cmds_per_job']:.2f}"
    )
    worker_calls = s["worker_script_calls_per_job"]
    print(
        f"   script calls (EVALSHA): {s['script_calls_per_job']:.3f} per job; the worker's "
        f"{worker_calls:.4f}, one claim or settle per {1 / max(worker_calls, 1e-9):.0f} jobs"
    )
    print("   top: " + ", ".join(f"{k} {v:.3f}" for k, v in s["top_cmds_per_job"].items()))
    print(
        f"   not counted: the benchmark's completion polling ({median.probe_cmds:,} commands, "
        f"{median.polls} polls of broker.stats() every {POLL_S * 1000:g} ms) and its "
        "INFO/CONFIG/FLUSHALL"
    )
    top = ", ".join(f"{k} {v / max(1, idle.total()):.0%}" for k, v in idle.most_common(3))
    print(
        f"   counted: the serve process's idle background, {idle_per_s:.1f} commands/s when "
        f"no job runs ({top})"
    )
    print(flush=True)


def targets(t: dict[str, Any], is_noisy: bool) -> None:
    jobs, p99 = t["jobs_s"], t["p99_overhead_ms_at_200"]
    rows = [
        [
            "no-op throughput, one process",
            f">= {jobs['target']:,} jobs/s",
            f"{jobs['value']:,} jobs/s",
            "PASS" if jobs["pass"] else "MISS",
        ],
        [
            "p99 overhead at 200 jobs/s",
            f"<= {p99['target']:g} ms",
            f"{p99['value']:.2f} ms",
            "PASS" if p99["pass"] else "MISS",
        ],
    ]
    print("Targets (issue 2)")
    print(table("target|wanted|measured|", rows))
    if is_noisy:
        print(
            f"  * other processes kept more than {NOISY_CORES:g} cores busy during a phase marked "
            "*: its figures are pessimistic; run again on a quiet machine"
        )
    print(flush=True)


def peers(ours: Drain, rows: list[tuple[str, Drain | str, str]], concurrency: int) -> None:
    print(
        f"Peers: the same {ours.jobs:,}-job no-op drain on the same redis-server, flushed "
        "between systems"
    )
    out = []
    for name, d, setup in [("runtime", ours, f"asyncio, concurrency={concurrency}"), *rows]:
        if isinstance(d, str):
            out.append([name, *["-"] * 7, d.splitlines()[0]])
            continue
        s = d.summary()
        out.append(
            [
                name,
                f"{d.jobs_s:,.0f}",
                f"{ours.jobs_s / d.jobs_s:.2f}",
                f"{d.jobs / d.enqueue_s:,.0f}",
                f"{s['worker_cpu_s_per_1k']:.3f}",
                f"{s['worker_cores']:.2f}",
                f"{s['cmds_per_job']:.2f}",
                cores(s["foreign_cores"]),
                setup,
            ]
        )
    head = "system|drain jobs/s|runtime / peer|enqueue jobs/s|worker CPU s/1k|worker cores"
    print(table(head + "|cmds/job|other cores|setup", out))
    for name, d, _ in rows:
        if isinstance(d, str) and "\n" in d:
            print(f"  {name}: {d}")
    print(flush=True)
