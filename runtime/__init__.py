"""A serverless-style function runtime for Python on Redis.

Handler authors need only: ``from runtime import function, Context, Retry, Reject``.
Importing this package has no side effects: no environment reads, no sockets, no global
metrics registry.
"""

from runtime.context import Context
from runtime.errors import Reject, Retry
from runtime.function import Backoff, Breaker, function

__all__ = ["Backoff", "Breaker", "Client", "Context", "Reject", "Retry", "function"]


def __getattr__(name: str) -> object:
    # The client pulls in redis and the broker; handler modules should not pay for that.
    if name == "Client":
        from runtime.client import Client

        return Client
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
