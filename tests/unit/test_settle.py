"""Settle entries encode into exactly the ARGV the old positional ``SettleEntry(op, id,
token, a, b, c)`` produced, value for value and type for type, plus a seventh value ``d``
(the traceback of a retry or dead letter, issue 14); and each entry reports its op letter."""

from __future__ import annotations

from typing import Literal

import msgspec
import pytest

from runtime.jobs.settle import (
    Complete,
    Release,
    RetryLater,
    SendToDlq,
    SettleEntry,
    WorkerCrashed,
    settle_argv,
)


class OldEntry(msgspec.Struct, array_like=True):
    """The positional entry these structs replace, as it was, with its encoding."""

    op: Literal["C", "R", "D", "L", "K"]
    id: str
    token: str
    a: bytes | str = ""
    b: str = ""
    c: str = ""
    d: str = ""

    def argv(self) -> list[bytes | str]:
        return [self.op, self.id, self.token, self.a, self.b, self.c, self.d]


# Each pair: the new entry and the old one the worker built for the same outcome.
PAIRS: list[tuple[SettleEntry, OldEntry]] = [
    (Complete("f.1", "3", b'{"ok":1}'), OldEntry("C", "f.1", "3", b'{"ok":1}')),
    (Complete("f.1", "3", b"null"), OldEntry("C", "f.1", "3", b"null")),
    (
        RetryLater("f.2", "1", 2500, "ValueError: x", "handler_error"),
        OldEntry("R", "f.2", "1", str(round(2.5 * 1000)), "ValueError: x", "handler_error"),
    ),
    (
        RetryLater("f.2", "1", 0, "attempt timed out", "timeout"),
        OldEntry("R", "f.2", "1", "0", "attempt timed out", "timeout"),
    ),
    (
        SendToDlq("f.3", "2", "rejected", "no", is_attempt=True),
        OldEntry("D", "f.3", "2", "rejected", "no", "1"),
    ),
    (
        SendToDlq("f.3", "2", "decode_error", "bad", is_attempt=False),
        OldEntry("D", "f.3", "2", "decode_error", "bad", "0"),
    ),
    (
        RetryLater("f.2", "1", 10, "ValueError: x", "handler_error", traceback="Traceback: x"),
        OldEntry("R", "f.2", "1", "10", "ValueError: x", "handler_error", "Traceback: x"),
    ),
    (
        SendToDlq("f.3", "2", "handler_error", "E", is_attempt=True, traceback="Traceback: y"),
        OldEntry("D", "f.3", "2", "handler_error", "E", "1", "Traceback: y"),
    ),
    (Release("f.4", "9"), OldEntry("L", "f.4", "9")),
    (
        WorkerCrashed("f.5", "4", 3, "handler process died"),
        OldEntry("K", "f.5", "4", str(3), "handler process died"),
    ),
]


def typed(argv: list[bytes | str]) -> list[tuple[type, bytes | str]]:
    return [(type(v), v) for v in argv]


@pytest.mark.parametrize(("entry", "old"), PAIRS, ids=[f"{o.op}-{o.a!r}" for _, o in PAIRS])
def test_each_entry_encodes_as_the_old_positional_entry(entry: SettleEntry, old: OldEntry) -> None:
    assert typed(settle_argv([entry])) == typed(old.argv())


@pytest.mark.parametrize(("entry", "old"), PAIRS, ids=[f"{o.op}-{o.a!r}" for _, o in PAIRS])
def test_each_entry_knows_its_op_letter(entry: SettleEntry, old: OldEntry) -> None:
    assert entry.op == old.op  # the letter the "outcome %s of job %s refused" line prints


def test_a_batch_is_seven_values_per_entry_in_order() -> None:
    entries = [new for new, _ in PAIRS]
    expected = [value for _, old in PAIRS for value in old.argv()]
    argv = settle_argv(entries)
    assert len(argv) == 7 * len(entries)
    assert typed(argv) == typed(expected)


def test_no_entries_encode_to_nothing() -> None:
    assert settle_argv([]) == []


def test_entries_are_values() -> None:
    assert Release("f.1", "2") == Release("f.1", "2")
    assert Release("f.1", "2") != Release("f.1", "3")
    assert len({Release("f.1", "2"), Release("f.1", "2")}) == 1
    with pytest.raises(AttributeError):
        Release("f.1", "2").token = "3"  # type: ignore[misc]
