"""Giving the heap's free pages back during long runs (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from jestflow.transforms import allocator

SCRIPT = """
from jestflow.transforms.allocator import release_free_memory

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024

blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MiB of heap, below the mmap threshold
last = blocks[-1]  # keeps the top of the heap in use: free() alone cannot shrink it
del blocks
freed = rss_mib()
done = [release_free_memory(step) for step in (0, 48, 49)]
print(freed, rss_mib(), done)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc.so.6" not in str(ctypes.util.find_library("c")),
    reason="glibc only",
)
@pytest.mark.parametrize("setting", ["1", "0"])
def test_freed_heap_memory_goes_back_every_50_steps(setting):
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, env={**os.environ, allocator.VARIABLE: setting}).stdout  # fmt: skip
    freed, after, done = out.split(" ", 2)
    if setting == "0":  # turned off: nothing is trimmed, the freed blocks stay resident
        assert done.strip() == "[False, False, False]"
        assert float(after) > 150
    else:
        assert done.strip() == "[False, False, True]"  # after the 50th step only
        assert float(freed) > 150 and float(after) < float(freed) - 150
