"""The maxmemory-policy judgement (runtime/queue/redis_config.py): pure functions of the
replies, and the watch's log lines on an injected clock."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from runtime.queue.connection import RedisClient
from runtime.queue.redis_config import (
    RedisConfigWatch,
    judge,
    policy_from_config,
    policy_from_info,
)


@pytest.mark.parametrize(
    ("reply", "policy"),
    [
        ({b"maxmemory-policy": b"allkeys-lru"}, "allkeys-lru"),
        ({"maxmemory-policy": "noeviction"}, "noeviction"),
        ([b"maxmemory-policy", b"volatile-ttl"], "volatile-ttl"),
        ({}, None),
        ({b"maxmemory-policy": b"\xff\xfe"}, None),
        ({b"maxmemory-policy": b"x" * 1000}, None),
        ({b"maxmemory-policy": b"rm -rf /"}, None),
        ({b"maxmemory-policy": 3}, None),
        (None, None),
        ("noeviction", None),
    ],
)
def test_config_replies_are_parsed_totally(reply: object, policy: str | None) -> None:
    assert policy_from_config(reply) == policy


@pytest.mark.parametrize(
    ("reply", "policy"),
    [
        ({"maxmemory_policy": "allkeys-lfu", "used_memory": 10}, "allkeys-lfu"),
        ({"used_memory": 10}, None),
        ({"maxmemory_policy": 7}, None),
        ([1, 2], None),
    ],
)
def test_info_replies_are_parsed_totally(reply: object, policy: str | None) -> None:
    assert policy_from_info(reply) == policy


def test_only_noeviction_is_ok_unless_the_risk_is_accepted() -> None:
    assert judge("noeviction", allow_eviction=False).is_ok
    strict = judge("allkeys-lru", allow_eviction=False)
    assert not strict.is_ok and "CONFIG SET maxmemory-policy noeviction" in strict.note
    assert strict.body()["error"] == strict.note and strict.gauge == 0
    relaxed = judge("allkeys-lru", allow_eviction=True)
    assert relaxed.is_ok and "accepted" in relaxed.body()["note"] and relaxed.gauge == 0
    unknown = judge(None, allow_eviction=False)
    assert unknown.is_ok and unknown.gauge == -1


def test_an_evicting_policy_is_logged_at_once_then_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    watch = RedisConfigWatch(
        cast(RedisClient, None), allow_eviction=False, log_every_s=300, clock=lambda: now[0]
    )
    caplog.set_level(logging.DEBUG, logger="runtime.redis_config")

    def errors() -> list[Any]:
        return [r for r in caplog.records if r.levelno == logging.ERROR]

    for t in (0.0, 2.0, 299.0):
        now[0] = t
        watch.observe("allkeys-lru")
    assert len(errors()) == 1
    now[0] = 300.0
    watch.observe("allkeys-lru")
    assert len(errors()) == 2
    watch.observe("noeviction")
    watch.observe("allkeys-lru")  # a change is news: logged at once
    assert len(errors()) == 3


def test_an_accepted_or_unreadable_policy_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = RedisConfigWatch(cast(RedisClient, None), allow_eviction=True, clock=lambda: 0.0)
    caplog.set_level(logging.DEBUG, logger="runtime.redis_config")
    for _ in range(3):
        watch.observe("allkeys-lru")
        watch.observe("allkeys-lru")
    for _ in range(3):
        watch.observe(None)
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
