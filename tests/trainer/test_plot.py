"""`jestflow plot`: eval curves of several runs on one PNG, clear errors otherwise."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from jestflow.cli import main
from jestflow.trainer.plot import eval_curve, plot_runs
from jestflow.transforms.errors import JestflowError


def run(directory, evals):
    directory.mkdir()
    lines = []
    for step, loss, *recall in evals:  # (step, held-out loss[, recall@1])
        lines.append(
            {
                "step": step,
                "loss": 3.0,
                "score_flops": 10.0,
                "train_flops": 30.0,
                "step_seconds": 0.25 * step,
            }
        )
        lines.append({"step": step, "eval_loss": loss, "eval_recall_at_1": (recall or [None])[0]})
    (directory / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(directory)


def test_curves_and_the_png(tmp_path):
    uniform = run(tmp_path / "uniform", [(10, 3.0), (20, 2.5)])
    learn = run(tmp_path / "learnability", [(10, 2.6), (20, 2.0)])
    assert eval_curve(learn) == ([10, 20], [2.6, 2.0])
    assert eval_curve(learn, "flops") == ([40.0, 80.0], [2.6, 2.0])
    assert eval_curve(learn, "time") == ([2.5, 7.5], [2.6, 2.0])  # a step line per eval here
    for x in ("step", "time"):
        png_path = tmp_path / f"eval-{x}.png"
        result = CliRunner().invoke(main, ["plot", uniform, learn, "-o", str(png_path), "--x", x])
        assert result.exit_code == 0, result.output
        png = png_path.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert png_path.read_bytes() != (tmp_path / "eval-step.png").read_bytes()


def test_runs_without_evaluations_are_errors(tmp_path):
    with pytest.raises(JestflowError, match=r"no log\.jsonl"):
        eval_curve(str(tmp_path))
    bare = run(tmp_path / "bare", [])
    result = CliRunner().invoke(main, ["plot", bare])
    assert result.exit_code == 1 and "logged no evaluations" in result.output


def test_contrastive_runs_get_a_recall_panel_and_the_target_a_line(tmp_path):
    a = run(tmp_path / "a", [(10, 3.0, 0.2), (20, 2.5, 0.4)])
    b = run(tmp_path / "b", [(10, 2.6, 0.3), (20, 2.0, 0.6)])
    assert eval_curve(b, metric="recall") == ([10, 20], [0.3, 0.6])
    plot_runs([a, b], str(tmp_path / "pairs.png"), target=2.5)
    plot_runs([a, b], str(tmp_path / "loss-only.png"))
    plot_runs([run(tmp_path / "lm", [(10, 3.0), (20, 2.5)])], str(tmp_path / "lm.png"))
    widths = {n: Image.open(tmp_path / f"{n}.png").size[0] for n in ("pairs", "loss-only", "lm")}
    assert widths["pairs"] == widths["loss-only"] == 2 * widths["lm"]  # two panels: recall too
    assert (tmp_path / "pairs.png").read_bytes() != (tmp_path / "loss-only.png").read_bytes()
