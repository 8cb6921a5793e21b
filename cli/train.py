"""`jestflow train`: a student on curated shards with online JEST, or a baseline on raw data
(`trainer/loop.py`)."""

from __future__ import annotations

import os

import click

from .options import (
    POSITIVE,
    config_from,
    device_option,
    echo_next,
    eval_option,
    field_flags,
    field_map,
    field_options,
    interrupted,
    loss_option,
    mode_option,
    model_size_options,
    overwrite_option,
    sampling_options,
    schedule_options,
    score_seq_len_option,
    seed_option,
    task_option,
)


@click.command("train")
@click.argument("shard_files", nargs=-1)
@click.option(
    "--shards",
    multiple=True,
    help="Shard URL pattern(s): brace ranges, globs, any fsspec URL (quote them).",
)
@click.option(
    "--data",
    multiple=True,
    help="Raw input(s) instead of shards: the uniform or hard_learner baseline.",
)
@task_option
@click.option("--output", "-o", required=True, help="Run directory: checkpoint, log.jsonl.")
@mode_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="b: examples trained on per step.",
)
@click.option(
    "--super-batch-ratio",
    type=POSITIVE,
    default=2,
    show_default=True,
    help="r: the student scores r·b examples per step.",
)
@sampling_options
@schedule_options
@loss_option("the shards' (their pair_loss), else the model's own")
@eval_option
@click.option(
    "--eval-every",
    type=POSITIVE,
    default=100,
    show_default=True,
    help="Steps between held-out evaluations (and checkpoints).",
)
@click.option("--init", help="Start from this checkpoint instead of a fresh model.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --output.")
@overwrite_option
@seed_option
@score_seq_len_option
@click.option(
    "--score-image-size",
    type=click.IntRange(min=16),
    default=None,
    help="Image-text: the student scores images at this side in pixels, a cheaper pass "
    "(Flexi-JEST; e.g. 32 for 64-pixel images: a quarter of the convolutions). Default: its own "
    "size.",
)
@click.option(
    "--small-share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="With --score-image-size: the share of steps that train at that size too, so that the "
    "student's cheap scores rank as its full ones do (the log's cheap_score_rank_correlation), "
    "at the cost of steps trained at the small size.",
)
@click.option(
    "--read-process/--read-in-thread",
    default=True,
    show_default=True,
    help="Read, decode and make each step's model inputs in a worker process beside training "
    "(which has a core of its own where it decodes images), or in a thread of the trainer's "
    "(each step's candidates are drawn ahead either way).",
)
@device_option
@model_size_options
@field_options
def train_command(**params) -> None:
    """Train a student on curated shards with online JEST (the student re-scores each super-batch),
    or on raw data (--data) for a baseline. Shard files may also come as SHARD_FILES... (a pattern
    the shell expanded)."""
    from ..trainer.checkpoints import resume_note
    from ..trainer.loop import TrainConfig, train
    from ..trainer.results import read_log, summary_lines

    params["shards"] = (*params["shards"], *params.pop("shard_files"))
    needed = params["eval_inputs"] or params["data"]  # fields of raw and held-out inputs
    fields = field_map(params["task"], params) if needed else None
    config = config_from(TrainConfig, params, fields=fields)
    try:
        train(config)
    except KeyboardInterrupt:
        interrupted(f"Interrupted: train stopped; {resume_note(config.output)}")
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    for line in summary_lines(read_log(config.output)):
        click.echo(line)
    output = config.output.rstrip("/")
    click.echo(f"student written to {output} (log: {output}/log.jsonl)")
    steps = [
        f"jestflow teacher promote {output} -o NEW_TEACHER --eval HELD_OUT --against "
        f"TEACHER{field_flags(config.fields)}   (the student as the next teacher)"
    ]
    if config.eval_inputs:
        steps.insert(0, f"jestflow plot {output} -o {output}/eval.png   (its held-out curve)")
    echo_next(steps)
