"""Markdown for the results page (bench/results_page.py): numbers formatted from the data, tables
of rows of dicts, and each entry's label. Nothing here holds a measured number."""

from __future__ import annotations

import re

DASH = "—"


def fmt(value, spec: str = "") -> str:
    """One value as a cell. `spec` is a format spec, optionally ending in `×` (appended) or `%`
    (a fraction shown in per cent: `.1%` → `92.5 %`); `,` groups thousands. None is a dash,
    a bool yes or no, a string itself, a [mean, spread] pair `mean ± spread`."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    suffix = ""
    if spec.endswith("×"):
        spec, suffix = spec[:-1], "×"
    if isinstance(value, list | tuple):
        if len(value) == 2 and all(isinstance(v, int | float) for v in value):
            if spec.endswith("%"):
                return f"{number(value[0] * 100, spec[:-1] + 'f')} ± {number(value[1] * 100, spec[:-1] + 'f')} %"
            return f"{number(value[0], spec)} ± {number(value[1], spec)}{suffix}"
        return ", ".join(fmt(v, spec) for v in value)
    if spec.endswith("%"):
        return f"{number(value * 100, spec[:-1] + 'f')} %"
    return number(value, spec) + suffix


def number(value: float, spec: str) -> str:
    """A number by `spec`; an int (a count, or a figure transcribed without decimals) keeps no
    decimals, zero in exponent notation is 0, and a `.1f` value that has two decimals (3.75:
    300 steps over 80) keeps them."""
    if not spec or (isinstance(value, int) and spec[-1] in "fg"):
        return f"{value:,}" if "," in spec or not spec else str(value)
    if value == 0 and spec.endswith("e"):
        return "0"
    if spec.endswith(".1f") and round(value, 2) == value and round(value, 1) != value:
        spec = spec[:-3] + ".2f"
    if spec.endswith("d"):
        return f"{round(value):{spec}}"
    return f"{value:{spec}}"


def cell(text: str) -> str:
    """A table cell's text: a pipe escaped, no line break."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict], columns: list[tuple]) -> str:
    """A Markdown table of `rows` under `columns` ((key, header, spec, align), align `l` or `r`,
    default `r` for numbers); a column no row has a value for is left out. A key may be a
    function of the row."""

    def get(row: dict, key):
        return key(row) if callable(key) else row.get(key)

    shown = [c for c in columns if any(get(r, c[0]) is not None for r in rows)]
    if not shown:
        return ""
    head = "| " + " | ".join(cell(c[1]) for c in shown) + " |"
    rule = "|" + "|".join("---" if align(c, rows) == "l" else "---:" for c in shown) + "|"
    body = [
        "| " + " | ".join(cell(fmt(get(r, c[0]), c[2] if len(c) > 2 else "")) for c in shown) + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *body]) + "\n"


def align(column: tuple, rows: list[dict]) -> str:
    if len(column) > 3:
        return column[3]
    key = column[0]
    values = [key(r) if callable(key) else r.get(key) for r in rows]
    text = [v for v in values if isinstance(v, str)]
    return "l" if len(text) > len(values) / 2 else "r"


def code(text: str) -> str:
    """Inline code, whatever backticks the text holds."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def label(name: str, entry: dict) -> str:
    """The lines that say where an entry's figures come from: command, date, machine, commit,
    its note, and its name in bench/results.json."""
    lines = [
        f"**Command** {code(entry['command'])} · **Entry** {code(name)}  ",
        f"**Date** {entry['date']} · **Machine** {entry['machine']} · "
        f"**Commit** {code(entry['commit'])}",
    ]
    if entry.get("note"):
        lines[-1] += "  "
        lines.append(f"**Note** {entry['note']}")
    return "\n".join(lines) + "\n"


def slug(name: str) -> str:
    """An anchor or file name from an entry's name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def seconds_text(seconds: float) -> str:
    """`7 min 20 s`, `45 s`: a duration as people read it."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f} s"
    return f"{whole // 60} min {whole % 60:02d} s"


def picture(images: dict, name: str, data: bytes, alt: str) -> str:
    """An image of the page (kept in `images` as `name`) and its Markdown."""
    images[name] = data
    return f"![{alt}](results/{name})\n"
