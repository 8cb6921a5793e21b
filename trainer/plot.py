"""`jestflow plot`: the eval curves of several `jestflow train` runs on one PNG: the held-out
loss (with a target line, say the baseline's final loss) and, for contrastive runs, recall@1
beside it."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from ..transforms.errors import JestflowError
from ..transforms.paths import filesystem
from .results import read_log

AXES = {
    "step": "step",
    "flops": "training + scoring FLOPs (counted)",
    "time": "wall-clock seconds of the steps (drawing, scoring, training)",
}


def eval_curve(
    run: str, x: str = "step", *, metric: str = "loss"
) -> tuple[list[float], list[float]]:
    """(x, held-out loss or recall@1) of one run, from its log.jsonl."""
    evaluations = read_log(run).evaluations
    if not evaluations:
        raise JestflowError(f"{run} logged no evaluations (train with --eval)")
    xs = [e.step if x == "step" else e.flops if x == "flops" else e.seconds for e in evaluations]
    return xs, [e.loss if metric == "loss" else e.recall_at_1 for e in evaluations]


def plot_runs(
    runs: Sequence[str], output: str, *, x: str = "step", target: float | None = None
) -> None:
    """The runs' held-out loss against `x` (and a dashed line at `target`), and their recall@1
    in a second panel where every run has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in AXES:
        raise JestflowError(f"x axis must be one of {', '.join(AXES)}")
    curves = {run: eval_curve(run, x) for run in runs}
    recalls = {run: eval_curve(run, x, metric="recall") for run in runs}
    panels = [("held-out loss", curves)]
    if all(None not in ys for _, ys in recalls.values()):
        panels.append(("held-out recall@1 (batches of the training size)", recalls))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (label, found) in zip(axes[0], panels, strict=True):
        for run, (xs, ys) in found.items():
            name = posixpath.basename(run.rstrip("/"))
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
        if target is not None and found is curves:
            ax.axhline(target, color="grey", linestyle="--", label=f"target {target:.3f}")
        ax.set_xlabel(AXES[x])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fs, path = filesystem(output)
    with fs.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
