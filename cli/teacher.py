"""`jestflow teacher …`: train, calibrate and promote teacher (reference) models. Like the rest of
the CLI, it only fills config dataclasses and hands them on."""

from __future__ import annotations

import click

from ..transforms.records import FieldMap
from ..transforms.vocabulary import MODEL_TASKS
from .options import (
    Group,
    config_from,
    device_option,
    echo_next,
    eval_option,
    field_flags,
    field_map,
    field_options,
    loss_option,
    model_size_options,
    overwrite_option,
    schedule_options,
    seed_option,
)


@click.group(cls=Group)
def teacher() -> None:
    """Teacher (reference) models."""


@teacher.command("train")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--output", "-o", required=True, help="Checkpoint directory to write (any fsspec URL)."
)
@click.option(
    "--task",
    type=click.Choice(MODEL_TASKS),
    required=True,
    help="lm: a language model (per-example loss); contrastive: a two-tower model (pair loss); "
    "classifier: INPUT (reference, positive) against a sample of --negatives (the pool): its "
    "log-odds is a curate score.",
)
@click.option(
    "--negatives",
    multiple=True,
    help="classifier: the pool's files (repeat for more); a seeded random sample of them is the "
    "negative class.",
)
@click.option(
    "--negatives-count",
    type=click.IntRange(min=1),
    help="classifier: how many pool examples to sample  [default: as many as INPUT holds]",
)
@field_options
@eval_option
@schedule_options
@loss_option("sigmoid; an --init model's own")
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Examples per step.",
)
@seed_option
@device_option
@click.option(
    "--init",
    help="Fine-tune this model instead of a fresh built-in one: a jestflow checkpoint, or a "
    "Hugging Face causal LM, text encoder or image–text dual encoder (CLIP, SigLIP, …).",
)
@model_size_options
@overwrite_option
def teacher_train(**params) -> None:
    """Fit a teacher on a clean reference set INPUT... (JSONL, Parquet, tars): a fresh built-in
    model, or a pretrained one fine-tuned (--init). A classifier (--task classifier) learns INPUT
    against a sample of the pool (--negatives)."""
    from ..trainer.fit import TeacherConfig, train_teacher

    fields = field_map(params["task"], params)
    result = train_teacher(config_from(TeacherConfig, params, fields=fields))
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items())) or "none"
    windows = (
        ""
        if result.windows is None
        else f", drawn as {result.windows} windows of up to {result.context} tokens"
    )
    negatives = "" if result.negatives is None else f" against {result.negatives} pool examples"
    click.echo(
        f"trained on {result.examples} examples{negatives} (rejected: {rejected}){windows} in "
        f"{result.seconds:.1f} s"
    )
    click.echo(
        f"mean training loss over the last {result.mean_train_loss_steps} steps "
        f"{result.mean_train_loss:.4f}"
    )
    if result.eval_rejected:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.eval_rejected.items()))
        click.echo(f"held-out records rejected: {skipped}")
    if result.eval_loss is not None:
        recall = result.eval_recall_at_1
        recall = "" if recall is None else f", recall@1 {recall:.3f}"
        accuracy = result.eval_accuracy
        recall += "" if accuracy is None else f", accuracy {accuracy:.3f}"
        click.echo(
            f"held-out loss {result.eval_loss:.4f} on {result.eval_examples} examples{recall}"
        )
    click.echo(f"teacher {result.fingerprint} written to {result.output}")
    echo_next([curate_line(result.output, params["task"], fields)])


def curate_line(teacher: str, task: str, fields: FieldMap | None) -> str:
    """The `curate` command for a new teacher, as a `next:` line (with the field options of the
    data it was trained or checked on)."""
    pool = "lm" if task == "classifier" else task
    return (
        f"jestflow curate POOL... -o CURATED --teacher {teacher.rstrip('/')} --task {pool} "
        f"--keep 0.3{field_flags(fields)}   (score and select a pool)"
    )


@teacher.command("calibrate")
@click.argument("model")
@click.option(
    "--reference",
    "inputs",
    multiple=True,
    required=True,
    help="Clean reference pairs (JSONL, Parquet, tars); repeat for more files.",
)
@click.option("--output", "-o", required=True, help="The calibrated teacher's directory.")
@eval_option
@click.option(
    "--held-out",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of the reference pairs held out for the figures (without --eval).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Pairs per batch: the sigmoid loss's negatives are the batch's other pairs.",
)
@field_options
@loss_option("sigmoid")
@seed_option
@device_option
@overwrite_option
def teacher_calibrate(**params) -> None:
    """Fit the sigmoid-loss temperature t and bias β of a pretrained two-tower MODEL (a Hugging
    Face encoder directory) on clean reference pairs, and write the calibrated teacher: the
    model's files with (t, β) in jestflow.json. Prints held-out loss and recall@1 before and
    after."""
    from ..trainer.calibrate import CalibrateConfig, calibrate

    fields = field_map("contrastive", params)
    result = calibrate(config_from(CalibrateConfig, params, fields=fields))
    click.echo(f"fitted on {result.fit_examples} pairs: t {result.scale:.3f}, β {result.bias:.3f}")
    for name, (loss, recall) in (("before", result.before), ("after", result.after)):
        click.echo(
            f"held-out {name}: loss {loss:.4f}, recall@1 {recall:.3f} "
            f"({result.eval_examples} pairs, batches of {params['batch_size']})"
        )
    click.echo(f"teacher {result.fingerprint} written to {result.output}")
    echo_next([curate_line(result.output, "contrastive", fields)])


@teacher.command("promote")
@click.argument("student")
@click.option("--output", "-o", required=True, help="The new teacher's directory.")
@eval_option
@click.option(
    "--against",
    help="The current teacher: its held-out loss on the same --eval data; a worse student is "
    "refused.",
)
@click.option("--force", is_flag=True, help="Promote a student worse than --against.")
@field_options
@device_option
@overwrite_option
def teacher_promote(**params) -> None:
    """Turn a trained student (a `jestflow train` output STUDENT) into a teacher for the next
    curation run. The model files are copied unchanged, so it keeps the student's fingerprint."""
    from ..trainer.promote import PromoteConfig, promote
    from ..transforms.formats.model_files import checkpoint_task

    task = checkpoint_task(params["student"]) or "lm"
    fields = field_map(task, params) if params["eval_inputs"] else None
    result = promote(config_from(PromoteConfig, params, fields=fields))
    step = "" if result.step is None else f" (trained {result.step} steps)"
    click.echo(f"student {result.student}{step} promoted")
    if result.eval_loss is not None:
        click.echo(f"held-out loss {result.eval_loss:.4f} on {result.eval_examples} examples")
    if result.against_loss is not None:
        change = result.eval_loss - result.against_loss
        click.echo(f"current teacher {result.against_loss:.4f} ({change:+.4f} with the new one)")
    click.echo(f"teacher {result.fingerprint} written to {result.output}")
    echo_next([curate_line(result.output, task, fields)])
