"""What people read: `runs` (`jestflow inspect`, the end-of-run text), `report` (`report.html`),
`tables` (every table, text or HTML), `logs` (logging set-up, Python warnings as one log line,
the one progress helper)."""

from .logs import configure, duration, progress
from .report import render
from .runs import compare_runs, stats_text, summarize_run
from .tables import html_table, text_table

__all__ = [
    "compare_runs",
    "configure",
    "duration",
    "html_table",
    "progress",
    "render",
    "stats_text",
    "summarize_run",
    "text_table",
]
