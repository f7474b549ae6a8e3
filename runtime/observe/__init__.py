"""How a runtime is watched: Prometheus metrics (an app-owned registry), OpenTelemetry
tracing across the queue, and log set-up.

Layer 3. May import: the handler contract, ``runtime.jobs``, ``runtime.config``.
"""
