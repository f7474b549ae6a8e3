"""Inputs the runtime refused: a malformed pub/sub message, Redis reply, stats value,
deploy pointer. Each is skipped by its reader; ``reject`` counts it
(``runtime_inputs_rejected_total{source}``) and logs it, at most one line per source every
``QUIET_S`` (with how many more were refused meanwhile), so a flood of bad input cannot
flood the log.

``source`` is a fixed name chosen by the reader (``wake_channel``, ``done_channel``,
``handoff_message``, ``deploy_pointer``, ...), never a value read from the input.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger("runtime.rejects")

QUIET_S = 5.0
MAX_SAMPLE_CHARS = 120

REJECTED: Counter[str] = Counter()  # process-wide, for /metrics
_last_logged: dict[str, float] = {}
_unlogged: Counter[str] = Counter()


def sample(data: object) -> str:
    """A short, printable excerpt of a bad input for a log line (never the whole input)."""
    text = repr(data)
    return text if len(text) <= MAX_SAMPLE_CHARS else text[:MAX_SAMPLE_CHARS] + "…"


def reject(source: str, problem: str) -> None:
    """Count one refused input from ``source`` and log why, rate-limited per source."""
    REJECTED[source] += 1
    now = time.monotonic()
    if now - _last_logged.get(source, -QUIET_S) < QUIET_S:
        _unlogged[source] += 1
        return
    _last_logged[source] = now
    more = _unlogged.pop(source, 0)
    suffix = f" ({more} more refused since the last line)" if more else ""
    log.warning("skipped a malformed %s: %s%s", source.replace("_", " "), problem, suffix)
