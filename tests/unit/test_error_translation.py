"""Which runtime error each redis-py exception becomes at the seam (queue/connection.py)."""

from __future__ import annotations

import pytest
import redis.exceptions as rex

from runtime.errors import BrokerCommandError, BrokerError, BrokerUnavailable, RedisMemoryFull
from runtime.queue.connection import translated


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (rex.ConnectionError("Error 111 connecting"), BrokerUnavailable),
        (rex.TimeoutError("Timeout reading from socket"), BrokerUnavailable),
        (rex.BusyLoadingError("Redis is loading the dataset in memory"), BrokerUnavailable),
        (rex.AuthenticationError("invalid password"), BrokerUnavailable),
        (rex.MaxConnectionsError("No connection available."), BrokerUnavailable),
        (ConnectionResetError(104, "Connection reset by peer"), BrokerUnavailable),
        (rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
         RedisMemoryFull),
        (rex.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
         RedisMemoryFull),
        (rex.NoPermissionError("this user has no permissions"), BrokerCommandError),
        (rex.ReadOnlyError("You can't write against a read only replica."), BrokerCommandError),
        (rex.ResponseError("WRONGTYPE Operation against a key"), BrokerCommandError),
        (rex.DataError("Invalid input of type: 'dict'"), BrokerCommandError),
    ],
)  # fmt: skip
def test_each_redis_py_error_becomes_one_of_the_runtimes(
    exc: Exception, expected: type[BrokerError]
) -> None:
    error = translated(exc)
    assert type(error) is expected
    assert error.__cause__ is exc
    assert str(error) == str(exc)
    assert error.describe() == f"{type(exc).__name__}: {exc}"
