"""A worker's leases are (job id, token) pairs: at most one per job, a newer token
supersedes an older one, and dropping an old lease never touches a newer one."""

from __future__ import annotations

import pytest

from runtime.errors import BrokerCommandError, BrokerUnavailable, RedisMemoryFull
from runtime.execution.held import HeldLeases
from runtime.execution.outages import kind_of


def test_a_newer_token_supersedes_the_older_lease_of_the_same_job() -> None:
    held = HeldLeases()
    assert held.hold(("a", "1")) is None
    assert held.hold(("b", "1")) is None
    assert held.hold(("a", "2")) == "1"
    assert held.pairs() == [("a", "2"), ("b", "1")]
    assert held.holds(("a", "2")) and not held.holds(("a", "1"))


def test_holding_the_same_lease_again_supersedes_nothing() -> None:
    held = HeldLeases()
    held.hold(("a", "3"))
    assert held.hold(("a", "3")) is None
    assert len(held) == 1


def test_dropping_an_old_lease_leaves_the_newer_one() -> None:
    held = HeldLeases()
    held.hold(("a", "1"))
    held.hold(("a", "2"))
    assert not held.drop(("a", "1"))
    assert held.token_of("a") == "2"
    assert held.drop(("a", "2"))
    assert not held and held.token_of("a") is None


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BrokerUnavailable("Connection refused"), "Redis unavailable"),
        (RedisMemoryFull("OOM command not allowed"), "Redis out of memory"),
        (BrokerCommandError("NOPERM this user has no permissions"), "Redis refused a command"),
        (ValueError("bad reply"), "unexpected error"),
    ],
)
def test_the_outage_log_names_the_kind_of_failure(exc: Exception, kind: str) -> None:
    assert kind_of(exc) == kind
