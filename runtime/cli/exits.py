"""The exit statuses of the ``runtime`` command, which of the runtime's errors ends it with
which status, and the one line each kind of error prints.

Every command returns one of these; ``main.run`` turns an error that escapes a command
into its status and its line (:func:`error_line`). argparse itself exits with 2
(``USAGE``) on bad arguments.
"""

from __future__ import annotations

import errno
from enum import IntEnum

from runtime.errors import (
    BrokerCommandError,
    BrokerError,
    BrokerPermissionError,
    BrokerUnavailable,
    ConfigError,
    EmbeddedRedisError,
    PayloadError,
    RedisMemoryFull,
    RegistryError,
    RuntimeFailure,
    UnknownFunction,
    UnknownJob,
)


class ExitStatus(IntEnum):
    """What the process tells its caller (a shell, a script, CI)."""

    OK = 0
    #: The command ran and did not get its way: the job failed or did not finish in time
    #: (``invoke``, ``job --wait``); a deployment could not be published, found, verified
    #: or made active; the operator said no to a purge; the system refused a file or a
    #: port (an OSError, named with its path or address); any other RuntimeFailure.
    FAILED = 1
    #: Bad configuration, bad handler folder or bad input: arguments (argparse's own exit),
    #: a payload, an unknown function, job or folder, a purge without ``--yes`` and no
    #: terminal.
    USAGE = 2
    #: Redis: unreachable, out of memory, refused the command (no permission, read-only,
    #: a script error), or no embedded Redis is running to talk to.
    REDIS = 3
    #: Interrupted (Ctrl-C): 128 + SIGINT, as a shell reports it.
    INTERRUPTED = 130
    #: Standard output was closed by its reader (``runtime config show | head -1``):
    #: 128 + SIGPIPE, what a shell reports for a command that a closed pipe ended; nothing
    #: is printed.
    BROKEN_PIPE = 141


# The first entry an error is an instance of gives its status: the specific errors come
# before RuntimeFailure, the root of them all.
ERROR_STATUSES: tuple[tuple[tuple[type[Exception], ...], ExitStatus], ...] = (
    (
        (ConfigError, RegistryError, PayloadError, UnknownFunction, UnknownJob, ValueError),
        ExitStatus.USAGE,
    ),
    ((EmbeddedRedisError, BrokerError), ExitStatus.REDIS),
    ((RuntimeFailure, OSError), ExitStatus.FAILED),
)
KNOWN_ERRORS: tuple[type[Exception], ...] = tuple(t for ts, _ in ERROR_STATUSES for t in ts)

REDIS_HINT = "check --redis / RUNTIME_REDIS__URL and that Redis is running"


def status_of(error: Exception) -> ExitStatus:
    """The exit status for one of ``KNOWN_ERRORS``."""
    for types, status in ERROR_STATUSES:
        if isinstance(error, types):
            return status
    raise TypeError(f"no exit status for {type(error).__name__}") from error


def error_line(error: Exception) -> str:
    """What the command prints for one of ``KNOWN_ERRORS``: ``error: …``, naming what was
    wrong and how to fix it. Redis errors and OS errors are one line (a Redis reply or a
    system message may hold newlines); configuration and folder errors list one problem a
    line, as they are built."""
    match error:
        case BrokerError():
            return "error: " + " ".join(_redis_text(error).split())
        case OSError():
            return "error: " + " ".join(os_error_text(error).split())
        case _:
            return f"error: {error}"


def _redis_text(error: BrokerError) -> str:
    said = str(error).strip().rstrip(".")  # Redis's own words, before ours
    match error:
        case BrokerUnavailable():
            return f"Redis unreachable: {said}; {REDIS_HINT}"
        case RedisMemoryFull():
            return (
                f"Redis is out of memory (maxmemory reached) and refused a write: {said}; "
                "free memory (runtime purge-dlq, fewer kept results: worker.keep_result_s) "
                "or raise maxmemory"
            )
        case BrokerPermissionError():
            return said  # one line already: what was refused and the ACL rule to add
        case BrokerCommandError() if "NOPERM" in str(error):
            return (
                f"Redis refused the command for lack of permission: {said}; grant it to "
                "this Redis user's ACL (docs/security.md lists what each role needs)"
            )
        case BrokerCommandError():
            return f"Redis refused the command: {said}"
        case _:
            return f"Redis failed the call: {error.describe()}"


def os_error_text(error: OSError) -> str:
    """An OSError with what it is about: the path(s) it names, or (a bind or connect, whose
    message names the address) its own message, plus the usual fix for the common ones."""
    what = error.strerror or str(error) or type(error).__name__
    if error.filename is not None:
        where = str(error.filename)
        if error.filename2 is not None:
            where += f" -> {error.filename2}"
        text = f"{where}: {what}"
    else:
        text = str(error) or what
    hints = {
        errno.EADDRINUSE: "stop what listens there, or choose another --port / http.port",
        errno.EACCES: "check the permissions of that path (or run where you may write)",
        errno.EROFS: "that file system is read-only; choose another folder",
        errno.ENOSPC: "the disk is full; free space",
    }
    if error.errno == errno.EACCES and error.filename is None:  # a bind to a low port
        hints[errno.EACCES] = "ports below 1024 need privileges; choose another --port"
    hint = hints.get(error.errno or 0)
    return f"{text}; {hint}" if hint else text
