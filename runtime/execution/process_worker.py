"""The child side of the process pool: ``python -m runtime.execution.process_worker``.

It owns one loop: read a framed ``JobRequest`` from the parent, import the handler file by
path (once per path), decode the payload to the handler's type, call the handler and write
back one framed ``JobResponse``. Frames are a 4-byte big-endian length and a msgpack body;
the wire types live here and ``runtime.execution.process_pool`` imports them, so both ends share one
schema. No pickle: only msgpack crosses the pipe, and the parent decodes a result as plain
msgpack (dicts, lists, strings, numbers).

The protocol owns the *original* stdin and stdout; fd 0 is pointed at /dev/null and fd 1 at
stderr, so a handler that prints (or reads stdin, or writes fd 1 from C) cannot corrupt it.
The child exits when its stdin reaches EOF (the parent closed the pipe).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import signal
import struct
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Final

import msgspec

from runtime.context import Context
from runtime.errors import Reject, Retry
from runtime.function import FunctionSpec, format_validation_error, inspect_handler
from runtime.jobs.outcome import traceback_of

HEADER: Final = struct.Struct(">I")
MAX_FRAME_BYTES: Final = 1 << 30  # a corrupt header must not make a reader allocate forever
MODULE_PREFIX: Final = "_runtime_process"
_IDENT_RE: Final = re.compile(r"\W")

log = logging.getLogger("runtime.process_worker")


class JobRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Run ``attr`` of the file ``source_file`` on ``payload`` (msgpack of the payload type)."""

    source_file: str
    attr: str
    payload: bytes
    job_id: str
    function: str
    attempt: int
    timeout_s: float
    params: dict[str, Any] = {}
    # The parent's log set-up and the job's trace ids, so the handler's ctx.log lines look
    # like those of an async or thread handler (JSON with job and trace ids when asked).
    log_format: str = "text"
    log_level: str = "INFO"
    log_ids: dict[str, str] = {}


class Ready(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="ready"):
    """Sent once at start-up, after the runtime imported: the child can take jobs."""

    pid: int


class Ok(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="ok"):
    result: bytes  # msgpack of the handler's return value


class RetryRequested(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="retry"):
    delay_s: float | None = None
    reason: str = "retry requested"


class Rejected(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="reject"):
    reason: str = "rejected by handler"


class Raised(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="error"):
    """The handler (or its import, or the payload decode) raised. Its traceback crosses,
    bounded (``jobs.outcome.traceback_of``): the parent logs it with the attempt's WARNING
    and stores it on the job, so the child does not log it a second time."""

    type_name: str
    message: str = ""
    traceback: str = ""


JobResponse = Ok | RetryRequested | Rejected | Raised
Response = Ready | JobResponse

_encoder: Final = msgspec.msgpack.Encoder()
_request_decoder: Final = msgspec.msgpack.Decoder(JobRequest)


def module_name(path: Path) -> str:
    """A private module name unique to the resolved path: two ``tasks.py`` never collide."""
    digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:10]
    return f"{MODULE_PREFIX}_{_IDENT_RE.sub('_', path.stem)}_{digest}"


class HandlerCache:
    """Handler modules by path and FunctionSpecs by (path, attr), each built once."""

    def __init__(self) -> None:
        self._modules: dict[Path, ModuleType] = {}
        self._specs: dict[tuple[Path, str], FunctionSpec] = {}

    def spec(self, source_file: str, attr: str) -> FunctionSpec:
        path = Path(source_file).resolve()
        spec = self._specs.get((path, attr))
        if spec is None:
            func = getattr(self._module(path), attr)
            spec = inspect_handler(func, None)
            self._specs[(path, attr)] = spec
        return spec

    def _module(self, path: Path) -> ModuleType:
        module = self._modules.get(path)
        if module is not None:
            return module
        if not path.is_file():
            raise FileNotFoundError(f"handler file not found: {path}")
        if str(path.parent) not in sys.path:  # as the registry does: helpers by name
            sys.path.append(str(path.parent))
        name = module_name(path)
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module  # dataclasses, typing and msgspec look names up here
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)  # a fixed file gets a fresh import on the next job
            raise
        self._modules[path] = module
        return module


_logging_as: tuple[str, str] | None = None


def _configure_logging(fmt: str, level: str) -> None:
    """The parent's format and level, set once (and again only if they change)."""
    global _logging_as
    if _logging_as == (fmt, level):
        return
    from runtime.observe.logs import setup_logging

    setup_logging(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
                  "json" if fmt == "json" else "text")  # fmt: skip
    _logging_as = (fmt, level)


def run_job(request: JobRequest, cache: HandlerCache) -> JobResponse:
    """Run one job; whatever it raises becomes a response, BaseExceptions included (a
    handler's KeyboardInterrupt or SystemExit is its attempt's error, not this child's end:
    SIGINT is ignored here, so neither can come from anywhere but the handler)."""
    try:
        spec = cache.spec(request.source_file, request.attr)
        if spec.is_async:
            raise TypeError(
                f"{spec.source}: an async handler cannot run in a process; use executor='async'"
            )
        try:
            # The parent checked the size against the effective max_payload_bytes (config
            # overrides included), which this child does not know: decode only.
            event = msgspec.msgpack.decode(request.payload, type=spec.payload_type, strict=True)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return Raised(type(exc).__name__, f"{spec.name}: {format_validation_error(exc)}")
        _configure_logging(request.log_format, request.log_level)
        ctx = Context(
            job_id=request.job_id,
            function=request.function,
            attempt=request.attempt,
            deadline=time.monotonic() + request.timeout_s,
            params=request.params,
            log_extra=request.log_ids,
        )
        value = spec.handler(event, ctx) if spec.takes_context else spec.handler(event)
    except Retry as exc:
        return RetryRequested(exc.delay_s, exc.reason)
    except Reject as exc:
        return Rejected(exc.reason)
    except BaseException as exc:
        return Raised(type(exc).__name__, str(exc), traceback_of(exc))
    try:
        return Ok(_encoder.encode(value))
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        return Raised(
            "TypeError",
            f"the result of {request.attr} is not serialisable to msgpack "
            f"({type(value).__name__}): {exc}",
        )


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's body, or None at a clean EOF between frames."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise EOFError("the parent closed the pipe inside a frame header")
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME_BYTES} byte limit")
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("the parent closed the pipe inside a frame")
    return body


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def _take_protocol_fds() -> tuple[BinaryIO, BinaryIO]:
    """Keep private copies of fds 0/1 for the protocol and hand the handler harmless ones."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # C code and subprocesses writing fd 1 land on stderr too
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = sys.stderr
    return proto_in, proto_out


def main() -> int:
    """Serve jobs until the parent closes stdin; returns the exit status."""
    proto_in, proto_out = _take_protocol_fds()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [process_worker {os.getpid()}] %(name)s: %(message)s",
    )
    # Ctrl-C in a terminal signals the whole process group; the parent decides when its
    # children stop (by closing stdin), so a running job is not torn down under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache = HandlerCache()
    proto_out.write(frame(_encoder.encode(Ready(os.getpid()))))
    proto_out.flush()
    while True:
        body = read_frame(proto_in)
        if body is None:
            return 0
        response = run_job(_request_decoder.decode(body), cache)
        proto_out.write(frame(_encoder.encode(response)))
        proto_out.flush()


if __name__ == "__main__":
    sys.exit(main())
