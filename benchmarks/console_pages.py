"""How long one console page takes at scale: 1,000 registered functions and a DLQ of 1M ids.

    PYTHONPATH=. .venv/bin/python benchmarks/console_pages.py [--functions 1000]
        [--dead 1000000] [--repeat 20]

Starts a private ``redis-server`` and a ``runtime serve`` child with ``--functions``
registered functions, LPUSHes ``--dead`` ids into the first function's DLQ (a pipeline of
ids only: a page shows an id with no record as such, and the list's length is what a page
must not depend on), signs in like a browser, and times each page ``--repeat`` times
(median and worst, the whole HTTP round trip on loopback). A one-off measurement, not a
test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests

TOKEN = "bench-token-" + "b" * 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, redis.RedisError, requests.RequestException):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} not up within {timeout_s}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--dead", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    (tmp / "functions").mkdir()
    source = ["from runtime import function\n"]
    for i in range(args.functions):
        source.append(f"@function\nasync def f{i:04d}(x: int) -> int:\n    return x\n")
    (tmp / "functions" / "many.py").write_text("\n".join(source))
    redis_port, http_port = free_port(), free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    serve = None
    try:
        client = redis.Redis(port=redis_port)
        wait_for(client.ping, 10, "redis-server")
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        dlq = "{rt:f0000}:dlq"
        for start in range(0, args.dead, 10_000):
            n = min(10_000, args.dead - start)
            pipe.lpush(dlq, *(f"f0000.{start + i:024x}" for i in range(n)))
            if len(pipe) >= 10:
                pipe.execute()
        pipe.execute()
        print(f"LPUSH of {client.llen(dlq)} ids: {time.perf_counter() - started:.1f} s")
        env = {**os.environ, "RUNTIME_HTTP__TOKEN": TOKEN, "RUNTIME_CONFIG_DIR": str(tmp)}
        started = time.perf_counter()
        serve = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli.main", "serve", "--port", str(http_port),
             "--redis", f"redis://127.0.0.1:{redis_port}", "--functions", "functions"],
            cwd=tmp, env=env, stdout=(tmp / "serve.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{http_port}"
        wait_for(lambda: requests.get(base + "/readyz", timeout=2).ok, 120, "runtime serve")
        print(
            f"serve with {args.functions} functions ready in {time.perf_counter() - started:.1f} s"
        )
        session = requests.Session()
        form = session.get(base + "/ui/signin", timeout=5).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        session.post(base + "/ui/signin", data={"csrf": csrf[1], "token": TOKEN, "next": "/ui"},
                     allow_redirects=False, timeout=5).raise_for_status()  # fmt: skip
        last_dlq_page = (args.dead - 1) // 50
        pages = {
            "fleet overview, page 1 of functions": "/ui",
            "fleet overview, last page": f"/ui?page={(args.functions - 1) // 50}",
            "fleet table (the 2 s refresh)": "/ui/fleet",
            "function page (limits, failures)": "/ui/functions/f0000",
            "DLQ, newest page": "/ui/dlq/f0000",
            "DLQ, a middle page": f"/ui/dlq/f0000?page={last_dlq_page // 2}",
            "DLQ, oldest page": f"/ui/dlq/f0000?page={last_dlq_page}",
        }
        print(f"{'page':42} {'median ms':>10} {'worst ms':>9} {'bytes':>8}")
        for name, path in pages.items():
            times, size = [], 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                response = session.get(base + path, timeout=30, allow_redirects=False)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (
                    path,
                    response.status_code,
                    response.text[:300],
                )
                size = len(response.content)
            print(f"{name:42} {statistics.median(times):10.1f} {max(times):9.1f} {size:8}")
        for name, page in (
            ("newest", 0),
            ("middle", last_dlq_page // 2),
            ("oldest", last_dlq_page),
        ):
            html = session.get(f"{base}/ui/dlq/f0000?page={page}", timeout=30).text
            token = re.search(r'name="csrf" value="([^"]+)"', html)
            ids = re.findall(r'name="id" value="([^"]+)"', html)
            assert token is not None and ids
            form = [("csrf", token[1]), ("scope", "selection"), ("offset", str(page * 50))]
            t0 = time.perf_counter()
            response = session.post(f"{base}/ui/dlq/f0000?action=purge", timeout=30,
                                    data=form + [("id", i) for i in ids])  # fmt: skip
            elapsed_ms = (time.perf_counter() - t0) * 1000
            found = re.search(r"(\d+) looked at", response.text)
            print(f"purge {len(ids)} selected on the {name} DLQ page: {elapsed_ms:.1f} ms, "
                  f"{found[1] if found else '?'} taken out")  # fmt: skip
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=30)
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
