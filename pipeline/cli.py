"""The `jestflow` command line. It only fills config dataclasses and hands them to the code that
does the work; bad input ends in a one-line error and a non-zero exit."""

from __future__ import annotations

import functools
import os
import sys

import click

from ..transforms.errors import JestflowError
from ..transforms.records import FieldMap
from ..transforms.vocabulary import METHODS, OFFLINE_MODES, ONLINE_MODES, TASKS


class Group(click.Group):
    """A click group that turns JestflowError into `Error: <message>` and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except JestflowError as e:
            raise click.ClickException(str(e)) from e


def options(*decorators):
    """Several click options as one decorator, in the order given."""
    return lambda func: functools.reduce(lambda f, option: option(f), reversed(decorators), func)


# The built-in model's size (teacher train, train).
model_size_options = options(
    click.option("--d-model", type=click.IntRange(min=8), help="Model width [128]."),
    click.option("--layers", "n_layer", type=click.IntRange(min=1), help="Transformer blocks [2]."),
    click.option("--heads", "n_head", type=click.IntRange(min=1), help="Attention heads [4]."),
    click.option(
        "--max-len",
        type=click.IntRange(min=1),
        help="Tokens (bytes) read per text [lm 256, towers 128].",
    ),
)
# JEST sampling (curate, train).
sampling_options = options(
    click.option(
        "--chunks",
        type=click.IntRange(min=1),
        default=16,
        show_default=True,
        help="JEST blocked sampling: chunks drawn one after another (contrastive).",
    ),
    click.option(
        "--temperature",
        type=click.FloatRange(min=0, min_open=True),
        default=1.0,
        show_default=True,
        help="Sampling ∝ exp(score / temperature).",
    ),
)


# --text-field / --image-field + --caption-field / --query-field + --doc-field, --keep-field.
field_options = options(
    click.option(
        "--text-field", help="Field (tar: extension) holding the text [lm default: text]."
    ),
    click.option("--image-field", help="Field holding the encoded image (image-text pairs)."),
    click.option("--caption-field", help="Field holding the caption (image-text pairs)."),
    click.option("--query-field", help="Field holding the query (text-text pairs)."),
    click.option("--doc-field", help="Field holding the document (text-text pairs)."),
    click.option("--keep-field", multiple=True, help="Extra field carried along (e.g. a tag)."),
    click.option(
        "--max-chars",
        type=click.IntRange(min=1),
        default=100_000,
        show_default=True,
        help="Texts longer than this are rejected.",
    ),
)


def make_fields(
    task: str,
    *,
    text_field,
    image_field,
    caption_field,
    query_field,
    doc_field,
    keep_field,
    max_chars,
) -> FieldMap:
    given = (text_field, image_field, caption_field, query_field, doc_field)
    if not any(given):
        if task != "lm":
            raise JestflowError(
                "contrastive tasks need --query-field and --doc-field, "
                "or --image-field and --caption-field"
            )
        text_field = "text"
    return FieldMap(
        text=text_field,
        image=image_field,
        caption=caption_field,
        query=query_field,
        doc=doc_field,
        keep=tuple(keep_field),
        max_chars=max_chars,
    )


TASK = click.Choice(TASKS)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jestflow")
def main() -> None:
    """Curate training data with a teacher model and JEST joint example selection."""


@main.group(cls=Group)
def teacher() -> None:
    """Reference (teacher) models."""


# The optimizer's schedule (teacher train, train).
schedule_options = options(
    click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True),
    click.option(
        "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True
    ),
    click.option("--warmup-steps", type=click.IntRange(min=0), default=50, show_default=True),
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …"
)


@teacher.command("train")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--output", "-o", required=True, help="Checkpoint directory to write (any fsspec URL)."
)
@click.option("--task", type=TASK, required=True)
@field_options
@click.option("--eval", "eval_inputs", multiple=True, help="Held-out input(s) for the final loss.")
@schedule_options
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@model_size_options
def teacher_train(
    inputs,
    output,
    task,
    eval_inputs,
    steps,
    batch_size,
    lr,
    warmup_steps,
    seed,
    device,
    d_model,
    n_layer,
    n_head,
    max_len,
    **fields,
) -> None:
    """Fit a built-in reference model on a curated reference set INPUT... (JSONL, Parquet, tars)."""
    from ..trainer.fit import TeacherConfig, train_teacher

    config = TeacherConfig(
        inputs=inputs,
        output=output,
        task=task,
        fields=make_fields(task, **fields),
        eval_inputs=eval_inputs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        seed=seed,
        device=device,
        d_model=d_model,
        n_layer=n_layer,
        n_head=n_head,
        max_len=max_len,
        progress=sys.stderr.isatty(),
    )
    result = train_teacher(config)
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items())) or "none"
    click.echo(
        f"trained on {result.examples} examples (rejected: {rejected}) in {result.seconds:.1f} s"
    )
    click.echo(f"final training loss {result.train_loss:.4f}")
    if result.eval_rejected:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.eval_rejected.items()))
        click.echo(f"held-out records rejected: {skipped}")
    if result.eval_loss is not None:
        recall = (
            "" if result.eval_recall_at_1 is None else f", recall@1 {result.eval_recall_at_1:.3f}"
        )
        click.echo(
            f"held-out loss {result.eval_loss:.4f} on {result.eval_examples} examples{recall}"
        )
    click.echo(f"teacher {result.fingerprint} written to {result.output}")


@teacher.command("promote")
@click.argument("student")
@click.option("--output", "-o", required=True, help="The new teacher's directory.")
@click.option("--eval", "eval_inputs", multiple=True, help="Held-out input(s) for its loss.")
@click.option("--against", help="The current teacher: its held-out loss on the same --eval data.")
@field_options
@device_option
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --output.")
def teacher_promote(student, output, eval_inputs, against, device, overwrite, **fields) -> None:
    """Turn a trained student (a `jestflow train` output STUDENT) into a teacher for the next
    curation run. The model files are copied unchanged, so it keeps the student's fingerprint."""
    from ..trainer.promote import PromoteConfig, promote
    from ..transforms.checkpoint import checkpoint_task

    task = checkpoint_task(student) or "lm"
    result = promote(
        PromoteConfig(
            student=student,
            output=output,
            eval_inputs=eval_inputs,
            fields=make_fields(task, **fields) if eval_inputs else None,
            against=against,
            device=device,
            overwrite=overwrite,
        )
    )
    step = "" if result.step is None else f" (trained {result.step} steps)"
    click.echo(f"student {result.student}{step} promoted")
    if result.eval_loss is not None:
        click.echo(f"held-out loss {result.eval_loss:.4f} on {result.eval_examples} examples")
    if result.against_loss is not None:
        change = result.eval_loss - result.against_loss
        click.echo(f"current teacher {result.against_loss:.4f} ({change:+.4f} with the new one)")
    click.echo(f"teacher {result.fingerprint} written to {result.output}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("inputs", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--output", "-o", required=True, help="Output URL (local path, gs://, s3://, memory://)."
)
@click.option("--teacher", required=True, help="Teacher (reference model) checkpoint directory.")
@click.option("--task", type=TASK, required=True)
@click.option(
    "--keep", type=float, required=True, help="Fraction of each super-batch to keep, in (0, 1]."
)
@click.option("--super-batch", type=click.IntRange(min=2), default=1024, show_default=True)
@click.option("--student", help="Student checkpoint: select by learnability offline.")
@click.option(
    "--score",
    type=click.Choice(OFFLINE_MODES),
    help="Selection score [learnability with --student, else easy_reference].",
)
@sampling_options
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="sample",
    show_default=True,
    help="Sample without replacement, or take the top scores.",
)
@click.option(
    "--tiers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Split the selected set into K score tiers, shards named tier-00 (best) … tier-K-1.",
)
@field_options
@click.option("--shard-max-count", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--shard-max-bytes", type=click.IntRange(min=1), default=1 << 30, show_default=True)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Super-batch grouping and sampling."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Local worker processes [cores]."
)
@device_option
@click.option(
    "--model-copies", type=click.IntRange(min=1), help="Model copies per worker (RunInference)."
)
@click.option("--large-model", is_flag=True, help="Share one model across a worker's processes.")
@click.option(
    "--accelerator",
    help="Resource hint for the scoring step, e.g. 'type:nvidia-l4;count:1;install-nvidia-driver'.",
)
@click.option(
    "--cache",
    help="Score cache URL: models' outputs by (example id, model fingerprint); a re-run scores "
    "only what it does not hold.",
)
@click.option("--overwrite", is_flag=True, help="Replace a completed curation run in --output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines, only the summary.")
def curate(
    inputs,
    output,
    teacher,
    task,
    keep,
    super_batch,
    student,
    score,
    chunks,
    temperature,
    method,
    tiers,
    shard_max_count,
    shard_max_bytes,
    seed,
    workers,
    device,
    model_copies,
    large_model,
    accelerator,
    cache,
    overwrite,
    quiet,
    **fields,
) -> None:
    """Score INPUT... with a teacher, select by JEST per super-batch, write ranked shards.

    Options Beam knows (--runner=DataflowRunner, --project=…) pass through; give them as
    --name=value.
    """
    from ..transforms.offline_selection import SelectionConfig
    from .curate import CurateConfig, run_curation

    beam_args = [a for a in inputs if a.startswith("-")]
    config = CurateConfig(
        inputs=tuple(a for a in inputs if not a.startswith("-")),
        output=output,
        teacher=teacher,
        task=task,
        student=student,
        fields=make_fields(task, **fields),
        selection=SelectionConfig(
            keep=keep,
            mode=score or ("learnability" if student else "easy_reference"),
            temperature=temperature,
            n_chunks=chunks,
            method=method,
            seed=seed,
        ),
        super_batch=super_batch,
        tiers=tiers,
        shard_max_count=shard_max_count,
        shard_max_bytes=shard_max_bytes,
        device=device,
        model_copies=model_copies,
        large_model=large_model,
        accelerator=accelerator,
        cache=cache,
        workers=workers or os.cpu_count() or 1,
        progress=not quiet,
        overwrite=overwrite,
        beam_args=beam_args,
    )
    stats = run_curation(config)
    if stats is None:
        click.echo(f"job staged as a template; it writes {output} and _SUCCESS there when done")
        return
    click.echo(summary_table(stats, output))


def summary_table(stats: dict, output: str) -> str:
    """The end-of-run table: counts, rejection reasons, shards, throughput, where things are."""
    counts, shards, timing = stats["counts"], stats["shards"], stats["timing"]
    inputs = max(1, counts["inputs"])
    rows = [
        (name.replace("_", " "), f"{counts[name]:,}", f"{100 * counts[name] / inputs:5.1f} %")
        for name in ("inputs", "selected", "not_selected", "rejected")
    ]
    rows += [(f"  rejected: {reason}", f"{n:,}", "") for reason, n in stats["rejected"].items()]
    rows += [
        (f"{role} scored", f"{n['scored']:,}", f"{n['cached']:,} from the cache")
        for role, n in stats["scoring"].items()
        if role != "cache"
    ]
    rows += [
        ("shards", f"{shards['files']:,} files", f"{shards['bytes'] / 2**20:,.1f} MiB"),
        ("time", f"{timing['seconds']:,.1f} s", f"{timing['inputs_per_s']:,.0f} inputs/s"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>14}  {c}" for a, b, c in rows]
    root = output.rstrip("/")
    lines += [f"report: {root}/report.html", f"shards: {root}/shards/"]
    return "\n".join(lines)


@main.command("train")
@click.option(
    "--shards",
    multiple=True,
    help="Shard URL pattern(s): brace ranges, globs, any fsspec URL.",
)
@click.option(
    "--data",
    multiple=True,
    help="Raw input(s) instead of shards: the uniform or hard_learner baseline.",
)
@click.option("--task", type=TASK, required=True)
@click.option("--output", "-o", required=True, help="Run directory: checkpoint, log.jsonl.")
@click.option(
    "--mode",
    type=click.Choice(ONLINE_MODES),
    default="learnability",
    show_default=True,
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="b: examples trained on per step.",
)
@click.option(
    "--super-batch-ratio",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="r: the student scores r·b examples per step.",
)
@sampling_options
@schedule_options
@click.option("--eval", "eval_inputs", multiple=True, help="Held-out raw data for eval loss.")
@click.option("--eval-every", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--init", help="Start from this checkpoint instead of a fresh model.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --output.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--score-seq-len",
    type=click.IntRange(min=1),
    help="lm: the student scores only the first N tokens (a cheaper pass).",
)
@device_option
@model_size_options
@field_options
def train_command(
    shards,
    data,
    task,
    output,
    mode,
    batch_size,
    super_batch_ratio,
    chunks,
    temperature,
    steps,
    lr,
    warmup_steps,
    eval_inputs,
    eval_every,
    init,
    resume,
    seed,
    score_seq_len,
    device,
    d_model,
    n_layer,
    n_head,
    max_len,
    **fields,
) -> None:
    """Train a student on curated shards with online JEST (the student re-scores each super-batch),
    or on raw data (--data) for a baseline."""
    from ..trainer.loop import TrainConfig, train

    config = TrainConfig(
        shards=shards, data=data, task=task, output=output, mode=mode, batch_size=batch_size,
        super_batch_ratio=super_batch_ratio, n_chunks=chunks, temperature=temperature,
        steps=steps, lr=lr, warmup_steps=warmup_steps, eval_inputs=eval_inputs,
        fields=make_fields(task, **fields) if eval_inputs or data else None,
        eval_every=eval_every,
        init=init, resume=resume, seed=seed, score_seq_len=score_seq_len, device=device,
        d_model=d_model, n_layer=n_layer, n_head=n_head, max_len=max_len,
        progress=sys.stderr.isatty(),
    )  # fmt: skip
    last = train(config)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    click.echo(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in last.items() if v is not None and k != "tags"))  # fmt: skip
    click.echo(f"student written to {output} (log: {output.rstrip('/')}/log.jsonl)")


@main.command("inspect")
@click.argument("runs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_runs(runs, as_json) -> None:
    """Summarise the curation run in RUN, or compare two: OLD NEW (counts, the overlap of the
    selected examples, how teacher losses and scores moved)."""
    import json

    from ..transforms.runs import compare_runs, comparison_text, summarize_run, summary_text

    if len(runs) > 2:
        raise click.UsageError("give one run to summarise, or two (OLD NEW) to compare")
    if len(runs) == 1:
        result, text = summarize_run(runs[0]), summary_text
    else:
        result, text = compare_runs(*runs), comparison_text
    click.echo(json.dumps(result, indent=2) if as_json else text(result))


@main.command("plot")
@click.argument("runs", nargs=-1, required=True)
@click.option("--output", "-o", default="eval.png", show_default=True, help="PNG to write.")
@click.option(
    "--x",
    "x_axis",
    type=click.Choice(["step", "flops"]),
    default="step",
    show_default=True,
    help="Steps, or the estimated FLOPs of scoring and training.",
)
def plot(runs, output, x_axis) -> None:
    """Draw the eval curves of several `jestflow train` RUN directories on one PNG."""
    from ..trainer.plot import plot_runs

    plot_runs(runs, output, x=x_axis)
    click.echo(f"wrote {output}")


@main.group(cls=Group, invoke_without_command=True)
@click.option("--output", "-o", default="build/demo", show_default=True, help="Demo directory.")
@click.option("--pool-size", type=click.IntRange(min=1000), default=10_000, show_default=True)
@click.option("--teacher-steps", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--student-steps", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--keep", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Fraction of the pool the offline pass keeps.")  # fmt: skip
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.1,
              show_default=True, help="Online selection temperature.")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Beam worker processes for the curation step.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("--overwrite", is_flag=True, help="Replace a demo already in --output.")
@click.pass_context
def demo(ctx, output, pool_size, teacher_steps, student_steps, keep, temperature, workers, seed,
         device, overwrite) -> None:  # fmt: skip
    """The whole loop on the embedded demo data: make the data, train the teacher, curate the pool,
    train a student uniformly on the raw pool and with online JEST on the curated shards, and
    compare them (a table, results.json, eval.png). `jestflow demo data` makes only the data."""
    if ctx.invoked_subcommand is not None:
        given = [
            p.opts[0]
            for p in ctx.command.params
            if ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)}: an option of `jestflow demo` itself; "
                f"`jestflow demo {ctx.invoked_subcommand}` takes its own"
            )
        return
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(output=output, pool_size=pool_size, teacher_steps=teacher_steps,
                        student_steps=student_steps, keep=keep, temperature=temperature,
                        workers=workers, seed=seed, device=device, overwrite=overwrite,
                        progress=sys.stderr.isatty()), echo=click.echo)  # fmt: skip


@demo.command("data")
@click.argument("output")
@click.option("--pool-size", type=click.IntRange(min=10), default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo_data(output, pool_size, seed) -> None:
    """Write the demo corpora (made from Python's standard library docstrings) to OUTPUT."""
    from .demo_data import DemoDataConfig, make_corpora

    counts = make_corpora(DemoDataConfig(output=output, pool_size=pool_size, seed=seed))
    for name, count in counts.items():
        click.echo(f"{count:>7} records  {output.rstrip('/')}/{name}")


if __name__ == "__main__":
    main()
