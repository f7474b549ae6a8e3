"""Sharded functions: where each job of a function spread over N hash tags lives.

Shard 0 of function ``fn`` is the function's keys as they always were (``{ns:fn}:...``);
shard k >= 1 uses the hash tag ``{ns:fn#k}`` (``#`` is never part of a function name), so
each shard is a slot of its own and every script still touches one slot. Inside the queue
package a shard is addressed by its *shard name*, ``fn`` or ``fn#k``: ``FunctionKeys`` of
that name are the shard's keys, and the scripts publish it as the function on the wake
channel and in a handoff message (the dispatcher reads the function and the shard back).

Job ids tell their shard: an id the runtime makes for shard k >= 1 ends in ``-k``
(``fn.<hex ms><16 hex>-k``; shard 0's made ids are unchanged). A caller-chosen id goes to
shard ``crc32(id) % N`` (N at enqueue); a reader finds it by trying every shard up to the
highest count ever used (one pipelined round trip). So do made ids that are not found where
their suffix says (a caller may choose an id that looks made).

A lease taken on shard k >= 1 carries its shard in its token, ``<tok>@k`` (shard 0: the
bare token, as before): the token goes wherever the lease goes (settle, heartbeat, extend,
mark_exec), and the broker strips it before Redis sees it.

The highest shard count ever used per function is kept in the namespace zset
``{ns}:shards`` (function -> count, only ever raised: ``ZADD GT``), so workers and admin
tools read every shard below it even after N was lowered: nothing is left behind.
"""

from __future__ import annotations

import re
import zlib

from runtime.function import MAX_SHARDS
from runtime.jobs.records import ClaimedJob

SEPARATOR = "#"
_MADE_RE = re.compile(r"^[0-9a-f]{17,32}(?:-([1-9][0-9]?))?$")


def shard_name(function: str, shard: int) -> str:
    """The name of one shard inside the queue package: ``fn`` for 0, ``fn#k`` after."""
    return function if shard == 0 else f"{function}{SEPARATOR}{shard}"


def split_name(name: str) -> tuple[str, int]:
    """(function, shard) of a shard name; a name that is not one reads as shard 0."""
    function, sep, tail = name.partition(SEPARATOR)
    if sep and tail.isdigit() and 0 < int(tail) < MAX_SHARDS and tail[0] != "0":
        return function, int(tail)
    return name, 0


def made_suffix_shard(suffix: str) -> int | None:
    """The shard a runtime-made id suffix names, None for an id of another form."""
    match = _MADE_RE.match(suffix)
    if match is None:
        return None
    return int(match.group(1) or 0)


def own_id_shard(suffix: str, shards: int) -> int:
    """The shard of a caller-chosen id (or idempotency key): stable across processes."""
    return zlib.crc32(suffix.encode()) % shards if shards > 1 else 0


def tag_token(token: str, shard: int) -> str:
    return token if shard == 0 else f"{token}@{shard}"


def split_token(token: str) -> tuple[str, int]:
    """(Redis token, shard) of a lease token as the broker hands it out."""
    tok, sep, tail = token.partition("@")
    if sep and tail.isdigit() and 0 < int(tail) < MAX_SHARDS:
        return tok, int(tail)
    return token, 0


def share(total: int, shard: int, shards: int) -> int:
    """Shard ``shard``'s part of ``total`` split over ``shards``: total // shards, one more
    for the first total % shards. The parts sum to ``total``; a part may be 0."""
    return total // shards + (1 if shard < total % shards else 0)


def cap_share(cap: int, shard: int, shards: int) -> int:
    """A shard's part of max_in_flight (0: no cap). Never 0 for a capped function: when
    more shards are read than the cap (shards lowered below the cap), each still gets one,
    so up to ``shards`` run at once (docs/architecture.md, "Sharded functions")."""
    return 0 if cap <= 0 else max(1, share(cap, shard, shards))


def rate_share(interval_ms: float, burst: int, shard: int, shards: int) -> tuple[float, int]:
    """A shard's rate limit: the interval times the shard count (so the shards' rates sum
    to the function's), and its part of the burst (at least 1)."""
    if interval_ms <= 0:
        return 0.0, burst
    return interval_ms * shards, max(1, share(burst, shard, shards))


def handed(name: str, job: ClaimedJob) -> str:
    """The function of a handoff message's shard name; tags the job's token with the shard
    (a handed job is leased on that shard)."""
    function, shard = split_name(name)
    job.token = tag_token(job.token, shard)
    return function
