"""The ``runtime`` command's entry point: parse the arguments, load the settings, hand the
command to the module of its group, and turn what escapes it into an exit status.

The console script ``runtime``, ``python -m runtime`` and ``python -m runtime.cli`` all run
:func:`main`. The statuses are those of ``exits.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import sys
from collections.abc import Sequence
from typing import Any

from runtime.cli.admin import ADMIN_COMMANDS, admin_main
from runtime.cli.control import CONTROL_COMMANDS, control_main
from runtime.cli.deploy import DEPLOY_COMMANDS, deploy_main
from runtime.cli.exits import KNOWN_ERRORS, ExitStatus, error_line, status_of
from runtime.cli.functions import FUNCTION_COMMANDS, functions_main
from runtime.cli.job import JOB_COMMANDS, job_main
from runtime.cli.parser import build_parser
from runtime.cli.serve import serve_main
from runtime.cli.tools import TOOL_COMMANDS, tools_main
from runtime.config.redaction import settings_to_dict
from runtime.config.schema import Settings
from runtime.config.settings import load_settings
from runtime.errors import EmbeddedRedisError


def main() -> None:
    status = run()
    try:
        sys.stdout.flush()  # what is still buffered, while a closed pipe can be told apart
    except BrokenPipeError:
        status = _quiet_broken_pipe()
    sys.exit(status)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (default: the process's arguments); its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(_dispatch(args))
    except BrokenPipeError as exc:  # an OSError: told apart before them
        if _is_stdout_closed():
            return _quiet_broken_pipe()
        print(error_line(exc), file=sys.stderr)
        return int(ExitStatus.FAILED)
    except KNOWN_ERRORS as exc:
        print(error_line(exc), file=sys.stderr)
        return int(status_of(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)


def _is_stdout_closed() -> bool:
    """Whether standard output's reader has gone (a broken pipe on stdout, not on another
    pipe or socket): a pipe or socket with no reader polls as an error (POLLERR)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # no descriptor (a test's capture), or closed
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_broken_pipe() -> int:
    """Exit quietly when stdout's reader has gone (``| head``): the rest of the output is
    sent nowhere, so the interpreter's last flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a descriptor (a test's capture)
        pass
    return int(ExitStatus.BROKEN_PIPE)


def _dispatch(args: argparse.Namespace) -> ExitStatus:
    settings = _settings(args)
    if args.command == "config":
        if args.action == "show":
            print(json.dumps(settings_to_dict(settings, masked=True), indent=2))
        else:
            print("configuration OK")
        return ExitStatus.OK
    from runtime.observe.logs import setup_logging

    setup_logging(settings.log.level, settings.log.format)
    if args.command in ADMIN_COMMANDS:
        return asyncio.run(admin_main(args, settings, _redis_url(settings)))
    if args.command in JOB_COMMANDS:
        return asyncio.run(job_main(args, settings, _redis_url(settings)))
    if args.command in CONTROL_COMMANDS:
        return asyncio.run(control_main(args, settings, _redis_url(settings)))
    if args.command in TOOL_COMMANDS:
        return asyncio.run(tools_main(args, settings, _redis_url(settings)))
    if args.command in DEPLOY_COMMANDS:
        return deploy_main(args, settings, lambda: _redis_url(settings))
    if args.command == "serve":
        return serve_main(args, settings)
    assert args.command in FUNCTION_COMMANDS, args.command  # noqa: S101 — argparse allows only these commands; a guard for the developer
    return functions_main(args, settings, lambda: _redis_url(settings))


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of ``--config``, the environment and the flags that override them."""
    overrides: dict[str, Any] = {
        "functions_dir": getattr(args, "functions", None) or getattr(args, "dir", None),
        "http.host": getattr(args, "host", None),
        "http.port": getattr(args, "port", None),
        "redis.url": getattr(args, "redis", None),
    }
    return load_settings(config_dir=args.config, overrides=overrides)


def _redis_url(settings: Settings) -> str:
    """The configured Redis, else the embedded one a ``runtime serve`` here started."""
    if settings.redis.url:
        return settings.redis.url
    from runtime.server.embedded import discover

    url = discover(settings.redis.embedded_dir)
    if url is None:
        raise EmbeddedRedisError(
            f"no embedded Redis is running in {settings.redis.embedded_dir}: start "
            "`runtime serve` first, or give --redis URL / RUNTIME_REDIS__URL"
        )
    return url


if __name__ == "__main__":
    main()
