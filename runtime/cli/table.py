"""The one way the ``runtime`` command prints a table for a person: columns padded to their
widest cell, two spaces between them, no trailing spaces."""

from __future__ import annotations

from collections.abc import Sequence


def table_lines(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """One line per row (the first row is the header); columns whose index is in ``right``
    are right-aligned (counts, rates), the others left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = zip(row, widths, strict=True)
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(cells)]
        lines.append("  ".join(padded).rstrip())
    return lines


def table_text(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """The lines of :func:`table_lines` as one text, without a final newline."""
    return "\n".join(table_lines(rows, right))
