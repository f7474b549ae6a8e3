"""The leases one worker holds, each a (job id, token) pair: from the claim, handoff or
adoption that leased it until the job's outcome is settled in Redis, renewed meanwhile by
the worker's heartbeat.

Every claim of a job bumps its token, and Redis fences each later write on the token, so
a lease is the pair, never the id alone. A worker holds at most one lease per job: a newer
token for a job it still holds (Redis was out of reach long enough for the lease to expire
and the job to be reclaimed; then this worker claimed it again) supersedes the older one,
whose run is lost. Everything about a run is keyed by its lease, so a late reply about an
old token (a heartbeat, a settle acknowledgement) can only ever touch that old run.
"""

from __future__ import annotations

Lease = tuple[str, str]  # (job id, token)


class HeldLeases:
    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}  # job id -> the token of the lease held

    def __len__(self) -> int:
        return len(self._tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def pairs(self) -> list[Lease]:
        """Every lease held, one per job (as the heartbeat sends them)."""
        return list(self._tokens.items())

    def token_of(self, job_id: str) -> str | None:
        """The token of the lease held on ``job_id``, if any."""
        return self._tokens.get(job_id)

    def holds(self, lease: Lease) -> bool:
        return self._tokens.get(lease[0]) == lease[1]

    def hold(self, lease: Lease) -> str | None:
        """Hold ``lease``; returns the token of the job's older lease it supersedes."""
        job_id, token = lease
        old = self._tokens.get(job_id)
        self._tokens[job_id] = token
        return old if old is not None and old != token else None

    def drop(self, lease: Lease) -> bool:
        """Stop holding ``lease``; a newer lease on the same job is left alone."""
        if self._tokens.get(lease[0]) != lease[1]:
            return False
        del self._tokens[lease[0]]
        return True
