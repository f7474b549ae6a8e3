"""Fails its first ``failures`` attempts, then succeeds: shows retries with backoff."""

import msgspec

from runtime import Context, Retry, function


class Flaky(msgspec.Struct, forbid_unknown_fields=True):
    failures: int = 2
    message: str = "ok"


@function(max_attempts=5, backoff=(0.2, 5.0), timeout_s=5)
async def flaky(event: Flaky, ctx: Context) -> dict[str, object]:
    if ctx.attempt <= event.failures:
        raise Retry(reason=f"planned failure {ctx.attempt} of {event.failures}")
    return {"message": event.message, "attempt": ctx.attempt}
