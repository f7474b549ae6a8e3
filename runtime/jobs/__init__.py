"""Jobs as values: the envelope a producer writes, the outcome of one attempt, the records
and settle entries that cross the boundary to Redis.

Layer 1. May import: the handler contract (``runtime.errors``, ``runtime.function``,
``runtime.context``). Nothing here touches Redis, a socket or the clock.
"""
