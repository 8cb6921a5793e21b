"""Diagnostics and progress: jestflow logs through the `logging` module (as Beam's workers do),
under the `jestflow` logger, and draws progress bars with one helper.

`configure` is for programs (the CLI, Beam's local worker processes): it shows jestflow's
records at the level asked for as `jestflow: message` on stderr, and other libraries' records
only from ERROR up (Beam's start-up notices about optional Google Cloud clients and its worker
set-up are not about the run). A library caller keeps Python's defaults: warnings only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

NAME = "jestflow"
LEVEL_VARIABLE = "JESTFLOW_LOG_LEVEL"  # passes the level on to Beam's local worker processes


class _OursAndErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == NAME or record.name.startswith(NAME + ".")
        return ours or record.levelno >= logging.ERROR


def configure(level: str | int = "INFO") -> None:
    """Send jestflow's records at `level` (and everyone's errors) to stderr, once per process."""
    level = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    os.environ[LEVEL_VARIABLE] = level
    logging.getLogger(NAME).setLevel(level)
    root = logging.getLogger()
    if not any(isinstance(f, _OursAndErrors) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(_OursAndErrors())
        handler.setFormatter(logging.Formatter("jestflow: %(message)s"))
        root.addHandler(handler)


def progress(iterable: Iterable, *, desc: str, **options) -> tqdm:
    """A tqdm bar over `iterable` on a terminal when jestflow's INFO records are shown;
    otherwise a silent one (its `set_postfix` does nothing)."""
    shown = sys.stderr.isatty() and logging.getLogger(NAME).isEnabledFor(logging.INFO)
    return tqdm(iterable, desc=desc, disable=not shown, **options)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (logged by the training loops, so a
    long run's log shows whether memory grows). On Linux from VmHWM: getrusage's ru_maxrss keeps
    the peak of whatever process forked this one (a 700 MiB launcher hides a 300 MiB run)."""
    return memory_mib()[0]


def memory_mib() -> tuple[float, float | None]:
    """(peak resident memory so far, resident memory now) of this process in MiB, from one read
    of /proc/self/status; now is None without /proc. Beside the peak, now tells memory that stays
    from a rare step that needed more."""
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS"):
                    found[name] = int(value.split()[0]) / 2**10  # kB
    except (OSError, IndexError, ValueError):
        found = {}
    if "VmHWM" in found:
        return found["VmHWM"], found.get("VmRSS")
    import resource  # Unix only: imported where /proc is missing, not on import

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 2**10), None  # bytes; KiB
