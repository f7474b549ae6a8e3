"""Shipping code to a fleet: signed bundles (``bundle``), their store in Redis (``store``)
and on disk (``disk``), validation of a folder in a child process (``validate``), the
watcher that hot-swaps what a runtime serves (``watcher``, ``snapshots`` for --reload), and
the fleet's answer to an activation (``fleet``).

Layer 7. May import everything below it: the contract, ``runtime.jobs``,
``runtime.config``, ``runtime.observe``, ``runtime.queue``, ``runtime.client``,
``runtime.execution``.
"""
