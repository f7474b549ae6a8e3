"""After a broker error, the settler retries its batch with backoff; on a Redis Cluster the
backoff stays short (0.2 s), because a failover ends with no event the worker could wait
for: the promoted replica just starts answering. With the single-node cap (2 s), a batch
waited up to 2 s after the promotion: 1.4-1.7 s of the 4-6 s failover outages measured
(kill -> first job done, tests/cluster/failover.py) were that sleep."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

from runtime.errors import BrokerUnavailable
from runtime.execution import settler as settler_module
from runtime.execution.settler import Settler
from runtime.jobs.settle import Release


class FlakyBroker:
    """Refuses ``failures`` settles (a failover in progress), then answers each entry 1."""

    def __init__(self, failures: int, *, is_cluster: bool) -> None:
        self.failures = failures
        self.redis = types.SimpleNamespace(is_cluster=is_cluster)

    async def settle(self, function: str, batch: list[Any]) -> list[int]:
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("Error 111 connecting to 127.0.0.1:7000", "EVALSHA")
        return [1] * len(batch)


async def _retry_delays(monkeypatch: pytest.MonkeyPatch, *, is_cluster: bool) -> list[float]:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    fake_asyncio = types.SimpleNamespace(**{n: getattr(asyncio, n) for n in dir(asyncio)})
    fake_asyncio.sleep = sleep
    monkeypatch.setattr(settler_module, "asyncio", fake_asyncio)
    held = types.SimpleNamespace(drop=lambda lease: None, token_of=lambda job: None)
    outages = types.SimpleNamespace(note=lambda what, exc: None)
    settler = Settler(
        "f",
        Any,  # type: ignore[arg-type]  # options: not read by a flush
        FlakyBroker(12, is_cluster=is_cluster),  # type: ignore[arg-type]
        held=held,  # type: ignore[arg-type]
        counters=types.SimpleNamespace(),  # type: ignore[arg-type]
        metrics=None,
        wake=asyncio.Event(),
        outages=outages,  # type: ignore[arg-type]
    )
    settler.settle(Release("f.1", "1"))
    await settler.flushed(5.0)
    return delays


async def test_settle_retries_stay_short_on_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    delays = await _retry_delays(monkeypatch, is_cluster=True)
    assert len(delays) == 12
    assert max(delays) <= 0.2


async def test_settle_retries_back_off_to_two_seconds_on_one_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays = await _retry_delays(monkeypatch, is_cluster=False)
    assert len(delays) == 12
    assert max(delays) == 2.0
