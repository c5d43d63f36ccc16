"""Markdown tables: the one helper every report, card and results page writes them with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals, None as ``n/a``, ``|`` escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3,
          align: Sequence[str] | None = None) -> str:
    """A Markdown table: ``headers``, then one line per row (each as long as ``headers``).

    ``align``: per column ``"l"`` or ``"r"`` (default: left). Raises ``ValueError`` for a row
    of the wrong length, so a table is never silently shifted.
    """
    headers = [cell(h) for h in headers]
    marks = ["---:" if a == "r" else "---" for a in (align or ["l"] * len(headers))]
    if len(marks) != len(headers):
        raise ValueError(f"align has {len(marks)} entries for {len(headers)} columns")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks) + "|"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"row {i} has {len(row)} cells for {len(headers)} columns")
        lines.append("| " + " | ".join(cell(v, digits) for v in row) + " |")
    return "\n".join(lines)


__all__ = ["cell", "table"]
