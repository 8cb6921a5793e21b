"""`jestflow plot`: the eval curves of several `jestflow train` runs on one PNG."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from ..transforms.errors import JestflowError
from ..transforms.paths import filesystem
from .results import read_log

AXES = {
    "step": "step",
    "flops": "training + scoring FLOPs (estimated)",
    "time": "wall-clock seconds of the steps (drawing, scoring, training)",
}


def eval_curve(run: str, x: str = "step") -> tuple[list[float], list[float]]:
    """(x, eval loss) of one run, from its log.jsonl."""
    evaluations = read_log(run).evaluations
    if not evaluations:
        raise JestflowError(f"{run} logged no evaluations (train with --eval)")
    xs = [e.step if x == "step" else e.flops if x == "flops" else e.seconds for e in evaluations]
    return xs, [e.loss for e in evaluations]


def plot_runs(runs: Sequence[str], output: str, *, x: str = "step") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in AXES:
        raise JestflowError(f"x axis must be one of {', '.join(AXES)}")
    curves = {run: eval_curve(run, x) for run in runs}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=posixpath.basename(run.rstrip("/")))
    ax.set_xlabel(AXES[x])
    ax.set_ylabel("held-out loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fs, path = filesystem(output)
    with fs.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
