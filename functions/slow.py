"""Sleeps for ``seconds``: longer than its 2 s timeout, it is cancelled and dead-lettered
as ``timeout`` once its attempts are used."""

import asyncio

import msgspec

from runtime import Context, function


class Nap(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float = 1.0


@function(timeout_s=2, max_attempts=2, backoff=(0.1, 1.0))
async def slow(event: Nap, ctx: Context) -> dict[str, float]:
    await asyncio.sleep(event.seconds)
    return {"slept_s": event.seconds}
