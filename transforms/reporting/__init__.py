"""What people read: `runs` (`jestflow inspect`, the end-of-run text), `report` (`report.html`),
`tables` (every table, text or HTML), `logs` (logging set-up, Python warnings as one log line,
the one progress helper)."""

from ..lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "compare_runs": "runs",
        "configure": "logs",
        "duration": "logs",
        "html_table": "tables",
        "progress": "logs",
        "render": "report",
        "stats_text": "runs",
        "summarize_run": "runs",
        "text_table": "tables",
    },
)
