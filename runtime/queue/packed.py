"""Commands packed once, sent on one connection in one write: the bulk enqueue's fast path.

The enqueue script's 26 arguments are mostly the same for every job of a function, so
``EnqueueArgs`` packs them once and each job adds only its own (``EnqueueArgs.resp``);
``send_packed`` writes a chunk of such commands and reads one reply per command, with no
SCRIPT EXISTS before them and one read deadline for the chunk.

Only for a single Redis node: on a cluster, redis-py's cluster pipeline routes each command
to its slot's node (``RedisBroker`` uses it there).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import redis.exceptions

from runtime.errors import BrokerUnavailable
from runtime.queue.connection import _TRANSLATED, RedisClient, translated

# Replies read between two re-arms of the read deadline (a re-arm costs a timer).
_REARM_EVERY = 64


async def send_packed(client: RedisClient, commands: Sequence[bytes]) -> list[Any]:
    """Send ``commands`` (each one packed command) in one write on one connection of the
    pool and read one reply per command, in order. An error reply is returned in its place
    as the runtime's error (``translated``), as the pipeline does with ``raise_on_error =
    False``. Sent one time, never retried here: a broken connection, or no reply within the
    client's socket timeout of the previous one, drops the connection and raises
    BrokerUnavailable, and the caller (who knows whether a second landing is safe) decides."""
    pool = client.connection_pool
    try:
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    except BaseException as exc:
        if isinstance(exc, _TRANSLATED):
            raise translated(exc) from exc
        raise
    replies: list[Any] = []
    wait_s = conn.socket_timeout
    loop = asyncio.get_running_loop()
    try:
        await conn.send_packed_command(commands)
        async with asyncio.timeout(wait_s) as deadline:
            for n in range(len(commands)):
                if wait_s and n % _REARM_EVERY == _REARM_EVERY - 1:
                    deadline.reschedule(loop.time() + wait_s)
                try:  # math.inf: no timer per reply (the deadline above bounds the reads)
                    replies.append(await conn.read_response(timeout=math.inf))
                except redis.exceptions.ResponseError as exc:
                    replies.append(translated(exc))
    except BaseException as exc:
        await conn.disconnect(nowait=True)  # a reply may still be on its way: never reuse it
        if isinstance(exc, TimeoutError):
            raise BrokerUnavailable(
                f"Redis sent no reply within {wait_s:g}s (redis.timeout_s)", "TimeoutError"
            ) from exc
        if isinstance(exc, _TRANSLATED):
            raise translated(exc) from exc
        raise
    finally:
        await pool.release(conn)
    return replies
