"""A serverless-style function runtime for Python on Redis.

Handler authors need only: ``from runtime import function, Context, Retry, Reject``.
Importing this package has no side effects: no environment reads, no sockets, no global
metrics registry.

Layers, each importing only those below it (``tests/unit/test_layers.py`` enforces it):

    errors, function, context  the handler contract, and the one error tree
    jobs/                      jobs as values: envelope, outcome, records, settle entries
    config/                    settings and the registry of handler functions
    observe/                   metrics, tracing, logs
    queue/                     Redis: keys, scripts, broker, waiter, fleet, admin passes
    client                     the producer's API
    execution/                 dispatcher, worker parts, attempts, process pool
    deploy/                    signed bundles, their store, hot swaps
    server/                    the ``runtime serve`` process: app, routes, probes
    cli/                       the ``runtime`` command
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
