"""Running jobs: the dispatcher (one worker per function, the wake and handoff listeners),
the worker's parts (claiming, settling, leases, reclaiming), one attempt of a handler, the
circuit breaker, the quarantine of suspect jobs, and the process pool.

Layer 5 (beside ``runtime.client``, the producer's API, which sits on the queue too).
May import: the handler contract, ``runtime.jobs``, ``runtime.config``,
``runtime.observe``, ``runtime.queue``.
"""
