"""A process's memory: how much it holds (`memory_mib`, `peak_rss_mib`, from /proc), and handing a
step's freed memory back to the operating system (`releasing`).

A worker runs many steps one after another. The large ones (clustering the copy graph, selecting a
shard group) free what they built when they return, but the process keeps those pages: glibc's
allocator serves arrays up to its mmap threshold from the heap (and raises that threshold, up to
32 MiB, each time a larger block is freed), and Arrow's memory pool keeps freed segments for
reuse. The next step then starts from the last one's peak, and a long run's resident memory
follows its largest step rather than its current one. `releasing` returns those pages after
each step it wraps.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import pyarrow as pa

P = ParamSpec("P")
R = TypeVar("R")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up among the symbols the process already has (no search for
    the C library, which runs `ldconfig`), or None where there is none (macOS, musl, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give the heap's free pages and Arrow's unused pool memory back to the operating system."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)


def releasing(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, then `release_memory` once its own objects are gone (after it returns)."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        finally:
            release_memory()

    return run


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (logged by the training loops, so a
    long run's log shows whether memory grows). On Linux from VmHWM: getrusage's ru_maxrss keeps
    the peak of whatever process forked this one (a 700 MiB launcher hides a 300 MiB run)."""
    return memory_mib()[0]


def memory_mib() -> tuple[float, float | None]:
    """(peak resident memory so far, resident memory now) of this process in MiB, from one read
    of /proc/self/status; now is None without /proc. Beside the peak, now tells memory that stays
    from a rare step that needed more."""
    found = proc_memory_mib()
    if "VmHWM" in found:
        return found["VmHWM"], found.get("VmRSS")
    import resource  # Unix only: imported where /proc is missing, not on import

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 2**10), None  # bytes; KiB


def proc_memory_mib(pid: int | str = "self") -> dict[str, float]:
    """A process's peak (`VmHWM`) and current (`VmRSS`) resident memory in MiB, as its
    /proc/PID/status gives them; empty without /proc or once the process is gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS"):
                    found[name] = int(value.split()[0]) / 2**10  # kB
    except (OSError, IndexError, ValueError):
        return {}
    return found
