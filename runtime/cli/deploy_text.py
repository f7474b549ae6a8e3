"""How the deployment commands print for a person: the functions ``deploy`` published,
the fleet's answer to it (and to ``rollback``), and the versions ``deployments`` lists.
Pure functions of the manifest's entries, of :class:`FleetAnswer` and of
:class:`VersionRow` (the ``--json`` output is those as they are), testable without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from runtime.cli.table import table_text
from runtime.deploy.bundle import FunctionEntry
from runtime.deploy.fleet import Confirmation, Event, FleetAnswer


class VersionRow(msgspec.Struct):
    """One version as ``runtime deployments`` lists it (``--json``: as it is)."""

    version: int
    is_active: bool
    signature: str  # "ok", "INVALID", or "unverified" (no key here)
    digest: str | None
    created_by: str | None
    created_at_ms: int | None
    message: str | None
    functions: list[str]
    running_on: list[str]  # live instances that run it
    refused_by: dict[str, str]  # live instance -> why


def functions_table(functions: Sequence[FunctionEntry]) -> str:
    """What ``runtime deploy`` published: each function and its effective limits."""
    header = ("function", "executor", "concurrency", "max_in_flight", "timeout_s",
              "max_attempts", "priority", "source")  # fmt: skip
    rows = [
        (f.name, f.executor, str(f.options.concurrency), str(f.options.max_in_flight or "-"),
         f"{f.options.timeout_s:g}", str(f.options.max_attempts), f.options.priority, f.source)
        for f in functions
    ]  # fmt: skip
    return table_text([header, *rows])


def deployments_text(rows: Sequence[VersionRow], *, has_key: bool) -> str:
    """The versions, newest first, then their messages and the instances that refused one."""
    header = ("version", "active", "digest", "created (UTC)", "by", "signature", "instances",
              "functions")  # fmt: skip
    lines = []
    for r in rows:
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at_ms / 1000))
            if r.created_at_ms
            else "?"
        )
        instances = f"{len(r.running_on)} running"
        if r.refused_by:
            instances += f", {len(r.refused_by)} refused"
        lines.append((
            str(r.version), "*" if r.is_active else "", (r.digest or "?")[:12], when,
            r.created_by or "?", r.signature, instances, ", ".join(r.functions),
        ))  # fmt: skip
    text = table_text([header, *lines])
    notes = [f"  v{r.version} {r.message}" for r in rows if r.message]
    if notes:
        text += "\n\nmessages:\n" + "\n".join(notes)
    refusals = [
        f"  v{r.version} on {instance}: {why}"
        for r in rows
        for instance, why in sorted(r.refused_by.items())
    ]
    if refusals:
        text += "\n\nrefused by instances (they keep running their previous version):\n"
        text += "\n".join(refusals)
    if not has_key:
        text += "\n\n(no deploy.signing_key here: signatures not checked)"
    return text


def progress_line(event: Event, who: str, detail: str) -> str:
    """One line on stderr while ``deploy``/``rollback`` waits for the fleet."""
    if event == "waiting":
        return f"waiting up to {detail} s for {who} instance(s) to load it ..."
    if event == "refused":
        return f"  {who}: refused: {detail.splitlines()[0] if detail else '?'}"
    return f"  {who}: {event}"


def fleet_text(answer: FleetAnswer) -> str:
    """``2 of 2 accepted``, or who refused and why, who did not answer, who left."""
    if answer.asked == 0:
        return (
            f"no live instance follows deployments: nobody confirmed version {answer.version} "
            "(`runtime serve` with deploy.signing_key set and no --functions follows them)"
        )
    lines = [
        f"{len(answer.accepted)} of {answer.asked} accepted version {answer.version} "
        f"(answers in {answer.elapsed_s:.2f} s)"
    ]
    for instance, why in sorted(answer.refused.items()):
        lines.append(f"  {instance} refused: {why}")
    if answer.pending:
        lines.append(
            f"did not answer within {answer.wait_s:g} s (still loading, or stuck? "
            f"`runtime deployments` shows it later): {', '.join(answer.pending)}"
        )
    if answer.left:
        lines.append(f"left the fleet before answering: {', '.join(answer.left)}")
    return "\n".join(lines)


def confirmation_text(confirmed: Confirmation) -> str:
    """The fleet's answer, then the version put back (or why none was)."""
    out = fleet_text(confirmed.fleet)
    version = confirmed.fleet.version
    if confirmed.reverted_to is not None:
        out += (
            f"\nversion {version} was refused: version {confirmed.reverted_to} is active again "
            f"(runtimes that loaded {version} switch back)"
        )
    elif confirmed.note:
        out += f"\n{confirmed.note}"
    return out
