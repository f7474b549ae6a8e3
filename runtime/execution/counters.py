"""What one worker did since it started, by kind, counted by its parts (claimer, settler,
the worker itself). Plain numbers for tests and a debugger; the exported series are
``runtime.observe.metrics``."""

from __future__ import annotations

import msgspec


class WorkerCounters(msgspec.Struct):
    claimed: int = 0
    completed: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    stale_acks: int = 0  # settles refused by fencing: the lease had been reclaimed
    leases_lost: int = 0
    rate_limited: int = 0  # claims cut short by the rate limit
    handoffs: int = 0  # jobs enqueue leased straight to this parked worker (no claim call)
    handoffs_refused: int = 0  # of those, released at once: no free slot, stopping, breaker
