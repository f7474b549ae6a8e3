"""Pins of the ``runtime`` command's argument parser: every ``--help`` text, what argparse
prints for bad arguments, and the value each flag of each subcommand defaults to.

The expected texts in ``cli_golden/`` were written by the parser as it was before the CLI
package was reshaped; they change only when the command line is meant to change.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from runtime.cli.main import run
from runtime.cli.parser import build_parser

GOLDEN = Path(__file__).parent / "cli_golden"
# Python 3.13's argparse lays help out differently ("-n, --count N" for "-n N, --count N",
# narrower columns): its pins, where they differ, are in cli_golden/py313/.
GOLDEN_313 = GOLDEN / "py313"


def golden_help(name: str) -> str:
    pinned = GOLDEN / f"help-{name}.txt"
    if sys.version_info >= (3, 13) and (GOLDEN_313 / pinned.name).exists():
        pinned = GOLDEN_313 / pinned.name
    return pinned.read_text()


COMMANDS = (
    "serve", "check", "functions", "invoke", "job", "config", "stats", "peek", "purge-dlq",
    "requeue-dlq", "deploy", "deployments", "rollback", "enqueue-dir", "bench", "jobs", "cancel",
)  # fmt: skip
BAD_ARGUMENTS = (
    "", "nope", "--config", "serve --port x", "serve --bogus", "check a b",
    "invoke", "invoke f --priority urgent", "invoke f --timeout x", "invoke f --delay",
    "config", "config bogus", "stats --interval 0.01", "stats --interval x",
    "stats --iterations 0", "peek", "peek f -n 0", "peek f -n 1001", "peek f --width 5",
    "purge-dlq", "purge-dlq f --all", "purge-dlq f --older-than 2x", "purge-dlq --reason",
    "requeue-dlq", "requeue-dlq f --rate fast", "requeue-dlq f --rate 0/s",
    "requeue-dlq f --limit 0", "deploy a b", "deployments -n x", "rollback x",
    "enqueue-dir d", "enqueue-dir --function f", "enqueue-dir d --function f --rate x",
    "bench --rate 0/s", "bench --count x", "bench --payload-size x", "bench --timeout x",
    # Every numeric flag is checked (issue 14): a negative, zero or out-of-range value is
    # refused by name.
    "invoke f --timeout -5", "invoke f --timeout 0", "invoke f --timeout nan",
    "invoke f --delay -1", "job", "job f.1 --wait -1",
    "bench --count 0", "bench --payload-size 0", "bench --timeout -1", "deployments -n 0",
    "jobs", "jobs --function f --since yesterday", "jobs --function f --state running",
    "jobs --function f --limit 501", "cancel",
)  # fmt: skip
MINIMAL_ARGUMENTS = (
    "serve", "check", "functions", "invoke f", "job f.1", "job f.1 --wait 2.5 --json",
    "invoke f --timeout 1.5 --delay 0", "serve --port 0", "peek f --dlq --traceback",
    "config show", "stats", "peek f",
    "purge-dlq f", "purge-dlq --all", "requeue-dlq f", "deploy", "deployments", "rollback",
    "enqueue-dir d --function f", "bench",
    "--config c stats --function a --function b --watch --interval 0.5 --iterations 3",
    "purge-dlq f --reason timeout --reason rejected --older-than 1h30m --dry-run --json -y",
    "requeue-dlq f --rate 300/m --limit 9", "enqueue-dir d --function f --rate 50/s",
    "jobs --function f", "cancel f.1",
    "jobs --function f --state dead --reason timeout --limit 10 --cursor 1.0 --json",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps help to the terminal; the pins are for 100 columns."""
    monkeypatch.setenv("COLUMNS", "100")


def _exit(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[object, str, str]:
    with pytest.raises(SystemExit) as stopped:
        run(argv)
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_pinned(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    code, out, err = _exit(argv, capsys)
    assert (code, err) == (0, "")
    assert out == golden_help(command or "runtime")


def error_transcript(capsys: pytest.CaptureFixture[str]) -> str:
    lines = []
    for command in BAD_ARGUMENTS:
        code, out, err = _exit(shlex.split(command), capsys)
        lines.append(f"$ runtime {command}\nexit {code}\n{out}{err}")
    return "\n".join(lines)


def test_argument_errors_are_pinned(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_transcript(capsys) == (GOLDEN / "errors.txt").read_text()


def defaults_transcript() -> str:
    parser = build_parser()
    lines = []
    for command in MINIMAL_ARGUMENTS:
        parsed = vars(parser.parse_args(shlex.split(command)))
        lines.append(f"$ runtime {command}\n{sorted(parsed.items())!r}\n")
    return "\n".join(lines)


def test_parsed_values_are_pinned() -> None:
    assert defaults_transcript() == (GOLDEN / "defaults.txt").read_text()
