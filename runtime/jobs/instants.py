"""Instants a person types (``--since 1h``, ``?since=2026-12-02T12:00:00Z``) as Redis ms."""

from __future__ import annotations

import datetime
import re
import time

_AGE = re.compile(r"([0-9]{1,9})(s|m|h|d)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def instant_ms(text: str, now_s: float | None = None) -> int:
    """An instant as Redis ms: unix seconds, an ISO 8601 instant (UTC unless it says),
    or an age ago (``90s``, ``15m``, ``1h``, ``2d``). ValueError if it is none of these."""
    now_s = time.time() if now_s is None else now_s
    text = text.strip()
    age = _AGE.fullmatch(text)
    if age is not None:
        return max(0, round((now_s - int(age[1]) * _UNIT_S[age[2]]) * 1000))
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text[:40]!r} is not unix seconds, an ISO 8601 instant or an age (15m, 1h, 2d)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        seconds = moment.timestamp()
    if not 0 <= seconds < 10**11:  # NaN fails too
        raise ValueError(f"{text[:40]!r} is not an instant from 1970 to 5138")
    return round(seconds * 1000)
