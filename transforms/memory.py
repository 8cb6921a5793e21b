"""Handing a step's freed memory back to the operating system.

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
