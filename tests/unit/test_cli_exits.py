"""Pins of the ``runtime`` command's exit statuses and error lines, for the failures that
need no Redis: bad configuration, folders and input (2), no Redis to talk to (3), an
operator's interrupt (130), and the commands' own refusals."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from runtime.cli.exits import ExitStatus, status_of
from runtime.cli.main import run
from runtime.errors import (
    BrokerCommandError,
    BrokerUnavailable,
    BundleRefused,
    ConfigError,
    EmbeddedRedisError,
    JobFailed,
    PayloadTooLarge,
    RedisMemoryFull,
    RegistryError,
    RuntimeFailure,
    UnknownFunction,
    UnknownJob,
)
from tests.conftest import free_port

pytestmark = pytest.mark.usefixtures("restore_root_logger")

HANDLERS = """\
from runtime import function


@function
async def echo(x: int) -> int:
    return x
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("RUNTIME_"):
            monkeypatch.delenv(name)
    path = tmp_path / "functions"
    path.mkdir()
    (path / "pin_exits.py").write_text(HANDLERS)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_usage_errors_are_status_2(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    code, out, err = _run(capsys, "functions", "--functions", "missing")
    assert (code, out) == (2, "")
    assert err == (
        "error: cannot load functions:\n"
        "  missing: functions folder not found; create it or set functions_dir\n"
    )
    code, out, err = _run(capsys, "invoke", "nope", "--redis", dead)
    assert (code, out, err) == (2, "", "error: unknown function 'nope' (known: echo)\n")
    code, out, err = _run(capsys, "invoke", "echo", "[1", "--redis", dead)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and "echo" in err
    (folder.parent / "config").mkdir()
    (folder.parent / "config" / "settings.toml").write_text("[http]\nport = -1\n")
    code, out, err = _run(capsys, "--config", "config", "config", "check")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and "http.port" in err


def test_no_redis_is_status_3(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "invoke", "echo", "1")
    assert (code, out) == (3, "")
    assert err == (
        "error: no embedded Redis is running in .runtime/redis: start `runtime serve` first, "
        "or give --redis URL / RUNTIME_REDIS__URL\n"
    )
    code, out, err = _run(capsys, "invoke", "echo", "1", "--redis", "redis://127.0.0.1:1/0")
    assert (code, out) == (3, "")
    assert err.startswith("error: Redis unreachable: ")


def test_interrupt_is_status_130(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(level: str, fmt: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("runtime.observe.logs.setup_logging", interrupted)
    assert _run(capsys, "functions") == (130, "", "interrupted\n")


def test_commands_refusals(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: a purge needs --yes
    code, out, err = _run(capsys, "purge-dlq", "echo", "--redis", dead)
    assert (code, out) == (2, "")
    assert err == (
        "error: refusing to purge without confirmation: no terminal is attached; pass --yes "
        "to purge non-interactively (or --dry-run to look first)\n"
    )
    code, out, err = _run(capsys, "enqueue-dir", ".", "--function", "nope", "--redis", dead)
    assert (code, out, err) == (2, "", "error: unknown function 'nope' (known: echo)\n")
    code, out, err = _run(capsys, "enqueue-dir", "nowhere", "--function", "echo", "--redis", dead)
    assert (code, out, err) == (2, "", "error: nowhere: not a folder\n")
    code, out, err = _run(capsys, "bench", "--function", "echo", "--payload", "{", "--redis", dead)
    assert (code, out) == (2, "")
    assert err.startswith("error: --payload is not JSON: ")
    code, out, err = _run(capsys, "bench", "--function", "echo", "--redis", dead)
    assert (code, out, err) == (2, "", "error: give --payload JSON for echo\n")


def test_each_error_has_the_status_of_its_first_match() -> None:
    cases = [
        (ConfigError(["x"]), 2), (RegistryError(["x"]), 2), (PayloadTooLarge("x"), 2),
        (UnknownFunction("x"), 2), (UnknownJob("x"), 2), (ValueError("x"), 2),
        (EmbeddedRedisError("x"), 3), (BrokerUnavailable("x"), 3), (RedisMemoryFull("x"), 3),
        (BrokerCommandError("NOPERM x"), 3), (BrokerCommandError("READONLY x"), 3),
        (BundleRefused("x"), 1), (JobFailed("j", "timeout", "e"), 1), (RuntimeFailure("x"), 1),
        (PermissionError(13, "Permission denied", "/srv/x"), 1), (OSError("x"), 1),
    ]  # fmt: skip
    assert [(type(e), status_of(e)) for e, _ in cases] == [(type(e), s) for e, s in cases]
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 130, 141]
    with pytest.raises(TypeError):
        status_of(KeyError("not one of the errors a command ends with"))
