"""The smallest handler: a typed payload in, a JSON object out."""

import msgspec

from runtime import Context, function


class Greet(msgspec.Struct, forbid_unknown_fields=True):
    name: str


@function(concurrency=8, max_in_flight=32, timeout_s=10, max_attempts=3)
async def hello(event: Greet, ctx: Context) -> dict[str, str]:
    ctx.log.info("greeting someone")  # ids of the job and trace are added; never the payload
    return {"greeting": f"Hello, {event.name}"}
