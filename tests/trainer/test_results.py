"""Reading a run's log back: the eval curve against steps and FLOPs, what it trained on, and
steps and compute to a baseline's final held-out loss."""

from __future__ import annotations

import json

import pytest

from jestflow.trainer.results import compare, read_log, summary_lines
from jestflow.transforms.errors import JestflowError


def write_log(directory, evals, flops_per_step, tags=None, seconds_per_step=0.6):
    """A log.jsonl as `jestflow train` writes it: a line per step, an eval line every 10."""
    directory.mkdir()
    lines = []
    for step in range(1, 10 * len(evals) + 1):
        lines.append(
            {
                "step": step,
                "loss": 3.0,
                "tags": tags or {},
                "score_flops": 0.0,
                "train_flops": flops_per_step,
                "score_seconds": 0.0,
                "train_seconds": 0.5,
                "step_seconds": seconds_per_step,
            }
        )
        if step % 10 == 0:
            lines.append(
                {"step": step, "eval_loss": evals[step // 10 - 1], "eval_recall_at_1": None}
            )
    (directory / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return read_log(str(directory))


def test_steps_and_compute_to_the_baselines_final_loss(tmp_path):
    baseline = write_log(
        tmp_path / "uniform", [4.0, 3.0, 2.9, 3.1, 3.0], 100.0, {"clean": 1, "noise": 3}
    )
    fast = write_log(
        tmp_path / "jest",
        [3.5, 2.95, 2.5, 2.4, 2.3],
        125.0,
        {"clean": 3, "noise": 1},
        seconds_per_step=1.0,
    )
    never = write_log(tmp_path / "bad", [4.5, 4.4, 4.3, 4.2, 4.1], 100.0)
    assert baseline.steps == 50 and baseline.final.loss == 3.0 and baseline.final.flops == 5000
    assert baseline.fraction("clean") == 0.25 and never.fraction("clean") is None
    assert baseline.train_seconds == pytest.approx(25.0)
    same = compare(baseline, baseline)  # all 50 steps, though 3.0 was first reached at step 20
    assert same.reached.step == 50 and same.speed_up == 1.0 and same.compute_saving == 1.0
    assert baseline.final.seconds == pytest.approx(30.0) and same.time_saving == 1.0
    found = compare(fast, baseline)
    assert found.target == 3.0 and found.reached.step == 20
    assert found.speed_up == 2.5 and found.compute_saving == pytest.approx(5000 / 2500)
    assert found.time_saving == pytest.approx(30.0 / 20.0)  # slower steps eat part of the gain
    assert compare(never, baseline).reached is None and compare(never, baseline).speed_up is None
    assert compare(never, baseline).time_saving is None


def test_logs_from_before_step_seconds_count_scoring_and_training(tmp_path):
    (tmp_path / "log.jsonl").write_text(
        '{"step": 1, "loss": 2.0, "score_seconds": 0.25, "train_seconds": 0.5}\n'
        '{"step": 1, "eval_loss": 2.5}\n'
    )
    assert read_log(str(tmp_path)).final.seconds == pytest.approx(0.75)


def test_a_directory_without_a_log_is_an_error(tmp_path):
    with pytest.raises(JestflowError, match=r"no log\.jsonl"):
        read_log(str(tmp_path))
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    with pytest.raises(JestflowError, match="logged no evaluations"):
        read_log(str(tmp_path)).final  # noqa: B018


def test_the_summary_says_how_much_of_the_steps_waited_for_data(tmp_path):
    steps = [
        {"step": s, "loss": 3.0, "draw_seconds": 0.25, "score_seconds": 0.25, "train_seconds": 0.5}
        for s in range(1, 5)
    ]
    for record in steps:
        record["step_seconds"] = 1.0
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    log = read_log(str(tmp_path))
    assert log.draw_seconds == 1.0 and log.step_seconds == 4.0
    assert "(waiting for data 1 s, 25%; online scoring 1 s, training 2 s;" in summary_lines(log)[0]


def test_the_cheap_scores_agreement_is_read_back_and_summarised(tmp_path):
    lines = [
        {"step": 1, "loss": 3.0, "step_seconds": 1.0},
        {"step": 1, "eval_loss": 2.9, "cheap_score_rank_correlation": 0.5},
        {"step": 2, "loss": 2.5, "step_seconds": 1.0},
        {"step": 2, "eval_loss": 2.4, "cheap_score_rank_correlation": 0.7},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    log = read_log(str(tmp_path))
    assert log.score_agreement == [0.5, 0.7] and len(log.evaluations) == 2
    assert any("Spearman's ρ 0.60 (mean of 2 evaluations)" in x for x in summary_lines(log))
