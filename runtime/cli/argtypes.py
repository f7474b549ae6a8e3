"""The values the command's flags take beyond plain words: durations (``--older-than 2h``),
rates (``--rate 50/s``), bounded whole numbers, seconds (above zero, or from zero) and a
refresh period. Every numeric flag takes one of these, so ``--timeout -5`` is refused.

Each is a parser raising ValueError that names the value and the accepted forms;
:func:`argparse_type` makes it an argparse ``type=``, so a bad value is an argparse error
(usage, the message, exit status 2).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(s|sec|m|min|h|hour)")
_RATE_UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}
DURATION_FORMS = "a duration like 90s, 30m, 2h, 7d or 1h30m (units ms, s, m, h, d, w)"
RATE_FORMS = "a rate like 50/s, 300/m or 1000/h"
MIN_INTERVAL_S = 0.05


def parse_duration(text: str) -> float:
    """``"1h30m"`` → 5400.0 seconds; ValueError naming the value and the accepted forms."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact) != "":
        raise ValueError(f"invalid duration {text!r}: expected {DURATION_FORMS}")
    return sum(float(n) * _DURATION_UNITS_S[u] for n, u in _DURATION_RE.findall(compact))


def parse_rate(text: str) -> float:
    """``"300/m"`` → 5.0 per second; ValueError naming the value and the accepted forms."""
    match = _RATE_RE.fullmatch(text.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"invalid rate {text!r}: expected {RATE_FORMS}, above zero")
    return float(match[1]) / _RATE_UNITS_S[match[2]]


def parse_interval(text: str) -> float:
    """A refresh period in seconds, at least ``MIN_INTERVAL_S``."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= MIN_INTERVAL_S:  # also refuses nan
        raise ValueError(f"{text!r} must be a number of seconds, at least {MIN_INTERVAL_S}")
    return value


MAX_SECONDS = 10**9  # about 31 years: anything longer is a typo, and asyncio cannot wait it


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # nan compares unequal to itself: refused


def positive_seconds(text: str) -> float:
    """A number of seconds above zero (``--timeout``)."""
    return _checked_seconds(text, above_zero=True)


def seconds_from_zero(text: str) -> float:
    """A number of seconds, 0 or more (``--delay``, ``--wait``)."""
    return _checked_seconds(text, above_zero=False)


def _checked_seconds(text: str, *, above_zero: bool) -> float:
    value = _seconds(text)
    if value is not None and value > MAX_SECONDS:
        raise ValueError(f"{text!r} is too long: at most {MAX_SECONDS} seconds")
    if value is None or value < 0 or (above_zero and value == 0):
        rule = "above 0" if above_zero else "0 or more"
        raise ValueError(f"{text!r} must be a number of seconds, {rule}")
    return value


def whole_number_in(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``low`` to ``high``, both included."""

    def int_in(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"{text!r} must be a whole number from {low} to {high}")
        return value

    return int_in


def argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError: argparse prints the parser's own
    message (not its generic "invalid value") and exits with status 2."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert
