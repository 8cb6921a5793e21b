"""Running the `jestflow` command on this tree or on an earlier commit side by side (the benches
that compare a change with the tree before it: bench/document_quality.py, bench/stability.py).
The earlier tree is a git worktree under the bench's output folder: `git worktree remove` it when
done."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("transforms", "pipeline", "trainer", "cli", "demo")


def before_tree(rev: str, out: Path) -> Path:
    """A PYTHONPATH folder whose `jestflow` package is the tree at `rev` (a git worktree)."""
    tree, path = out / f"tree-{rev}", out / f"path-{rev}"
    if not tree.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True
        )
    (path / "jestflow").mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = path / "jestflow" / name
        if not link.exists():
            link.symlink_to((tree / name).resolve(), target_is_directory=True)
    return path


def jestflow(args: list[str], pythonpath: Path | None) -> float:
    """`jestflow ARGS` in a fresh process (on the tree at `pythonpath` when given); its seconds."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jestflow.cli", *args], check=True, env=env)
    return time.perf_counter() - began
