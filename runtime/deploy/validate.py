"""Validate a handler folder in a child process: ``python -m runtime.deploy.validate``.

The child does exactly what ``runtime check`` does (:func:`load_registry` with the same
overrides) and answers with the problems, or with the functions and their effective
options. Importing handler code in a child means a broken handler (one that hangs, exits,
segfaults or leaks at import) cannot hurt the deployer or a serving runtime.

Protocol: the request (JSON) on the child's stdin, the report (JSON) on its original
stdout. The child points fd 1 at stderr first, so a handler that prints at import cannot
corrupt the report; stderr is kept by the parent and shown only if the child dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from runtime.deploy.bundle import FunctionEntry
from runtime.errors import RegistryError

STDERR_TAIL_CHARS = 2000


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    folder: str
    overrides: dict[str, dict[str, Any]] = {}


class Report(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    problems: list[str] = []
    functions: list[FunctionEntry] = []


_report_decoder = msgspec.json.Decoder(Report)


def shown_path(path: Path) -> str:
    """How ``runtime check`` names a folder: relative to the working directory if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def relabel(text: str, private: Path, shown: str) -> str:
    """Show a private copy's paths (a temp folder, a snapshot) as the user's folder."""
    for form in {str(private.resolve()), shown_path(private)}:
        text = text.replace(form, shown)
    return text


def _argv() -> list[str]:
    return [sys.executable, "-m", "runtime.deploy.validate"]


def _request(folder: Path, overrides: Mapping[str, Mapping[str, Any]] | None) -> bytes:
    body = {k: dict(v) for k, v in (overrides or {}).items()}
    return msgspec.json.encode(Request(str(folder), body))


def _result(code: int | None, out: bytes, err: bytes, folder: Path) -> list[FunctionEntry]:
    try:
        report = _report_decoder.decode(out) if code == 0 else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        report = None
    if report is None:
        tail = err.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:].strip()
        raise RegistryError(
            [f"{shown_path(folder)}: validation process exited with code {code}"
             + (f":\n{tail}" if tail else "")]
        )  # fmt: skip
    if report.problems:
        raise RegistryError(report.problems)
    return report.functions


def validate_sync(
    folder: Path, overrides: Mapping[str, Mapping[str, Any]] | None, *, timeout_s: float
) -> list[FunctionEntry]:
    """The functions of ``folder``, validated in a child; RegistryError lists problems."""
    try:
        proc = subprocess.run(  # noqa: S603 — argv is sys.executable -m our own module; the folder goes on stdin, no shell
            _argv(), input=_request(folder, overrides), capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise RegistryError(
            [f"{shown_path(folder)}: importing the handlers took more than {timeout_s:g}s "
             "(deploy.validate_timeout_s); does a module block at import?"]
        ) from None  # fmt: skip
    return _result(proc.returncode, proc.stdout, proc.stderr, folder)


async def validate(
    folder: Path, overrides: Mapping[str, Mapping[str, Any]] | None, *, timeout_s: float
) -> list[FunctionEntry]:
    """:func:`validate_sync` for the event loop; the child is killed if this is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        *_argv(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(_request(folder, overrides))
    except TimeoutError:
        raise RegistryError(
            [f"{shown_path(folder)}: importing the handlers took more than {timeout_s:g}s "
             "(deploy.validate_timeout_s); does a module block at import?"]
        ) from None  # fmt: skip
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
    return _result(proc.returncode, out, err, folder)


def _child() -> int:
    report_fd = os.dup(1)
    os.dup2(2, 1)  # handler prints go to stderr, never into the report
    sys.stdout = sys.stderr
    request = msgspec.json.decode(sys.stdin.buffer.read(), type=Request)
    from runtime.config.registry import load_registry

    try:
        registry = load_registry(request.folder, request.overrides)
    except RegistryError as exc:
        report = Report(problems=exc.problems)
    else:
        report = Report(
            functions=[
                FunctionEntry(spec.name, spec.executor, spec.options, spec.source)
                for spec in registry
            ]
        )
    with os.fdopen(report_fd, "wb") as out:
        out.write(msgspec.json.encode(report))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
