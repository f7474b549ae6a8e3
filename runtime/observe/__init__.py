"""How a runtime is watched and kept running: Prometheus metrics (an app-owned registry),
OpenTelemetry tracing across the queue, log set-up, the supervisor of long-lived tasks, and
the tally of refused inputs.

Layer 3. May import: the handler contract, ``runtime.jobs``, ``runtime.config``.
"""
