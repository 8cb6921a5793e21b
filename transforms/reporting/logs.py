"""Diagnostics and progress: jestflow logs through the `logging` module (as Beam's workers do),
under the `jestflow` logger, and draws progress bars with one helper.

`configure` is for programs (the CLI, Beam's local worker processes): it shows jestflow's
records at the level asked for as `jestflow: message` on stderr, and other libraries' records
only from ERROR up (Beam's start-up notices about optional Google Cloud clients and its worker
set-up are not about the run), and Python warnings as one such line each (no source line
under it). A library caller keeps Python's defaults: warnings only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

NAME = "jestflow"
LEVEL_VARIABLE = "JESTFLOW_LOG_LEVEL"  # passes the level on to Beam's local worker processes


class _OursAndErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == NAME or record.name.startswith(NAME + ".")
        return ours or record.levelno >= logging.ERROR


class _Stderr(logging.StreamHandler):
    """A handler on whatever `sys.stderr` is when a record is written, not the stream it was made
    with: one handler serves the whole process, and click's CliRunner, pytest's capture and
    `contextlib.redirect_stderr` each swap `sys.stderr` (as logging's own last-resort handler
    does)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it
        pass


def configure(level: str | int = "INFO") -> None:
    """Send jestflow's records at `level` (and everyone's errors) to stderr, once per process."""
    level = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    os.environ[LEVEL_VARIABLE] = level
    logging.getLogger(NAME).setLevel(level)
    root = logging.getLogger()
    if not any(isinstance(f, _OursAndErrors) for h in root.handlers for f in h.filters):
        handler = _Stderr()
        handler.addFilter(_OursAndErrors())
        handler.setFormatter(logging.Formatter("jestflow: %(message)s"))
        root.addHandler(handler)
    warnings.showwarning = _log_warning  # Python's filters still show each one once per place


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (a library's advice, deprecations) as one jestflow log line: no source
    line under it, no file path."""
    logging.getLogger(NAME).warning("%s: %s", category.__name__, message)


# Off a terminal (a log file, nohup, CI, a cluster scheduler) progress is a log line this often.
PROGRESS_SECONDS = float(os.environ.get("JESTFLOW_PROGRESS_SECONDS", "10"))


def progress(
    iterable: Iterable, *, desc: str, examples_per_unit: int | None = None, **options
) -> tqdm | LoggedProgress:
    """Progress over `iterable`: a tqdm bar on a terminal, a log line every PROGRESS_SECONDS
    elsewhere (both only when jestflow's INFO records are shown; otherwise a silent bar, whose
    `set_postfix` does nothing). `examples_per_unit` adds examples/s to the lines."""
    shown = logging.getLogger(NAME).isEnabledFor(logging.INFO)
    if shown and not sys.stderr.isatty():
        return LoggedProgress(iterable, desc=desc, examples_per_unit=examples_per_unit, **options)
    return tqdm(iterable, desc=desc, disable=not shown, **options)


class LoggedProgress:
    """tqdm's interface for a log: iterating yields the items and, every PROGRESS_SECONDS, logs
    `DESC: step N/TOTAL (P %), loss …, X examples/s, ETA …` (the postfix as given)."""

    def __init__(
        self,
        iterable: Iterable,
        *,
        desc: str,
        examples_per_unit: int | None = None,
        unit: str = "it",
        initial: int = 0,
        total: int | None = None,
    ) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.per_unit, self.initial, self.n = examples_per_unit, initial, initial
        self.total = total if total is not None else _length(iterable, initial)
        self.postfix: dict[str, object] = {}

    def set_postfix(self, **values: object) -> None:
        self.postfix = values

    def __iter__(self) -> Iterator:
        began = last = time.monotonic()
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS:
                last = now
                logging.getLogger(NAME).info(self.line(now - began))

    def line(self, seconds: float) -> str:
        done = self.n - self.initial
        rate = done / seconds if seconds > 0 else 0.0
        parts = [f"{self.unit} {self.n}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        parts.append(
            f"{rate * self.per_unit:,.1f} examples/s"
            if self.per_unit
            else f"{rate:.2f} {self.unit}s/s"
        )
        if self.total and rate > 0:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        return f"{self.desc}: {', '.join(parts)}"


def _length(iterable: Iterable, initial: int) -> int | None:
    try:
        return initial + len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def duration(seconds: float) -> str:
    """A duration as people say it: 45 s, 3 min 20 s, 2 h 05 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
