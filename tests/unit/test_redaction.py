"""Credentials never appear in what the runtime prints: ``runtime config check`` and
``config show`` (the real CLI, in-process), configuration errors, and the errors of a
failed Redis connection or command, for every form a Redis URL takes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis.exceptions

from runtime.cli.main import run
from runtime.config.redaction import redact_text, redact_url
from runtime.queue.connection import translated
from tests.conftest import free_port

pytestmark = pytest.mark.usefixtures("restore_root_logger")

SECRET = "hunter2-s3cret"

# Every form of a Redis URL that carries a password; each must come out without it.
URLS = [
    f"db.internal:6379?password={SECRET}",
    f"db.internal:6379/0?db=1&password={SECRET}",
    f"redis://db.internal:6379/0?password={SECRET}",
    f"redis://user:{SECRET}@db.internal:6379/0",
    f"redis://:{SECRET}@db.internal:6379",
    f"rediss://user:{SECRET}@db.internal:6380/1",
    f"rediss://:pa@ss/{SECRET}@db.internal:6380",
    f"unix:///run/redis.sock?db=0&password={SECRET}",
    f"unix://user:{SECRET}@/run/redis.sock",
    f"user:{SECRET}@db.internal:6379",
    f"REDIS://db.internal?PASSWORD={SECRET}",
]


@pytest.mark.parametrize("url", URLS)
def test_redact_url_removes_the_password(url: str) -> None:
    assert SECRET not in redact_url(url)
    assert "**" in redact_url(url)


@pytest.mark.parametrize("url", URLS)
def test_redact_text_removes_a_url_password_inside_a_sentence(url: str) -> None:
    text = f"error: cannot reach '{url}' (from environment RUNTIME_REDIS__URL): refused"
    masked = redact_text(text)
    assert SECRET not in masked
    assert masked.startswith("error: cannot reach '") and masked.endswith("refused")


def test_redact_text_keeps_what_holds_no_secret() -> None:
    text = "Error 111 connecting to 127.0.0.1:6379. Connection refused; see redis://host:1/0"
    assert redact_text(text) == text


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("RUNTIME_"):
            monkeypatch.delenv(name)
    path = tmp_path / "functions"
    path.mkdir()
    (path / "echo.py").write_text(
        "from runtime import function\n\n@function\nasync def echo(x: int) -> int:\n    return x\n"
    )
    return path


@pytest.mark.parametrize("command", ["check", "show"])
@pytest.mark.parametrize("url", URLS)
def test_config_commands_never_print_the_password(
    folder: Path,
    url: str,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RUNTIME_REDIS__URL", url)
    code = run(["config", command])
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert code in (0, 2), (out, err)  # a URL with no scheme is refused: still masked


@pytest.mark.parametrize("url", URLS)
def test_a_failed_connection_never_prints_the_password(
    folder: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = str(free_port())
    url = url.replace("db.internal", "127.0.0.1").replace("6379", dead).replace("6380", dead)
    code = run(["stats", "--redis", url])
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert code in (2, 3), (out, err)  # refused URL (2) or Redis unreachable (3)


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ConnectionError(f"Error connecting to redis://u:{SECRET}@h:1/0."),
        redis.exceptions.ResponseError(f"bad url rediss://:{SECRET}@h:6380"),
        ValueError(f"Redis URL must specify one of ...: unix:///s?password={SECRET}"),
        OSError(f"cannot open h:6379?password={SECRET}"),
    ],
)
def test_broker_errors_never_carry_a_password(exc: Exception) -> None:
    error = translated(exc)
    assert SECRET not in str(error)
    assert SECRET not in error.describe()
