"""The Lua scripts: one loader for every file in ``runtime/queue/lua/``.

Each script opens with its contract (KEYS, ARGV, reply, why it is safe to run twice).
Scripts receive every key they touch in KEYS, except keys they must derive from a value
they read inside the script (a popped job id, a stored handoff channel, a pruned version):
those are built from a key prefix passed in ARGV, the script's header says which, and the
layout is documented in ``keys.py``.

A script that checks job records has a line ``--! records``: ``lua/_records.lua`` (the
checks and the dead-lettering of a corrupt record, shared) is pasted in its place; one
that takes a selection out of a DLQ has ``--! pick`` (``lua/_pick.lua``).

A script announces on a channel with ``publish(channel, message)``, never with
``redis.call('PUBLISH', ...)``: the loader defines ``publish`` for the mode, on the
script's first line (its second, after a ``#!lua`` flags line), so Redis's line numbers in
errors stay those of the file. On one Redis it is ``PUBLISH``, unchanged. On Redis Cluster
it is ``SPUBLISH`` on the channel moved into the script's own slot: the channel's hash tag
becomes that of ``KEYS[1]`` (``{ns}:wake`` from a script of function ``fn`` is sent on
``{ns:fn}:wake``, see ``keys.shard_channel``), because a script may only reach its own
slot, and so a message travels to one shard (``sharded_pubsub.py``).
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
PUBLISH = "local function publish(c, m) return redis.call('PUBLISH', c, m) end "
SPUBLISH = (
    "local function publish(c, m) return redis.call('SPUBLISH', "
    "string.match(KEYS[1], '^{[^}]*}') .. string.match(c, '^{[^}]*}(.*)$'), m) end "
)


def _read(name: str) -> str:
    return resources.files("runtime.queue").joinpath("lua", f"{name}.lua").read_text("utf-8")


@cache
def source(name: str, *, is_sharded: bool = False) -> str:
    """The text of ``lua/<name>.lua`` with its includes (read once per process), for one
    Redis or (``is_sharded``) for Redis Cluster."""
    text = _read(name).replace(INCLUDE_RECORDS, _read("_records"), 1)
    if INCLUDE_PICK in text:
        text = text.replace(INCLUDE_PICK, _read("_pick"), 1)
    if "publish(" in text:
        prefix = SPUBLISH if is_sharded else PUBLISH
        if text.startswith("#!"):  # the flags line must stay first: publish goes on line 2
            flags, _, rest = text.partition("\n")
            text = flags + "\n" + prefix + rest
        else:
            text = prefix + text  # on line 1: a comment there
    return text


def _is_sharded(client: Any) -> bool:
    return bool(getattr(client, "is_cluster", False))


def register(client: aioredis.Redis, name: str) -> AsyncScript:
    """``lua/<name>.lua`` as a callable script of ``client`` (EVALSHA, loaded on first use)."""
    return client.register_script(source(name, is_sharded=_is_sharded(client)))


class ReadOnlyScript:
    """A script that only reads, called with ``EVALSHA_RO``: a Redis user whose key rules are
    read-only (``%R~``) may run it, where Redis 7 checks the keys of ``EVALSHA`` as written
    whatever the script's flags. Loaded with ``SCRIPT LOAD`` on first use, like ``Script``."""

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self._client = client
        self._source = source(name, is_sharded=_is_sharded(client))
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
