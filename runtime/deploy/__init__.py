"""Shipping code to a fleet: signed bundles, their store in Redis and on disk, validation
of a folder in a child process, and the watcher that hot-swaps what a runtime serves.

Layer 7. May import everything below it: the contract, ``runtime.jobs``,
``runtime.config``, ``runtime.observe``, ``runtime.queue``, ``runtime.client``,
``runtime.execution``.
"""
