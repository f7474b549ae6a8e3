"""What the fleet answered to one activation of a version: which live instances loaded it,
which refused it and why, which did not answer in time.

The instances that follow deployments are those both live in the instance registry
(``runtime.queue.instances``: they beat recently) and present in ``{ns}:deploy:status``
(a runtime in deploy mode reports there at its first check). Their answer to *this*
activation is read from their status (:meth:`InstanceStatus.answer`): an old refusal of
the same version, from an earlier activation, is not an answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from runtime.deploy.store import DeployStore, InstanceStatus
from runtime.errors import DeployError
from runtime.queue.instances import live_instances

POLL_S = 0.1

Event = Literal["waiting", "accepted", "refused", "left"]
OnEvent = Callable[[Event, str, str], None]  # (event, instance or count, detail)


class FleetAnswer(msgspec.Struct):
    """The answers to one activation (``--json`` prints it as it is)."""

    version: int
    accepted: list[str] = []
    refused: dict[str, str] = {}  # instance -> why
    pending: list[str] = []  # live, following deployments, no answer within the wait
    left: list[str] = []  # left the registry (stopped, crashed) before answering
    wait_s: float = 0.0
    elapsed_s: float = 0.0  # from the start of the wait to the last answer (or the deadline)

    @property
    def asked(self) -> int:
        return len(self.accepted) + len(self.refused) + len(self.pending) + len(self.left)

    @property
    def is_accepted(self) -> bool:
        """Every instance that follows deployments loaded it (true of an empty fleet)."""
        return not (self.refused or self.pending or self.left)


async def followers(store: DeployStore, window_s: float) -> dict[str, InstanceStatus]:
    """Live instances that follow deployments, with their status."""
    live = {i["id"] for i in await live_instances(store.redis, store.namespace, window_s)}
    return {s.instance: s for s in await store.statuses() if s.instance in live}


async def await_fleet(
    store: DeployStore,
    version: int,
    activation: int,
    *,
    wait_s: float,
    window_s: float,
    on_event: OnEvent = lambda event, who, detail: None,
) -> FleetAnswer:
    """Poll until every instance that follows deployments answered this activation, or
    ``wait_s`` passed. An instance that joins during the wait is asked too; one that
    leaves before answering is reported as such and not waited for."""
    started = time.monotonic()
    deadline = started + wait_s
    answer = FleetAnswer(version, wait_s=wait_s)
    asked: set[str] = set()
    is_first = True
    while True:
        current = await followers(store, window_s)
        asked |= set(current)
        if is_first:
            on_event("waiting", str(len(asked)), f"{wait_s:g}")
            is_first = False
        answered = {*answer.accepted, *answer.refused, *answer.left}
        for instance in sorted(asked - answered):
            status = current.get(instance)
            if status is None:
                answer.left.append(instance)
                on_event("left", instance, "")
            elif (said := status.answer(version, activation)) == "accepted":
                answer.accepted.append(instance)
                on_event("accepted", instance, "")
            elif said == "refused":
                answer.refused[instance] = status.refused[version]
                on_event("refused", instance, status.refused[version])
        unanswered = sorted(asked - {*answer.accepted, *answer.refused, *answer.left})
        if not unanswered or time.monotonic() >= deadline:
            answer.pending = unanswered
            answer.elapsed_s = round(time.monotonic() - started, 3)
            return answer
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


class Confirmation(msgspec.Struct):
    """The fleet's answer to an activation, and what was done about a refusal."""

    fleet: FleetAnswer
    reverted_to: int | None = None  # the version put back because this one was refused
    note: str = ""  # why nothing was put back although the fleet refused


async def confirm(
    store: DeployStore,
    version: int,
    activation: int,
    previous: int | None,
    *,
    wait_s: float,
    window_s: float,
    on_event: OnEvent = lambda event, who, detail: None,
) -> Confirmation:
    """Wait for the fleet's answer; if any instance refused, put ``previous`` back, only
    while the pointer still names ``version`` (a newer deploy made meanwhile stays)."""
    answer = await await_fleet(
        store, version, activation, wait_s=wait_s, window_s=window_s, on_event=on_event
    )
    done = Confirmation(answer)
    if not answer.refused:
        return done
    if previous is None:
        done.note = f"version {version} stays active: there is no earlier version to go back to"
        return done
    if previous == version:
        done.note = f"version {version} stays active: it was active before this command"
        return done
    try:
        put_back = await store.activate(previous, if_active=version)
    except DeployError as exc:
        done.note = f"version {version} stays active: cannot put back version {previous}: {exc}"
        return done
    if put_back.is_done:
        done.reverted_to = previous
    else:
        done.note = (
            f"version {version} was refused, but version {put_back.before} was activated "
            "meanwhile: left as it is"
        )
    return done
