"""The Lua scripts: one loader for every file in ``runtime/queue/lua/``.

Each script opens with its contract (KEYS, ARGV, reply, why it is safe to run twice).
Scripts receive every key they touch in KEYS, except keys they must derive from a value
they read inside the script (a popped job id, a stored handoff channel, a pruned version):
those are built from a key prefix passed in ARGV, the script's header says which, and the
layout is documented in ``keys.py``.

A script that checks job records has a line ``--! records``: ``lua/_records.lua`` (the
checks and the dead-lettering of a corrupt record, shared) is pasted in its place; one
that takes a selection out of a DLQ has ``--! pick`` (``lua/_pick.lua``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

INCLUDE_RECORDS = "--! records\n"
INCLUDE_PICK = "--! pick\n"


def _read(name: str) -> str:
    return resources.files("runtime.queue").joinpath("lua", f"{name}.lua").read_text("utf-8")


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua`` with its includes (read once per process)."""
    text = _read(name).replace(INCLUDE_RECORDS, _read("_records"), 1)
    return text.replace(INCLUDE_PICK, _read("_pick"), 1) if INCLUDE_PICK in text else text


def register(client: aioredis.Redis, name: str) -> AsyncScript:
    """``lua/<name>.lua`` as a callable script of ``client`` (EVALSHA, loaded on first use)."""
    return client.register_script(source(name))


class ReadOnlyScript:
    """A script that only reads, called with ``EVALSHA_RO``: a Redis user whose key rules are
    read-only (``%R~``) may run it, where Redis 7 checks the keys of ``EVALSHA`` as written
    whatever the script's flags. Loaded with ``SCRIPT LOAD`` on first use, like ``Script``."""

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self._client = client
        self._source = source(name)
        # The id Redis gives the script (EVALSHA): SHA-1 is Redis' choice, not a safeguard.
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await self._client.evalsha_ro(self._sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            await self._client.script_load(self._source)
            return await self._client.evalsha_ro(self._sha, len(keys), *keys, *args)


def register_read_only(client: aioredis.Redis, name: str) -> ReadOnlyScript:
    """``lua/<name>.lua``, a script that only reads, as a callable run with EVALSHA_RO."""
    return ReadOnlyScript(client, name)
