"""`release_memory` gives freed memory back to the operating system, and `releasing` calls it
after the step it wraps, whether the step returns or raises."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import pytest

from jestflow.transforms import memory

STATM = Path("/proc/self/statm")


def resident_bytes() -> int:
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    memory._TRIM is None or not STATM.exists(), reason="needs glibc's malloc_trim and /proc"
)
def test_release_memory_returns_a_freed_heap() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 * 1024, 2048  # 128 MiB in blocks under the mmap threshold: from the heap
    blocks = [libc.malloc(size) for _ in range(count)]
    above = libc.malloc(size)  # still in use, above them: the heap's top cannot shrink past it
    for block in [*blocks, above]:
        ctypes.memset(block, 1, size)  # touched, so resident
    for block in blocks:
        libc.free(block)
    before = resident_bytes()
    memory.release_memory()
    after = resident_bytes()
    libc.free(above)
    assert before - after > count * size // 2, (before, after)


def test_releasing_releases_after_the_step_returns_or_raises(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append("released"))

    def step(x: int) -> int:
        """Doubles x."""
        calls.append("step")
        if x < 0:
            raise ValueError("negative")
        return 2 * x

    wrapped = memory.releasing(step)
    assert wrapped(3) == 6
    assert calls == ["step", "released"]
    with pytest.raises(ValueError, match="negative"):
        wrapped(-1)
    assert calls == ["step", "released"] * 2
    assert (wrapped.__name__, wrapped.__doc__) == ("step", "Doubles x.")
