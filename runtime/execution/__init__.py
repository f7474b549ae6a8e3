"""Running jobs: the dispatcher (one worker per function, the wake and handoff listeners),
the worker's parts (claiming, settling, leases, reclaiming), one attempt of a handler, the
circuit breaker, the quarantine of suspect jobs, and the process pool.

Layer 6 (above ``runtime.client``, layer 5: the producer's API on the queue).
May import: the handler contract, ``runtime.jobs``, ``runtime.config``,
``runtime.observe``, ``runtime.queue``.
"""
