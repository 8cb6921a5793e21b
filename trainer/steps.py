"""A training run set up to take its steps (`Run`), and what each step logs: its line
(`step_record`: loss, the chosen's learnability and tags, the seconds it waited, scored and
trained, the FLOPs it spent, memory) and, at evaluations, the held-out loss and how the cheap
scoring pass ranks candidates against the full one (`log_step`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..transforms.formats.shard_samples import TrainSample
from ..transforms.memory import memory_mib
from ..transforms.records import Example
from ..transforms.selection.jest import generator_for
from . import checkpoints
from .core import Training, evaluate
from .distributed import Ranks
from .flops import TRAINING, FlopCount
from .online_selection import OnlineSelection, rank_correlation, select_online
from .prefetch import Candidates


@dataclass(kw_only=True)
class Run:
    """A run, set up to take its steps."""

    config: Any  # loop.TrainConfig (which imports this module)
    ranks: Ranks
    model: nn.Module
    training: Training
    start: int  # the first step to take: 0, or the resumed checkpoint's
    stream_seed: int  # this rank's (`stream_seed`)
    stream: Iterator[TrainSample]
    skipped: Counter  # corrupt samples the stream skipped, by reason
    held_out: list[Example]
    log: checkpoints.Log | None  # the main rank's
    flops: FlopCount  # the model's FLOPs per input
    whole_documents: bool = False  # the shards hold documents curated whole: evaluate whole ones
    scoring_length: int | None = None  # lm: the first tokens of a candidate the student scores


def step_record(
    run: Run,
    step: int,
    loss: float,
    chosen: OnlineSelection,
    drawn: Candidates,
    trained: list,
    timing: tuple[float, float, float],
) -> dict:
    """The step's log line (`trained`: the inputs the step trained on; `timing`: when the step
    began, the seconds it waited for its candidates, and when its training pass began).
    `draw_seconds` is that wait, `load_seconds` the work of making the candidates (in the reader
    process or the prefetching thread: off the step's path unless it waited). The step's wall
    time counts the wait, scoring and training; not evaluations or checkpoints."""
    config, world = run.config, run.ranks.world
    picked = [drawn.samples[i] for i in chosen.indices]
    peak, now = memory_mib()
    return {
        "step": step + 1,
        "loss": loss,
        "learnability": chosen.learnability,
        "tags": dict(Counter(s.tag for s in picked if s.tag is not None)),
        "score_seconds": round(chosen.seconds, 4),
        "draw_seconds": round(timing[1], 4),
        "load_seconds": round(drawn.seconds, 4),
        "train_seconds": round(time.perf_counter() - timing[2], 4),
        "step_seconds": round(time.perf_counter() - timing[0], 4),
        "examples_seen": (step + 1) * config.super_batch * world,
        "score_flops": world * run.flops.forward(drawn.scored or []),
        "train_flops": world * TRAINING * run.flops.forward(trained),
        "skipped": sum(run.skipped.values()),
        "peak_rss_mib": round(peak, 1),
        "rss_mib": None if now is None else round(now, 1),
    }


def log_step(run: Run, step: int, record: dict, drawn: Candidates, chosen: OnlineSelection) -> dict:
    """Log the step's line and, when one is due, evaluate on the held-out examples and log that
    too (with how the cheap scoring pass ranks the step's candidates against the full one);
    returns the last line logged."""
    run.log.write(record)
    if run.held_out and run.config.checkpoint_due(step):
        eval_loss, recall = evaluate(
            run.model, run.held_out, run.config.batch_size, whole_documents=run.whole_documents
        )
        record = {"step": step + 1, "eval_loss": eval_loss, "eval_recall_at_1": recall}
        agreement = cheap_scores_agreement(run, step, drawn, chosen)
        if agreement is not None:
            record["cheap_score_rank_correlation"] = agreement
        run.log.write(record)
    run.log.flush()
    return record


def cheap_scores_agreement(
    run: Run, step: int, drawn: Candidates, chosen: OnlineSelection
) -> float | None:
    """Spearman's ρ of the student's scores of the step's candidates from its cheap pass (images
    at `score_image_size`, lm texts' first `score_seq_len` tokens) and from the full inputs, both
    by the model as it is now (after the step); None when it scores the full inputs."""
    config = run.config
    cheap = config.score_image_size is not None or (
        config.task == "lm" and drawn.windows is None and run.scoring_length is not None
    )
    if not cheap or chosen.scores is None:
        return None
    scores = [
        select_online(
            run.model,
            drawn.samples,
            config.batch_size,
            mode=config.mode,
            n_chunks=config.n_chunks,
            generator=generator_for(run.stream_seed, step),
            scored=inputs,
        ).scores
        for inputs in (drawn.scored, drawn.inputs)
    ]
    return rank_correlation(*scores)
