"""Checks shared by the corruption tests: where every job of a function is, by Redis's own
account (no runtime code in the way, so a bug in the reader cannot hide one in the writer)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# The ids the runtime makes (envelope.new_job_id); any other key is represented in the DLQ by
# a dead record under a derived id holding it in `raw_id` (lua/_records.lua).
VALID_ID = re.compile(rb"[A-Za-z0-9_\-]+\.[A-Za-z0-9_.:\-]+")

# Where a job in each state must be listed, and nowhere else.
PLACE_OF_STATE = {
    "queued": "lanes",
    "delayed": "delayed",
    "running": "leased",
    "dead": "dlq",
    "completed": None,
}


async def job_places(redis: Any, namespace: str, function: str) -> list[str]:
    """Every problem found: an id listed in no place its state allows, in two places, or a
    listed id with no job hash. Empty when every job is in exactly one place."""
    prefix = f"{{{namespace}:{function}}}:"
    listed: Counter[tuple[str, bytes]] = Counter()
    for lane in ("high", "default", "low"):
        for job_id in await redis.lrange(f"{prefix}ready:{lane}", 0, -1):
            listed["lanes", job_id] += 1
    for job_id in await redis.zrange(f"{prefix}delayed", 0, -1):
        listed["delayed", job_id] += 1
    for job_id in await redis.zrange(f"{prefix}leased", 0, -1):
        listed["leased", job_id] += 1
    for job_id in await redis.lrange(f"{prefix}dlq", 0, -1):
        listed["dlq", job_id] += 1
    problems = []
    seen: set[bytes] = set()
    stand_ins = set()  # raw ids that a dead record under a derived id stands for
    for (place, job_id), _ in listed.items():
        raw = (
            await redis.hget(f"{prefix}job:".encode() + job_id, "raw_id")
            if place == "dlq"
            else None
        )
        if raw is not None:
            stand_ins.add(raw)
    async for key in redis.scan_iter(match=f"{prefix}job:*"):
        job_id = key[len(prefix) + 4 :]
        if await redis.type(key) != b"hash" or not VALID_ID.fullmatch(job_id):
            if job_id not in stand_ins and job_id not in {i for _, i in listed}:
                continue  # never listed anywhere: not a job the runtime was given
            if job_id not in stand_ins:
                problems.append(f"{job_id!r}: a bad key listed, with no dead record for it")
            continue
        seen.add(job_id)
        state = (await redis.hget(key, "state") or b"").decode("utf-8", "replace")
        want = PLACE_OF_STATE.get(state, "?")
        places = {p: n for (p, i), n in listed.items() if i == job_id}
        if want == "?":
            problems.append(f"{job_id!r}: unknown state {state!r}")
        elif want is None and places:
            problems.append(f"{job_id!r}: {state} but listed in {places}")
        elif want is not None and places != {want: 1}:
            problems.append(f"{job_id!r}: {state} but listed in {places or 'no place'}")
    for (place, job_id), _ in listed.items():
        if job_id not in seen and not (place == "dlq" and job_id in stand_ins):
            problems.append(f"{job_id!r}: listed in {place} with no job hash")
    return problems
