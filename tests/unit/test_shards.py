"""The pure parts of sharded functions (runtime/queue/shards.py)."""

from __future__ import annotations

import pytest

from runtime.errors import HandlerDefinitionError
from runtime.function import parse_options
from runtime.jobs.envelope import new_job_id
from runtime.jobs.records import ClaimedJob
from runtime.queue.shards import (
    cap_share,
    handed,
    made_suffix_shard,
    own_id_shard,
    rate_share,
    shard_name,
    split_name,
    split_token,
    tag_token,
)


def test_shard_names_round_trip_and_shard_zero_keeps_the_name() -> None:
    assert shard_name("fn", 0) == "fn"
    assert shard_name("fn", 3) == "fn#3"
    for shard in range(64):
        assert split_name(shard_name("my-fn", shard)) == ("my-fn", shard)
    for odd in ("fn#", "fn#x", "fn#0", "fn#01", "fn#64", "fn#-1"):
        assert split_name(odd) == (odd, 0)


def test_made_ids_tell_their_shard() -> None:
    for shard in (0, 1, 2, 63):
        job_id = new_job_id("fn", None, shard)
        assert made_suffix_shard(job_id.split(".", 1)[1]) == shard
    assert new_job_id("fn", "mine", 2) == "fn.mine"  # a caller's id is never changed
    assert made_suffix_shard("order-1") is None
    assert made_suffix_shard("abc") is None


def test_caller_ids_hash_to_a_stable_shard() -> None:
    assert own_id_shard("order-1", 1) == 0
    got = {own_id_shard(f"order-{i}", 3) for i in range(100)}
    assert got == {0, 1, 2}
    assert own_id_shard("order-7", 3) == own_id_shard("order-7", 3)


def test_tokens_carry_the_shard() -> None:
    assert tag_token("5", 0) == "5"
    assert split_token(tag_token("5", 2)) == ("5", 2)
    assert split_token("5") == ("5", 0)
    assert split_token("5@x") == ("5@x", 0)
    job = ClaimedJob("fn.a", "1", b"", 0, 0, 0)
    assert handed("fn#2", job) == "fn" and job.token == "1@2"


@pytest.mark.parametrize("cap", [3, 4, 5, 10, 64])
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_the_cap_split_sums_to_the_cap(cap: int, shards: int) -> None:
    parts = [cap_share(cap, k, shards) for k in range(shards)]
    assert sum(parts) == cap and min(parts) >= 1 and max(parts) - min(parts) <= 1
    assert cap_share(0, 1, shards) == 0  # no cap stays no cap


def test_the_rate_split_sums_to_the_rate() -> None:
    shards = 3
    parts = [rate_share(100.0, 7, k, shards) for k in range(shards)]
    assert sum(1 / interval for interval, _ in parts) == pytest.approx(1 / 100.0)
    assert sum(burst for _, burst in parts) == 7
    assert rate_share(0.0, 5, 1, 3) == (0.0, 5)


def test_a_cap_below_the_shards_is_refused() -> None:
    with pytest.raises(HandlerDefinitionError, match="max_in_flight >= shards"):
        parse_options({"shards": 4, "max_in_flight": 3}, "here")
    assert parse_options({"shards": 4, "max_in_flight": 4}, "here").shards == 4
    with pytest.raises(HandlerDefinitionError):
        parse_options({"shards": 65}, "here")
