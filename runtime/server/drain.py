"""How long SIGTERM's drain lets running jobs finish, and the stop after it.

No attempt outlives its function's ``timeout_s`` (attempt.py cuts it there; a thread that
ignores it is left behind, its job retried), so waiting longer than the longest timeout of
the loaded functions waits for nothing but handlers that ignore their timeout. The drain
therefore waits

    min(worker.shutdown_grace_s, longest timeout_s + DRAIN_MARGIN_S)

then releases what still runs to the front of its lane. The margin lets an attempt that
times out at the bound settle its outcome. A process then ends within that bound plus the
drain's own bounded steps (un-parking, the last settles, the loops' stop: a few seconds),
and the watchdog (cli/serve.py) ends it ``WATCHDOG_EXTRA_S`` after the bound whatever its
tasks do. Handler threads left running are not waited for at exit (``exit_past``): their
jobs were released, or are left to their leases.

For Kubernetes: ``terminationGracePeriodSeconds`` above the bound plus a few seconds lets
a scale-down finish every job that can finish (docs/deploying.md, "Autoscaling").
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable

from runtime.function import FunctionSpec

DRAIN_MARGIN_S = 1.0  # beyond the longest timeout_s: the timed-out attempt's settle
WATCHDOG_EXTRA_S = 10.0  # beyond the drain's bound: its own bounded steps (cli/serve.py)
STRAGGLER_JOIN_S = 1.0  # how long exit waits for threads that are ending anyway

log = logging.getLogger("runtime.app")


def drain_grace_s(shutdown_grace_s: float, specs: Iterable[FunctionSpec]) -> float:
    """How long running jobs may finish after SIGTERM (module docstring)."""
    longest = max((spec.options.timeout_s for spec in specs), default=0.0)
    return min(shutdown_grace_s, longest + DRAIN_MARGIN_S)


def describe(shutdown_grace_s: float, specs: Iterable[FunctionSpec]) -> str:
    """Why the bound is what it is, for the drain's log line."""
    specs = list(specs)
    grace = drain_grace_s(shutdown_grace_s, specs)
    if not specs:
        return f"up to {grace:g}s (no functions loaded)"
    longest = max(specs, key=lambda spec: spec.options.timeout_s)
    timeout = longest.options.timeout_s
    if grace < shutdown_grace_s:
        why = (
            f"the longest timeout_s, {timeout:g}s of {longest.name}, + {DRAIN_MARGIN_S:g}s; "
            f"worker.shutdown_grace_s is {shutdown_grace_s:g}s"
        )
    else:
        why = f"worker.shutdown_grace_s; the longest timeout_s is {timeout:g}s of {longest.name}"
    return f"up to {grace:g}s ({why})"


def exit_past_stragglers(join_s: float = STRAGGLER_JOIN_S) -> None:
    """After a completed drain: if handler threads still run (a plain ``def`` handler past
    its timeout cannot be stopped), end the process now rather than at their end, which
    the interpreter would wait for (``concurrent.futures`` joins its threads at exit)."""
    deadline = time.monotonic() + join_s
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in others if t.is_alive()]
    if not alive:
        return
    log.warning(
        "drained; %d handler thread(s) still running past their timeout (%s): exiting "
        "without them (their jobs run again: released, retried or reclaimed)",
        len(alive),
        ", ".join(sorted(alive)[:5]),
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
