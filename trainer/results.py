"""What a `jestflow train` run measured, read back from its log.jsonl: the eval curve against
steps, counted FLOPs and wall-clock seconds, what it trained on (the `kind` tags), and when it
first reached a target held-out loss."""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field

from ..transforms.errors import JestflowError
from ..transforms.paths import filesystem
from ..transforms.reporting.logs import duration


@dataclass(frozen=True)
class Evaluation:
    step: int
    flops: float  # training + scoring FLOPs spent up to this step
    seconds: float  # wall-clock seconds of the steps up to this one (drawing, scoring, training)
    loss: float
    recall_at_1: float | None


@dataclass(kw_only=True)
class RunLog:
    run: str
    steps: int = 0
    evaluations: list[Evaluation] = field(default_factory=list)
    tags: Counter = field(default_factory=Counter)  # `kind` of every example trained on
    score_flops: float = 0.0
    train_flops: float = 0.0
    draw_seconds: float = 0.0  # waiting for data: reading and decoding the samples drawn
    score_seconds: float = 0.0
    train_seconds: float = 0.0
    step_seconds: float = 0.0  # wall clock of the steps; evaluations and checkpoints excluded
    last_step: dict = field(default_factory=dict)  # the last training step's log line
    # Spearman's ρ of the cheap scoring pass against the full one, at each evaluation
    score_agreement: list[float] = field(default_factory=list)

    @property
    def final(self) -> Evaluation:
        if not self.evaluations:
            raise JestflowError(f"{self.run} logged no evaluations (train with --eval)")
        return self.evaluations[-1]

    def fraction(self, tag: str) -> float | None:
        """The share of trained-on examples with this tag (None when nothing was tagged)."""
        total = sum(self.tags.values())
        return self.tags[tag] / total if total else None

    def first_at_or_below(self, loss: float) -> Evaluation | None:
        """The first evaluation whose held-out loss is at most `loss` (None: never reached)."""
        return next((e for e in self.evaluations if e.loss <= loss), None)


def read_log(run: str) -> RunLog:
    """Read a run directory's log.jsonl."""
    fs, root = filesystem(run)
    path = posixpath.join(root, "log.jsonl")
    if not fs.exists(path):
        raise JestflowError(f"{run} has no log.jsonl: not a jestflow train run")
    log = RunLog(run=run)
    with fs.open(path) as f:
        for line in f:
            record = json.loads(line)
            if "loss" in record:  # a training step
                log.steps, log.last_step = record["step"], record
                log.tags.update(record.get("tags") or {})
                log.score_flops += record.get("score_flops", 0.0)
                log.train_flops += record.get("train_flops", 0.0)
                log.draw_seconds += record.get("draw_seconds", 0.0)
                log.score_seconds += record.get("score_seconds", 0.0)
                log.train_seconds += record.get("train_seconds", 0.0)
                # logs written before step_seconds existed: scoring + training
                log.step_seconds += record.get(
                    "step_seconds",
                    record.get("score_seconds", 0.0) + record.get("train_seconds", 0.0),
                )
            if record.get("cheap_score_rank_correlation") is not None:
                log.score_agreement.append(record["cheap_score_rank_correlation"])
            if record.get("eval_loss") is not None:
                log.evaluations.append(
                    Evaluation(
                        step=record["step"],
                        flops=log.score_flops + log.train_flops,
                        seconds=log.step_seconds,
                        loss=record["eval_loss"],
                        recall_at_1=record.get("eval_recall_at_1"),
                    )
                )
    return log


@dataclass(frozen=True)
class Comparison:
    """A run against a baseline run: when it first reached the baseline's final held-out loss."""

    target: float  # the baseline's final held-out loss
    reached: Evaluation | None  # None: never reached
    speed_up: float | None  # baseline steps / steps to the target
    compute_saving: float | None  # baseline FLOPs / FLOPs to the target (training + scoring)
    time_saving: float | None  # baseline seconds / wall-clock seconds to the target


def compare(run: RunLog, baseline: RunLog) -> Comparison:
    """Steps, compute and wall-clock time to reach the baseline's final held-out loss. The
    baseline itself takes all its steps by definition (its loss may dip below the final value
    earlier). Seconds compare fairly only between runs that had the machine to themselves."""
    target = baseline.final
    reached = target if run is baseline else run.first_at_or_below(target.loss)
    if reached is None:
        return Comparison(
            target=target.loss, reached=None, speed_up=None, compute_saving=None, time_saving=None
        )
    return Comparison(
        target=target.loss,
        reached=reached,
        speed_up=target.step / reached.step,
        compute_saving=target.flops / reached.flops if reached.flops else None,
        time_saving=target.seconds / reached.seconds if reached.seconds else None,
    )


def summary_lines(run: RunLog) -> list[str]:
    """What a finished `jestflow train` run reached, in a few lines for people: time, losses,
    compute and memory."""
    last = run.last_step
    share = run.draw_seconds / run.step_seconds if run.step_seconds else 0.0
    lines = [
        f"trained {run.steps} steps in {duration(run.step_seconds)} (waiting for data "
        f"{duration(run.draw_seconds)}, {share:.0%}; online scoring {duration(run.score_seconds)}, "
        f"training {duration(run.train_seconds)}; evaluations and checkpoints not counted)"
    ]
    if run.evaluations:
        final = run.evaluations[-1]
        best = min(run.evaluations, key=lambda e: e.loss)
        recall = "" if final.recall_at_1 is None else f", recall@1 {final.recall_at_1:.3f}"
        lines.append(
            f"held-out loss {final.loss:.4f} at step {final.step}{recall} (best "
            f"{best.loss:.4f} at step {best.step})"
        )
    if "loss" in last:
        lines.append(f"training loss at the last step {last['loss']:.4f}")
    total = run.score_flops + run.train_flops
    lines.append(
        f"compute {total / 1e12:.2f} TFLOP: training {run.train_flops / 1e12:.2f}, "
        f"online scoring {run.score_flops / 1e12:.2f}"
    )
    if run.score_agreement:
        rho = sum(run.score_agreement) / len(run.score_agreement)
        lines.append(
            f"the cheap scoring pass ranks candidates as the full one does with Spearman's ρ "
            f"{rho:.2f} (mean of {len(run.score_agreement)} evaluations)"
        )
    if last.get("peak_rss_mib") is not None:
        lines.append(f"peak memory {last['peak_rss_mib']:,.0f} MiB")
    return lines
