"""The exit statuses of the ``runtime`` command, and which of the runtime's errors ends it
with which status.

Every command returns one of these; ``main.run`` turns an error that escapes a command
into its status. argparse itself exits with 2 (``USAGE``) on bad arguments.
"""

from __future__ import annotations

from enum import IntEnum

from runtime.errors import (
    ConfigError,
    EmbeddedRedisError,
    PayloadError,
    RegistryError,
    RuntimeFailure,
    UnknownFunction,
)


class ExitStatus(IntEnum):
    """What the process tells its caller (a shell, a script, CI)."""

    OK = 0
    #: The command ran and did not get its way: the job failed or did not finish in time
    #: (``invoke``; ``bench`` with jobs unfinished); a deployment could not be published,
    #: found, verified or made active; the operator said no to a purge; any other
    #: RuntimeFailure.
    FAILED = 1
    #: Bad configuration, bad handler folder or bad input: arguments (argparse's own exit),
    #: a payload, an unknown function or folder, a purge without ``--yes`` and no terminal.
    USAGE = 2
    #: Redis is unreachable, or no embedded Redis is running to talk to.
    REDIS = 3
    #: Interrupted (Ctrl-C): 128 + SIGINT, as a shell reports it.
    INTERRUPTED = 130


# The first entry an error is an instance of gives its status: the specific errors come
# before RuntimeFailure, the root of them all. BrokerUnavailable (and OSError) is not here:
# main.run catches it before these and says "Redis unreachable" (status REDIS).
ERROR_STATUSES: tuple[tuple[tuple[type[Exception], ...], ExitStatus], ...] = (
    ((ConfigError, RegistryError, PayloadError, UnknownFunction, ValueError), ExitStatus.USAGE),
    ((EmbeddedRedisError,), ExitStatus.REDIS),
    ((RuntimeFailure,), ExitStatus.FAILED),
)
KNOWN_ERRORS: tuple[type[Exception], ...] = tuple(t for ts, _ in ERROR_STATUSES for t in ts)


def status_of(error: Exception) -> ExitStatus:
    """The exit status for one of ``KNOWN_ERRORS``."""
    for types, status in ERROR_STATUSES:
        if isinstance(error, types):
            return status
    raise TypeError(f"no exit status for {type(error).__name__}") from error
