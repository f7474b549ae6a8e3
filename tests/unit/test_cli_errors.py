"""Honest CLI errors (issue 14): each kind of error is named for what it is, in one line,
with its documented status. OS errors name their path or address (never "Redis
unreachable"); every Redis error class names Redis; a closed stdout ends the command
quietly with 141; ``--version``; Redis URLs whose port does not parse fail ``config check``.
The subprocess tests run the real command (``python -m runtime``) with this tree first on
the path, as a user's shell would.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from runtime.cli.exits import ExitStatus, error_line, status_of
from runtime.cli.main import run
from runtime.errors import BrokerCommandError, BrokerUnavailable, RedisMemoryFull

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("restore_root_logger")


def _cli(*argv: str, cwd: Path, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "runtime", *argv],
        cwd=cwd,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (BrokerUnavailable("Error 111 connecting to 127.0.0.1:1. Connection refused."),
         "error: Redis unreachable: Error 111 connecting to 127.0.0.1:1. Connection refused; "
         "check --redis / RUNTIME_REDIS__URL"),
        (RedisMemoryFull("command not allowed when used memory > 'maxmemory'.\nscript: x"),
         "error: Redis is out of memory (maxmemory reached) and refused a write: command not "
         "allowed when used memory > 'maxmemory'. script: x; free memory"),
        (BrokerCommandError("NOPERM User rt has no permissions to run the 'incrby' command"),
         "error: Redis refused the command for lack of permission: NOPERM User rt has no "
         "permissions to run the 'incrby' command; grant it"),
        (BrokerCommandError("READONLY You can't write against a read only replica."),
         "error: Redis refused the command: READONLY You can't write against a read only "
         "replica"),
    ],
    ids=["unavailable", "memory", "noperm", "readonly"],
)  # fmt: skip
def test_each_redis_error_is_one_line_naming_redis_with_status_3(
    error: Exception, words: str
) -> None:
    line = error_line(error)
    assert line.startswith(words)
    assert "\n" not in line
    assert status_of(error) == ExitStatus.REDIS == 3


def test_os_errors_name_their_path_or_address_never_redis() -> None:
    denied = PermissionError(errno.EACCES, "Permission denied", "/srv/runtime/.runtime")
    assert error_line(denied) == (
        "error: /srv/runtime/.runtime: Permission denied; check the permissions of that path "
        "(or run where you may write)"
    )
    bind = OSError(
        errno.EADDRINUSE,
        "error while attempting to bind on address ('127.0.0.1', 8080): address already in use",
    )
    line = error_line(bind)
    assert "('127.0.0.1', 8080)" in line and "address already in use" in line
    assert line.endswith("; stop what listens there, or choose another --port / http.port")
    for error in (denied, bind):
        assert "Redis" not in error_line(error)
        assert status_of(error) == ExitStatus.FAILED


def test_an_os_error_from_a_command_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "functions").mkdir()
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "functions"))

    def load(*_: object) -> None:
        raise denied

    monkeypatch.setattr("runtime.cli.functions.load_registry", load)
    assert run(["functions"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {tmp_path / 'functions'}: Permission denied; ")


def test_a_closed_stdout_ends_the_command_quietly_with_141(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes: `| head -0`
    try:
        child = _cli("config", "show", cwd=tmp_path, stdout=write)
    finally:
        os.close(write)
    _, err = child.communicate(timeout=60)
    assert (child.returncode, err) == (141, "")


def test_a_reader_that_stops_early_ends_it_quietly_too(tmp_path: Path) -> None:
    child = _cli("--help", cwd=tmp_path)  # argparse's own output: not ours to silence
    child.communicate(timeout=60)
    assert child.returncode == 0
    shown = subprocess.run(
        f"{sys.executable} -m runtime config show | head -1",
        shell=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.stdout == "{\n"
    assert shown.stderr == ""  # neither "Redis unreachable" nor "Exception ignored"


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    child = _cli("--version", cwd=tmp_path)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out, err) == (0, f"runtime {version('redis-function-runtime')}\n", "")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{version("redis-function-runtime")}"' in pyproject  # one source


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis://localhost:notaport/0", "the port is not a number from 1 to 65535"),
        ("redis://localhost:70000/0", "the port is not a number from 1 to 65535"),
        ("redis://localhost:6379/zero", "the database (the path after the host) is not a number"),
        ("redis://localhost:6379/0?PASSWORD=hunter2", "unknown query parameter 'PASSWORD'"),
        ("redis://", "no host"),
        ("localhost:6379", "must be empty (embedded redis-server) or a URL like redis://"),
    ],
)
def test_config_check_parses_the_redis_url(
    url: str,
    why: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNTIME_REDIS__URL", url)
    assert run(["config", "check"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: invalid configuration:\n  redis.url = ")
    assert "(from environment RUNTIME_REDIS__URL)" in err and why in err


def test_a_url_error_never_echoes_what_may_be_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNTIME_REDIS__URL", "redis://:Sup3rSecretPw")  # '@host' forgotten
    assert run(["config", "check"]) == 2
    # The rule does not echo it (the value itself is masked by runtime.config.redaction).
    rule = capsys.readouterr().err.split("RUNTIME_REDIS__URL):", 1)[1]
    assert "Sup3rSecretPw" not in rule and rule.startswith(" the port is not a number")


def test_config_check_accepts_the_usual_redis_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("redis://localhost:6379/0", "rediss://u:p@db:6380/2", "unix:///tmp/r.sock",
                "redis://[::1]/0", "redis://db?password=x"):  # fmt: skip
        monkeypatch.setenv("RUNTIME_REDIS__URL", url)
        assert run(["config", "check"]) == 0, capsys.readouterr().err
    capsys.readouterr()
