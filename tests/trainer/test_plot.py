"""`jestflow plot`: eval curves of several runs on one PNG, clear errors otherwise."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from jestflow.cli import main
from jestflow.trainer.plot import eval_curve
from jestflow.transforms.errors import JestflowError


def run(directory, evals):
    directory.mkdir()
    lines = []
    for step, loss in evals:
        lines.append(
            {
                "step": step,
                "loss": 3.0,
                "score_flops": 10.0,
                "train_flops": 30.0,
                "step_seconds": 0.25 * step,
            }
        )
        lines.append({"step": step, "eval_loss": loss, "eval_recall_at_1": None})
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
