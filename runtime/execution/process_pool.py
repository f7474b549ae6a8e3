"""A pool of killable child processes for ``executor="process"`` handlers.

It owns the children: starting them lazily (at most ``size``), handing each one job at a
time, and killing one whose job timed out, was cancelled or left it in an unknown state. A
killed or crashed child is dropped and a fresh one is started by the next job that needs
it, so the pool always stays usable. The wire format and the child's loop live in
``runtime.execution.process_worker``; only msgpack crosses the pipes, never pickle.

What the handler did comes back as the same thing a local call would give: its return
value (plain msgpack-decoded: dicts, lists, strings, numbers), ``Retry``/``Reject``
re-raised in the parent, ``RemoteError("TypeName: message")`` for anything else,
``TimeoutError`` when ``timeout_s`` passed, and ``ChildCrashed`` when the process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from runtime.errors import Reject, Retry
from runtime.execution.process_worker import (
    HEADER,
    MAX_FRAME_BYTES,
    JobRequest,
    Ok,
    Raised,
    Ready,
    Rejected,
    Response,
    RetryRequested,
    frame,
)

WORKER_MODULE: Final = "runtime.execution.process_worker"
STOP_GRACE_S: Final = 2.0  # close(): a child still busy after this is SIGKILLed
CRASH_GRACE_S: Final = 1.0  # a child that hung up is given this long to finish dying

_encoder: Final = msgspec.msgpack.Encoder()
_response_decoder: Final = msgspec.msgpack.Decoder(Response)
_result_decoder: Final = msgspec.msgpack.Decoder()


class ChildCrashed(Exception):
    """The child process died (or broke the protocol) while running a job."""


class RemoteError(Exception):
    """The handler raised in the child; ``str(exc)`` is ``"TypeName: message"``, and
    ``remote_traceback`` the traceback the child formatted (``jobs.outcome`` keeps it)."""

    is_remote = True  # runtime.jobs.outcome.describe() keeps the text as it is

    def __init__(self, type_name: str, message: str = "", *, traceback: str = "") -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = traceback
        super().__init__(f"{type_name}: {message}" if message else type_name)


class _ProtocolError(Exception):
    """The child sent something that is not a valid frame of the expected kind."""


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _log_format() -> str:
    """``"json"`` when this process logs JSON lines (see runtime.observe.logs), so its
    children do too."""
    from runtime.observe.logs import JsonFormatter

    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in handlers) else "text"


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` (default: ours) with this package's root first on PYTHONPATH.

    The child runs ``python -m runtime.execution.process_worker`` from whatever the cwd is,
    so it must find ``runtime`` the way this process did, installed or not.
    """
    child = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *(p for p in child.get("PYTHONPATH", "").split(os.pathsep) if p)]
    child["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return child


class _Child:
    """One worker process and its two protocol pipes."""

    __slots__ = ("proc",)

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None  # noqa: S101 — narrows a type: the child is spawned with stdin=PIPE
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def receive(self) -> Response:
        assert self.proc.stdout is not None  # noqa: S101 — narrows a type: the child is spawned with stdout=PIPE
        (size,) = HEADER.unpack(await self.proc.stdout.readexactly(HEADER.size))
        if size > MAX_FRAME_BYTES:
            raise _ProtocolError(f"frame of {size} bytes is over the limit")
        body = await self.proc.stdout.readexactly(size)
        try:
            response: Response = _response_decoder.decode(body)
            return response
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise _ProtocolError(f"undecodable frame: {exc}") from None

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def reap(self, grace_s: float) -> int:
        """Wait up to ``grace_s`` for the child to exit, then SIGKILL it; its exit status."""
        if grace_s > 0:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self.proc.wait(), grace_s)
        self.kill()
        return await self.proc.wait()

    async def stop(self, grace_s: float) -> None:
        """Close stdin (the child exits after its current job), SIGKILL after ``grace_s``."""
        assert self.proc.stdin is not None  # noqa: S101 — narrows a type: the child is spawned with stdin=PIPE
        self.proc.stdin.close()
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.wait_closed()
        await self.reap(grace_s)


class ProcessPool:
    """At most ``size`` children, each running one job at a time, reused across jobs.

    ``env`` replaces the environment of the children (as in ``subprocess``); the package
    root is always put on their PYTHONPATH. ``start_timeout_s`` bounds a child's start-up
    (interpreter plus runtime imports) and is not counted in any job's ``timeout_s``.
    """

    def __init__(
        self,
        size: int,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"ProcessPool(size={size!r}): size must be >= 1")
        self.size = size
        self._argv = (python, "-m", WORKER_MODULE)
        self._env = _child_env(env)
        self._start_timeout_s = start_timeout_s
        # A slot is the right to own one child for one job; idle children wait in _idle.
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()  # every live child, idle or busy
        self._is_closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the live children, idle or busy."""
        return sorted(c.pid for c in self._children if c.proc.returncode is None)

    async def run(
        self,
        source_file: str,
        attr: str,
        payload: bytes,
        *,
        job_id: str,
        function: str,
        attempt: int,
        timeout_s: float,
        params: Mapping[str, Any],
        log_ids: Mapping[str, str] | None = None,
    ) -> Any:
        """Run ``attr`` of ``source_file`` on ``payload`` (msgpack) in a child; its result.

        Raises Retry/Reject as the handler did, RemoteError for any other handler
        exception, TimeoutError after ``timeout_s`` (the child is killed) and ChildCrashed
        if the child died. If the caller is cancelled, the child is killed too: it may be
        mid-work, and only a fresh process is known to be clean.
        """
        request = frame(
            _encoder.encode(
                JobRequest(
                    source_file=source_file,
                    attr=attr,
                    payload=payload,
                    job_id=job_id,
                    function=function,
                    attempt=attempt,
                    timeout_s=timeout_s,
                    params=dict(params),
                    log_format=_log_format(),
                    log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                    log_ids=dict(log_ids or {}),
                )
            )
        )
        async with self._slots:
            self._check_open()
            child = await self._idle_or_new()
            response = await self._exchange(child, request, job_id, function, timeout_s)
            if child in self._children:  # close() may have taken it meanwhile
                self._idle.append(child)
        match response:
            case Ok(result):
                return _result_decoder.decode(result)
            case RetryRequested(delay_s, reason):
                raise Retry(delay_s, reason)
            case Rejected(reason):
                raise Reject(reason)
            case Raised(type_name, message, traceback):
                raise RemoteError(type_name, message, traceback=traceback)
            case _:
                raise AssertionError(f"unexpected response {response!r}")

    async def close(self) -> None:
        """Stop every child: close its stdin, SIGKILL it after 2 s, and reap it."""
        self._is_closed = True
        children = list(self._children)
        self._children.clear()
        self._idle.clear()
        await asyncio.gather(*(c.stop(STOP_GRACE_S) for c in children))

    def _check_open(self) -> None:
        if self._is_closed:
            raise RuntimeError("the process pool is closed")

    async def _spawn(self) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
        )
        child = _Child(proc)
        self._children.add(child)  # no await since the exec: a cancel cannot lose it
        try:
            async with asyncio.timeout(self._start_timeout_s):
                hello = await child.receive()
            if not isinstance(hello, Ready):
                raise _ProtocolError(f"expected a ready message, got {hello!r}")
        except (asyncio.IncompleteReadError, _ProtocolError, TimeoutError) as exc:
            await self._discard(child, grace_s=CRASH_GRACE_S)
            raise ChildCrashed(
                f"process worker pid {child.pid} failed to start ({exc!r}) and "
                f"{_describe_exit(child.proc.returncode)}; see its stderr"
            ) from None
        except BaseException:
            await self._discard(child, grace_s=0)
            raise
        return child

    async def _exchange(
        self, child: _Child, request: bytes, job_id: str, function: str, timeout_s: float
    ) -> Response:
        """Send one job and read its response; on any failure the child is discarded."""
        try:
            async with asyncio.timeout(timeout_s):
                await child.send(request)
                response = await child.receive()
            if isinstance(response, Ready):
                raise _ProtocolError("a ready message in answer to a job")
            return response
        except TimeoutError:
            await self._discard(child, grace_s=0)
            raise TimeoutError(
                f"job {job_id} ({function}) did not finish within timeout_s={timeout_s:g}; "
                f"killed process worker pid {child.pid}"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, _ProtocolError) as exc:
            # A clean hang-up means the process is exiting: give it a moment to say how.
            await self._discard(child, grace_s=CRASH_GRACE_S)
            detail = (
                ""
                if isinstance(exc, asyncio.IncompleteReadError | ConnectionError)
                else (f" after a protocol error ({exc})")
            )
            raise ChildCrashed(
                f"process worker pid {child.pid} {_describe_exit(child.proc.returncode)} "
                f"while running job {job_id} ({function}){detail}"
            ) from None
        except BaseException:
            # Cancelled (or something unforeseen): the job may be mid-work, so the child's
            # state is unknown. SIGKILL is synchronous; the reap below only collects it.
            await self._discard(child, grace_s=0)
            raise

    async def _idle_or_new(self) -> _Child:
        """An idle child still alive (one killed while idle is reaped, not blamed), or a new one."""
        while self._idle:
            child = self._idle.pop()
            if child.proc.returncode is None:
                return child
            await self._discard(child, grace_s=0)
        return await self._spawn()

    async def _discard(self, child: _Child, *, grace_s: float) -> None:
        self._children.discard(child)
        if grace_s <= 0:
            child.kill()  # before any await, so a second cancel cannot skip it
        await child.reap(grace_s)
