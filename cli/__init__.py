"""The `jestflow` command line: one module per command group (`curate`, `train`, `teacher`,
`inspect` and `plot`, `demo`), their shared options in `options.py`, the group in `main.py`."""

from .main import main

__all__ = ["main"]
