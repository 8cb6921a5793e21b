"""The results page's plots (bench/results_page.py), drawn with matplotlib's Agg backend into PNG
bytes that are the same from one build to the next: fixed sizes, dpi 100, matplotlib's default
style, no metadata that varies (no software version, no date)."""

from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.style
from matplotlib.figure import Figure

STYLE = {
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 10,
    "figure.titlesize": 11,
    "legend.fontsize": 8,
    "svg.hashsalt": "jestflow",
}
X_AXES = {"step": "training step", "flops": "FLOPs (training + online scoring)"}
X_AXES["seconds"] = "seconds of the steps (no evaluations)"
COLUMN = {"step": 0, "flops": 2, "seconds": 3}  # a curve point: [step, loss, FLOPs, seconds]


def png(draw, width: float, height: float) -> bytes:
    """A figure of width × height inches drawn by `draw(figure)`, as PNG bytes."""
    with matplotlib.style.context("default"), matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width, height), layout="constrained")
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def wrap(text: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def curves(title: str, series: dict[str, list], target: float | None, axes=COLUMN) -> bytes:
    """Held-out loss curves (name → [step, loss, FLOPs, seconds] points), one panel per x axis
    the points have, with the target (the baseline's final loss) as a dashed line."""
    kinds = [k for k in axes if all(len(p) > COLUMN[k] for s in series.values() for p in s)]
    losses = [p[1] for s in series.values() for p in s]
    first = [s[min(len(s) - 1, max(1, len(s) // 8))][1] for s in series.values() if s]
    top = max(first) if first else max(losses)
    low = min(losses)

    def draw(figure: Figure) -> None:
        panels = figure.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
        for panel, kind in zip(panels, kinds, strict=True):
            for name, points in series.items():
                xs = [p[COLUMN[kind]] for p in points]
                panel.plot(xs, [p[1] for p in points], marker=".", markersize=3, label=name)
            if target is not None:
                panel.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
            panel.set_xlabel(X_AXES[kind])
            panel.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low))
        panels[0].set_ylabel("held-out loss")
        handles, names = panels[0].get_legend_handles_labels()
        figure.legend(handles, [wrap(n, 60) for n in names], loc="outside lower center", ncols=3)
        figure.suptitle(wrap(title, 40 * len(kinds)))

    rows = -(-(len(series) + (target is not None)) // 3)
    return png(draw, 4.0 * len(kinds), 3.4 + 0.3 * rows)


def bars(title: str, labels: list[str], groups: dict[str, list], xlabel: str, line=None) -> bytes:
    """Horizontal bars, one group per label (top to bottom), one bar per series of `groups`
    (name → a value or [mean, spread] per label, None for none); `line` marks a reference."""
    n = len(groups)
    height = 0.8 / max(n, 1)

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        for i, (name, values) in enumerate(groups.items()):
            ys = [len(labels) - 1 - j + (n - 1 - 2 * i) * height / 2 for j in range(len(labels))]
            means = [v[0] if isinstance(v, list) else (v or 0) for v in values]
            spread = [v[1] if isinstance(v, list) else 0 for v in values]
            errors = spread if any(spread) else None
            axes.barh(ys, means, height=height, xerr=errors, label=name, capsize=2)
        axes.set_yticks(range(len(labels)), [wrap(x) for x in reversed(labels)])
        if line is not None:
            axes.axvline(line, color="grey", linestyle="--", linewidth=1)
        axes.set_xlabel(xlabel)
        axes.grid(axis="y", visible=False)
        axes.set_ylim(-0.5, len(labels) - 0.5)
        if n > 1:
            figure.legend(loc="outside lower center", ncols=n)
        axes.set_title(wrap(title, 70))

    return png(draw, 8.0, 1.2 + 0.3 * (n > 1) + len(labels) * max(0.3, 0.18 * n + 0.12))


def lines(title: str, series: dict[str, list], xlabel: str, ylabel: str, logx=False, zero=False):
    """Line plots of (x, y) points, name → points; the y axis from 0 with `zero`."""

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        for name, points in series.items():
            axes.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name)
        if logx:
            axes.set_xscale("log")
        if zero:
            axes.set_ylim(bottom=0)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.legend()
        axes.set_title(wrap(title, 70))

    return png(draw, 8.0, 3.4)


def margins(title: str, rows: list[dict]) -> bytes:
    """Each learned bound (top to bottom) with its worst and best run and the broken models'
    value, in units of the distance from the bound to the broken value: the bound at 0, the
    broken models at −1, a run that passes right of 0."""

    def side(row: dict, value: float) -> float:
        gap = value - row["bound"] if row["op"] == ">" else row["bound"] - value
        broken = row["broken"]
        scale = abs(broken - row["bound"]) if broken is not None and broken != row["bound"] else 1
        return gap / scale

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        ys = list(range(len(rows) - 1, -1, -1))
        worst = [side(r, r["worst"]) for r in rows]
        best = [side(r, r["best"]) for r in rows]
        axes.hlines(ys, worst, best, color="lightgrey", linewidth=3)
        axes.scatter(worst, ys, color="tab:blue", zorder=3, s=14, label="worst run")
        axes.scatter(best, ys, color="tab:green", zorder=3, s=14, label="best run")
        known = [(r, y) for r, y in zip(rows, ys, strict=True) if r["broken"] is not None]
        xs = [side(r, r["broken"]) for r, _ in known]
        axes.scatter(
            xs, [y for _, y in known], color="tab:red", marker="x", s=18, label="untrained"
        )
        axes.axvline(0, color="black", linewidth=1)
        tests = [r["test"].removeprefix("test_").replace("_", " ") for r in rows]
        names = [
            f"{textwrap.shorten(t, 36, placeholder='…')}: {r['name']}"
            for t, r in zip(tests, rows, strict=True)
        ]
        axes.set_yticks(ys, [textwrap.shorten(n, 86, placeholder="…") for n in names])
        axes.set_xscale("symlog", linthresh=1)
        axes.set_xlim(-1.5, max(best + worst) * 1.6)
        axes.set_xlabel("margin past the bound, in units of |bound − untrained value| (symlog)")
        axes.legend(loc="lower right")
        axes.set_title(wrap(title, 110))

    return png(draw, 12.0, 1.4 + 0.26 * len(rows))
