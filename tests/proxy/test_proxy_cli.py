"""Our server only: ``python -m chaos.proxy`` (flags, ``--config``, start-up errors, SIGTERM),
the in-loop starter, and the layering of the package's modules."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

import chaos.proxy
from chaos.proxy.probes import can_connect
from chaos.proxy.testing import port_of, running_server, server_process
from chaos.toxiproxy_http import ToxiproxyHttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_module_serves_the_config_and_stops_on_sigterm(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "proxies.json"
    items = [
        {"name": "redis", "listen": listen, "upstream": "127.0.0.1:6379"},
        {"name": "off", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "enabled": False},
    ]
    config.write_text(json.dumps(items))
    with server_process(config=config, seed=1) as url:
        assert url.startswith("http://127.0.0.1:")
        proxies = ToxiproxyHttp(url).proxies()
        assert (proxies["redis"]["listen"], proxies["redis"]["enabled"]) == (listen, True)
        assert proxies["off"]["enabled"] is False
        assert can_connect("127.0.0.1", port_of(listen))
    assert not can_connect("127.0.0.1", port_of(listen))


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    root = str(Path(chaos.proxy.__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-m", "chaos.proxy", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=root,
        stdin=subprocess.DEVNULL,
    )


def test_a_bad_config_fails_at_start_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.json"
    config.write_text('[{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}]')
    result = run_module("--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "missing required field: name at proxy 1" in result.stderr


def test_a_busy_port_fails_at_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        result = run_module("--port", str(busy.getsockname()[1]))
    assert result.returncode == 2
    assert "bind: address already in use" in result.stderr


async def test_running_server_in_the_callers_loop() -> None:
    async with running_server() as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/version") as response:
            assert response.status == 200
            assert await response.read() == b'{"version": "2.12.0"}\n'
        body = {"name": "p", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:0"}
        async with session.post(f"{url}/proxies", json=body) as response:
            assert response.status == 201


LAYERS = [
    {"errors", "gojson"},
    {"address"},
    {"pipe"},
    {"stage"},
    {"toxics"},
    {"link"},
    {"connection"},
    {"toxic_collection"},
    {"proxy"},
    {"bodies"},
    {"registry"},
    {"api"},
    {"server"},
    {"cli"},
    {"testing", "probes"},
]


def test_modules_only_import_lower_layers() -> None:
    level = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    package = Path(chaos.proxy.__file__).parent
    modules = {path.stem for path in package.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(level), "a new module must be placed in LAYERS"
    for name in modules:
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            imported: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "chaos.proxy":
                    imported = [alias.name for alias in node.names]
                elif node.module.startswith("chaos.proxy."):
                    imported = [node.module.split(".")[2]]
            for target in imported:
                assert level[target] <= level[name], f"{name} imports the higher {target}"


def test_help_names_the_flags_of_the_real_server_too() -> None:
    result = run_module("--help")
    assert result.returncode == 0
    for flag in ("--host", "-host", "--port", "-port", "--config", "-config"):
        assert flag in result.stdout
