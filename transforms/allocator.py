"""Handing freed heap memory back to the operating system during long training runs.

A training step allocates tensors of many sizes (the online student scores r·b texts of varying
lengths, then trains on b of them). glibc's malloc keeps what they free in its heap, in pieces
that later tensors of other sizes fit only partly, so a long run's resident memory creeps up
although nothing stays referenced (issue 17). `malloc_trim(0)` gives every free page of the heap
back to the kernel, in the middle of the heap as well as at its top; the training loops call it
every `TRIM_EVERY` steps, which costs a few milliseconds. Elsewhere than glibc (musl, macOS) it
does nothing. `JESTFLOW_MALLOC_TRIM=0` turns it off (for comparing; bench/memory.py --env).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

TRIM_EVERY = 50  # steps
VARIABLE = "JESTFLOW_MALLOC_TRIM"


@functools.cache
def _malloc_trim():
    if os.environ.get(VARIABLE, "1") == "0":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no C library by that name, or not glibc
        return None


def release_free_memory(step: int) -> bool:
    """After step `step` (0-based), every TRIM_EVERY steps: give the heap's free pages back to
    the kernel. Returns whether it did."""
    trim = _malloc_trim()
    if trim is None or (step + 1) % TRIM_EVERY:
        return False
    trim(0)
    return True
