"""Tables for people: aligned text for the terminal (the CLI's summaries, `jestflow inspect`, the
demo's comparison, the benchmarks) and HTML for `report.html`. Every table jestflow prints or
renders goes through here."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def text_table(
    rows: Sequence[Sequence[Any]], *, header: Sequence[Any] | None = None, align: str = ""
) -> str:
    """Rows as columns two spaces apart. `align` has an `l` or `r` per column (default: the first
    column left, the others right); a missing cell is blank."""
    lines = [[str(cell) for cell in row] for row in ([header] if header else []) + list(rows)]
    if not lines:
        return ""
    n = max(len(line) for line in lines)
    lines = [line + [""] * (n - len(line)) for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(n)]
    align = (align or "l" + "r" * (n - 1))[:n].ljust(n, "r")
    out = []
    for line in lines:
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(line, widths, align, strict=True)
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def html_table(rows: Sequence[Sequence[Any]], header: Sequence[Any]) -> str:
    """Rows as an HTML table, every cell escaped."""
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"
