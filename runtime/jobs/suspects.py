"""When a job is a suspect: it was in flight during too many crashes of its worker.

The policy is shared by the reclaim script (which spares a suspect that was not executing
alone, see ``runtime/execution/quarantine.py``) and the worker (which runs a suspect
alone), so it lives here, below both.
"""

from __future__ import annotations

SUSPECT_AFTER = 2  # recoveries; fewer when max_recoveries is lower


def suspect_threshold(max_recoveries: int) -> int:
    """Recoveries from which a job runs alone."""
    return max(1, min(SUSPECT_AFTER, max_recoveries))


def is_suspect(recoveries: int, max_recoveries: int) -> bool:
    return recoveries >= suspect_threshold(max_recoveries)
