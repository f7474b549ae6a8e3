"""The ``runtime serve`` process: the composition root (one aiohttp application that owns
every long-lived resource), the /v1 routes and their OpenAPI document, the probes and
the embedded redis-server, and the web console at ``/ui`` (``console/``).

Layer 8. May import every layer below it; only ``runtime.cli`` imports it.
"""
