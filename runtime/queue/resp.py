"""Commands packed as RESP, the Redis protocol, fast.

redis-py's asyncio connection packs every command in Python (an encoder call, type checks
and a growing buffer per argument): for a settle of 256 jobs, or a chunk of enqueues, that
was the largest share of the worker's and the producer's time. Its sync connection uses
hiredis' C packer when hiredis is installed; ``with_hiredis_packing`` gives an asyncio
connection class the same (byte for byte the same output: a unit test holds them equal).
``bulk`` and ``resp`` pack by hand what the bulk enqueue packs once per function
(``EnqueueArgs.resp``).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, DataError

_FAST: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def bulk(arg: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def resp(*args: bytes) -> bytes:
    """One command as RESP: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), b"".join(map(bulk, args)))


class _HiredisPacking:
    """``pack_command`` by hiredis (what redis-py's sync ``HiredisRespSerializer`` does),
    and a write on a connection already closed reported as the broken connection it is."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except RuntimeError as exc:
            if not is_closed_transport(exc):
                raise
            # redis-py has dropped the connection already (its BaseException branch)
            raise ConnectionError("Error writing to Redis: the connection was closed") from exc

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # "SCRIPT LOAD" is two words on the wire, as redis-py
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # bool, None, ...: refused as redis-py's encoder does
            if any(isinstance(a, bytearray | memoryview) for a in args):
                return [hiredis.pack_command(tuple(_plain(a) for a in args))]
            raise DataError(str(exc)) from exc


def is_closed_transport(exc: BaseException) -> bool:
    """uvloop's error for a write on a transport that is already closed (asyncio's own
    loop drops such a write silently). redis-py, written for asyncio, let it through (on
    Python 3.11; 3.12 fails the write earlier, as a ConnectionResetError) as a
    RuntimeError: a supervised loop on a fresh cluster client failed with it once (readyz
    named the task down) where a broken connection is retried."""
    return type(exc) is RuntimeError and "the handler is closed" in str(exc)


def _plain(arg: Any) -> Any:
    return bytes(arg) if isinstance(arg, bytearray | memoryview) else arg


def with_hiredis_packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (a plain, TLS or Unix socket connection) packing its commands with hiredis."""
    fast = _FAST.get(cls)
    if fast is None:
        fast = _FAST[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
    return fast
