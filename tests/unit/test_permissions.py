"""A Redis ACL refusal becomes one line naming what was refused and the rule to add, for
each way Redis 7.0 words it (replies copied from redis-server 7.0.15, as redis-py passes
them on: without the ``NOPERM`` prefix)."""

from __future__ import annotations

import hashlib

import pytest
import redis.exceptions

from runtime.errors import BrokerPermissionError
from runtime.queue import scripts
from runtime.queue.connection import translated
from runtime.queue.permissions import permission_error

RUN = "this user has no permissions to run the '{}' command"
KEYS = "this user has no permissions to access one of the keys used as arguments"
CHANNELS = "this user has no permissions to access one of the channels used as arguments"


def refused(message: str, *command: object) -> BrokerPermissionError:
    error = translated(redis.exceptions.NoPermissionError(message), command)
    assert isinstance(error, BrokerPermissionError)
    assert "\n" not in str(error) and "docs/security.md" in str(error)
    return error


def test_a_command_is_named_with_its_rule() -> None:
    error = refused(RUN.format("incrby"), "INCRBY", "{rt}:deploy:seq", 1)
    assert (error.refused, error.rule) == ("incrby", "+incrby")
    assert "'incrby'" in str(error) and "'+incrby'" in str(error)


def test_a_subcommand_keeps_its_name() -> None:
    assert refused(RUN.format("config|get"), "CONFIG", "GET", "x").rule == "+config|get"


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("{rt:echo}:job:echo.1", "~{rt:*}:*"),
        ("{rt}:deploy:seq", "~{rt}:*"),
        ("{shop}:instances", "~{shop}:*"),
        ("plain", "~plain"),
    ],
)
def test_a_key_is_named_with_the_pattern_that_covers_it(key: str, rule: str) -> None:
    error = refused(KEYS, b"HGET", key.encode(), b"env")
    assert (error.refused, error.rule) == (key, rule)
    assert f"key '{key}' of 'hget'" in str(error)


def test_a_channel_is_named_with_the_namespace_channel_rule() -> None:
    error = refused(CHANNELS, "SUBSCRIBE", "{rt}:wake", "{rt}:handoff:h:1:1")
    assert error.rule == "&{rt}:*"
    assert "{rt}:wake" in str(error)


def test_a_function_channel_on_a_cluster_is_named_with_the_functions_rule() -> None:
    error = refused(CHANNELS, "SSUBSCRIBE", "{rt:echo#1}:wake", "{rt:echo#1}:handoff:h:1:1")
    assert error.rule == "&{rt:*}:*"


def test_a_refusal_inside_a_cluster_script_names_the_script() -> None:
    sha = hashlib.sha1(scripts.source("claim", is_sharded=True).encode()).hexdigest()
    message = f"The user executing the script can't run this command script: {sha}, on @x:1."
    error = translated(redis.exceptions.ResponseError(message), ("EVALSHA", sha, 1, "{rt:e}:x"))
    assert "script 'claim'" in str(error)


def test_a_refusal_inside_a_script_names_the_script() -> None:
    sha = hashlib.sha1(scripts.source("claim").encode()).hexdigest()  # what EVALSHA sends
    message = (
        "The user executing the script can't run this command or subcommand script: "
        f"{sha}, on @user_script:42."
    )
    error = translated(redis.exceptions.ResponseError(message), ("EVALSHA", sha, 1, "{rt:echo}:x"))
    assert isinstance(error, BrokerPermissionError)
    assert "script 'claim'" in str(error) and "~{rt:*}:*" in str(error)


def test_a_pipeline_refusal_names_the_command_from_redis_pys_message() -> None:
    message = (
        f"Command # 2 (INCRBY {{rt}}:deploy:seq 1) of pipeline caused error: {RUN.format('incrby')}"
    )
    error = permission_error(message, (), "NoPermissionError")
    assert error is not None and error.rule == "+incrby"


def test_other_errors_are_not_permission_errors() -> None:
    assert permission_error("WRONGTYPE Operation against a key", ("GET", "k"), "x") is None
    error = translated(redis.exceptions.ResponseError("WRONGTYPE Operation"), ("GET", "k"))
    assert not isinstance(error, BrokerPermissionError)
