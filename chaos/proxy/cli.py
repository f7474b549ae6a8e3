"""``python -m chaos.proxy``: serve the Toxiproxy-compatible API until SIGINT/SIGTERM.

The flags mirror the real server's (``-host``, ``-port``, ``-config``, ``-seed``; the
double-dash spellings work too), but the host defaults to loopback. Once the API listens,
one line ``chaos.proxy: API listening on http://HOST:PORT`` goes to stdout, which is how
``chaos.proxy.testing.server_process`` learns the port when ``--port 0`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from chaos.proxy.errors import ConfigError, ListenError
from chaos.proxy.server import ProxyServer, ServerSettings

READY_PREFIX = "chaos.proxy: API listening on "


def parse_args(argv: Sequence[str] | None) -> tuple[ServerSettings, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.proxy",
        description="A Toxiproxy-compatible TCP fault-injection proxy (API v2).",
    )
    parser.add_argument("--host", "-host", default="127.0.0.1", help="API host (loopback)")
    parser.add_argument("--port", "-port", type=int, default=8474, help="API port (8474)")
    parser.add_argument(
        "--config", "-config", type=Path, help="JSON array of proxies to create at start"
    )
    parser.add_argument("--seed", "-seed", type=int, help="seed for toxicity and jitter")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every proxy event")
    args = parser.parse_args(argv)
    return ServerSettings(args.host, args.port, args.config, args.seed), args.verbose


async def serve(settings: ServerSettings) -> None:
    server = ProxyServer(settings)
    url = await server.start()
    print(f"{READY_PREFIX}{url}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    settings, is_verbose = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if is_verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings))
    except (ConfigError, ListenError) as exc:
        print(f"chaos.proxy: {exc}", file=sys.stderr)
        return 2
    return 0
