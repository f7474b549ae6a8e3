"""Everything that speaks to Redis: the key layout, the broker (one Lua script per job
transition), the script loader, the result waiter, the fleet registry, the data-loss
epoch and the operator's passes over dead letters.

Layer 4. May import: the handler contract, ``runtime.jobs``, ``runtime.config``,
``runtime.observe``. redis-py is imported only here, and its exceptions end here: callers
above this layer see the runtime's own errors (``runtime.errors``).
"""
