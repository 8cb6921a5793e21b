"""Stable 64-bit hashes, the same on every machine and process (Python's `hash` is not)."""

from __future__ import annotations

import hashlib

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment


def hash64(text: str) -> int:
    """A text's 64-bit BLAKE2b hash, as an unsigned int."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output for states `x`: x + the increment through its finaliser, elementwise on
    uint64 (wrapping): a well-mixed 64-bit hash."""
    with np.errstate(over="ignore"):
        x = x + GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
