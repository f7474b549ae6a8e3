"""Every exception the runtime raises or understands, in one tree.

    Exception
    ├── RuntimeFailure                 infrastructure and usage errors of the runtime
    │   ├── ConfigError                bad settings (exit status 2); names key, value, rule, source
    │   ├── RegistryError              a handler folder that cannot be loaded (exit status 2)
    │   │   └── HandlerDefinitionError a bad decorator option or signature, with file:line
    │   ├── PayloadError               a payload that does not match the function's type
    │   │   └── PayloadTooLarge        over the function's max_payload_bytes
    │   ├── UnknownFunction            a name that is not in the registry
    │   ├── UnknownJob                 no such job id (never enqueued, or its result expired)
    │   ├── LeaseLost                  ctx.extend_lease(): the job was reclaimed by another
    │   ├── BrokerError                Redis failed a call (translated from redis-py in
    │   │   │                          runtime/queue/connection.py, the only place that sees
    │   │   │                          redis-py's exceptions)
    │   │   ├── BrokerUnavailable      no answer: connection refused, reset, timed out, loading
    │   │   └── BrokerCommandError     Redis answered with an error (a script error, NOPERM,
    │   │       │                      READONLY, a wrong key type, ...)
    │   │       ├── RedisMemoryFull    OOM: maxmemory reached and the command would grow it
    │   │       └── BrokerPermissionError  NOPERM: the Redis user's ACL lacks a command, key
    │   │                                  or channel; one line naming it and the rule to add
    │   ├── EmbeddedRedisError         the embedded redis-server cannot be started
    │   ├── JobFailed                  Client.result(): the job was dead-lettered
    │   ├── ResultTimeout              Client.result(): no terminal state in time
    │   └── DeployError                a deployment that cannot be published or activated
    │       └── BundleRefused          a stored bundle fails verification (signature, digest,
    │                                  limits, names): never extracted, never imported
    └── HandlerSignal                  raised *by handlers* to steer their job; never an error
        ├── Retry                      schedule another attempt (after delay_s, or by backoff)
        └── Reject                     dead-letter at once with reason ``rejected``

``HandlerSignal`` has its own root on purpose: an infrastructure ``except RuntimeFailure``
must never swallow a handler's request to retry or reject.
"""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Root of the runtime's own errors."""


class ConfigError(RuntimeFailure):
    """Settings failed validation. ``problems`` holds one line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class RegistryError(RuntimeFailure):
    """The functions folder could not be loaded. ``problems`` holds one line per file."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("cannot load functions:\n  " + "\n  ".join(problems))


class HandlerDefinitionError(RuntimeFailure):
    """A decorator option or handler signature is wrong (raised at import of the handler)."""


class PayloadError(RuntimeFailure):
    """A payload does not convert to the function's declared type."""


class PayloadTooLarge(PayloadError):
    """A payload is larger than the function's ``max_payload_bytes``."""


class UnknownFunction(RuntimeFailure):
    """No function of that name is registered."""


class UnknownJob(RuntimeFailure):
    """No job of that id exists (never enqueued, or its result expired)."""


class LeaseLost(RuntimeFailure):
    """The job's lease was reclaimed by another runtime; its outcome will be refused."""


class BrokerError(RuntimeFailure):
    """A Redis call failed. The message is redis-py's; ``cause`` names its type."""

    def __init__(self, message: str, cause: str = "") -> None:
        self.cause = cause or type(self).__name__
        super().__init__(message)

    def describe(self) -> str:
        """``"<redis-py type>: <message>"``, as probes and logs showed it before translation."""
        return f"{self.cause}: {self}"


class BrokerUnavailable(BrokerError):
    """Redis did not answer (connection refused, reset or timed out, still loading)."""


class BrokerCommandError(BrokerError):
    """Redis answered the call with an error."""


class RedisMemoryFull(BrokerCommandError):
    """Redis refused a write: ``maxmemory`` is reached (OOM command not allowed)."""


class BrokerPermissionError(BrokerCommandError):
    """Redis refused a call under its user's ACL (NOPERM, or a script's command refused).

    The message is one line: what was refused (``command``: a command name, a key or a
    channel) and the ACL rule that grants it (``rule``, e.g. ``+incrby``, ``~{rt:*}:*``,
    ``&{rt}:*``); docs/security.md lists every rule of each role.
    """

    def __init__(self, message: str, cause: str = "", *, refused: str = "", rule: str = ""):
        self.refused = refused
        self.rule = rule
        super().__init__(message, cause)


class EmbeddedRedisError(RuntimeFailure):
    """The private redis-server could not be started."""


class JobFailed(RuntimeFailure):
    """The awaited job ended dead-lettered."""

    def __init__(self, job_id: str, reason: str, error: str) -> None:
        self.job_id = job_id
        self.reason = reason
        self.error = error
        super().__init__(f"job {job_id} dead-lettered ({reason}): {error}")


class ResultTimeout(RuntimeFailure):
    """The awaited job did not reach a terminal state in time."""

    def __init__(self, job_id: str, timeout_s: float, state: str = "queued") -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(
            f"job {job_id} not finished after {timeout_s:g}s; it is {state} and continues"
        )


class DeployError(RuntimeFailure):
    """A deployment cannot be published, found or activated (exit status 1)."""


class BundleRefused(DeployError):
    """A stored bundle failed verification; the message says why, never with the key."""


class HandlerSignal(Exception):
    """Root of the exceptions a handler raises to steer its own job."""


class Retry(HandlerSignal):
    """Ask for another attempt, after ``delay_s`` or, if None, after the function's backoff.

    The attempt counts toward ``max_attempts``.
    """

    def __init__(self, delay_s: float | None = None, reason: str = "retry requested") -> None:
        if delay_s is not None and delay_s < 0:
            raise ValueError(f"Retry(delay_s={delay_s!r}): delay_s must be >= 0")
        self.delay_s = delay_s
        self.reason = reason
        super().__init__(reason)


class Reject(HandlerSignal):
    """Dead-letter the job at once with reason ``rejected``; no further attempts."""

    def __init__(self, reason: str = "rejected by handler") -> None:
        self.reason = reason
        super().__init__(reason)
