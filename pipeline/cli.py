"""The `jestflow` command line. It only fills config dataclasses (options: `cli_options.py`) and
hands them to the code that does the work; bad input ends in a one-line `Error:` and exit
status 1 (2 for a bad option value), diagnostics go through `logging` (`transforms/logs.py`)."""

from __future__ import annotations

import contextlib
import os

import click

from ..transforms import logs
from ..transforms.vocabulary import DEMO_TASKS, PAIR_TEACHERS
from .cli_options import (
    POSITIVE,
    Group,
    config_from,
    dedup_config,
    dedup_options,
    device_option,
    echo_next,
    eval_option,
    exit_on_ctrl_c,
    field_map,
    field_options,
    interrupted,
    mode_option,
    model_size_options,
    overwrite_option,
    sampling_options,
    schedule_options,
    score_seq_len_option,
    seed_option,
    selection_options,
    task_option,
    temperature_options,
)
from .cli_teacher import teacher


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jestflow")
def main() -> None:
    """Curate training data with a teacher model and JEST joint example selection."""
    logs.configure("INFO")


main.add_command(teacher)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("inputs", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--output", "-o", required=True, help="Output URL (local path, gs://, s3://, memory://)."
)
@click.option("--teacher", required=True, help="Teacher checkpoint directory.")
@task_option
@selection_options
@dedup_options
@click.option(
    "--super-batch",
    type=click.IntRange(min=2),
    default=1024,
    show_default=True,
    help="Examples grouped for one joint selection.",
)
@click.option("--student", help="Student checkpoint: select by learnability offline.")
@score_seq_len_option
@click.option(
    "--tiers",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Split the selected set into K score tiers, shards named tier-00 (best) … .",
)
@field_options
@click.option(
    "--shard-max-count",
    type=POSITIVE,
    default=10_000,
    show_default=True,
    help="Samples per shard at most.",
)
@click.option(
    "--shard-max-bytes",
    type=POSITIVE,
    default=1 << 30,
    show_default=True,
    help="Payload bytes per shard at most.",
)
@click.option("--workers", type=POSITIVE, show_default="the cores", help="Local worker processes.")
@device_option
@click.option("--model-copies", type=POSITIVE, help="Model copies per worker (RunInference).")
@click.option("--large-model", is_flag=True, help="Share one model across a worker's processes.")
@click.option(
    "--accelerator",
    help="Resource hint for the scoring step, e.g. 'type:nvidia-l4;count:1;install-nvidia-driver'.",
)
@click.option(
    "--cache",
    help="Score cache URL: models' outputs by (example id, model "
    "fingerprint); a re-run scores only what it does not hold.",
)
@click.option("--overwrite", is_flag=True, help="Replace a completed curation run in --output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines, only the summary.")
def curate(**params) -> None:
    """Score INPUT... with a teacher, select by JEST per super-batch, write ranked shards.

    Options Beam knows (--runner=DataflowRunner, --project=…) pass through; give them as
    --name=value.
    """
    if params.pop("quiet"):
        logs.configure("WARNING")
    from ..transforms.offline_selection import SelectionConfig
    from ..transforms.runs import stats_text
    from .job import CurateConfig, run_curation
    from .worker import stop_workers

    inputs = params.pop("inputs")
    params["mode"] = params["mode"] or ("learnability" if params["student"] else "easy_reference")
    params["workers"] = params["workers"] or os.cpu_count() or 1
    config = config_from(
        CurateConfig, params,
        inputs=tuple(a for a in inputs if not a.startswith("-")),
        beam_args=[a for a in inputs if a.startswith("-")],
        fields=field_map(params["task"], params),
        dedup=dedup_config(params),
        selection=config_from(SelectionConfig, params),
    )  # fmt: skip
    stopped = (
        f"Interrupted: curate stopped before {config.output} was complete (no _SUCCESS); the "
        "same command again redoes the run (with --cache, what was scored is kept)"
    )
    # The local runner's workers ignore SIGINT (pipeline/worker.py): this process stops them. A
    # remote runner's job is the runner's to cancel: there Ctrl-C only stops this launcher.
    local = not any(a.startswith("--runner") for a in config.beam_args)
    with exit_on_ctrl_c(stopped, cleanup=stop_workers) if local else contextlib.nullcontext():
        stats = run_curation(config)
    if stats is None:
        click.echo(
            f"job staged as a template; it writes {config.output} and _SUCCESS there when done"
        )
        return
    click.echo(stats_text(stats, config.output))
    root = config.output.rstrip("/")
    length = "" if config.score_seq_len is None else f" --score-seq-len {config.score_seq_len}"
    echo_next([f"jestflow train --shards '{root}/shards/*.tar' --task {config.task} -o STUDENT "
               f"--eval HELD_OUT{length}   (a student, with online JEST)"])  # fmt: skip


@main.command("train")
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
    default=5,
    show_default=True,
    help="r: the student scores r·b examples per step.",
)
@sampling_options
@schedule_options
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
    steps = [f"jestflow teacher promote {output} -o NEW_TEACHER --eval HELD_OUT --against "
             "TEACHER   (the student as the next teacher)"]  # fmt: skip
    if config.eval_inputs:
        steps.insert(0, f"jestflow plot {output} -o {output}/eval.png   (its held-out curve)")
    echo_next(steps)


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
    type=click.Choice(["step", "flops", "time"]),
    default="step",
    show_default=True,
    help="Steps, the estimated FLOPs of scoring and training, or the steps' wall-clock seconds.",
)
def plot(runs, output, x_axis) -> None:
    """Draw the eval curves of several `jestflow train` RUN directories on one PNG."""
    from ..trainer.plot import plot_runs

    plot_runs(runs, output, x=x_axis)
    click.echo(f"wrote {output}")


@main.group(cls=Group, invoke_without_command=True)
@click.option("--output", "-o", default="build/demo", show_default=True, help="Demo directory.")
@click.option(
    "--task",
    "tasks",
    type=click.Choice(DEMO_TASKS),
    multiple=True,
    default=DEMO_TASKS,
    show_default=True,
    help="The demo tasks to run (repeat the option for several).",
)
@click.option(
    "--pool-size",
    type=click.IntRange(min=1000),
    default=10_000,
    show_default=True,
    help="Records in each demo pool.",
)
@click.option(
    "--teacher-steps",
    type=POSITIVE,
    default=300,
    show_default=True,
    help="The LM teacher's training steps.",
)
@click.option(
    "--pair-teacher-steps",
    type=POSITIVE,
    default=600,
    show_default=True,
    help="A built-in two-tower teacher's training steps (image-text; text pairs without MiniLM).",
)
@click.option(
    "--pair-teacher",
    type=click.Choice(PAIR_TEACHERS),
    default="auto",
    show_default=True,
    help="The text pairs' teacher: the calibrated MiniLM (extra `minilm`), the built-in one, or "
    "auto: MiniLM where it is installed.",
)
@click.option(
    "--pair-pool-size",
    type=click.IntRange(min=100),
    default=3000,
    show_default=True,
    help="Records in the text-pair and the image-text pools.",
)
@click.option(
    "--student-steps",
    type=POSITIVE,
    default=300,
    show_default=True,
    help="Each student's training steps.",
)
@click.option(
    "--keep",
    type=click.FloatRange(0, 1, min_open=True),
    help="Fraction of the pool the offline pass keeps [default: 0.3 for lm, whose pool is 80 % "
    "noise; 0.5 for the pairs].",
)
@temperature_options
@click.option(
    "--workers",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Beam worker processes for the curation step.",
)
@seed_option
@device_option
@click.option("--overwrite", is_flag=True, help="Replace a demo already in --output.")
@click.pass_context
def demo(ctx, **params) -> None:
    """The whole loop on the embedded demo data, for each task (language modelling, text pairs,
    image-text pairs): make the data, get the teacher, curate the pool, train a student uniformly
    on the raw pool and with online JEST on the curated shards, and compare them (tables,
    results.json, TASK/eval.png). `jestflow demo data` makes only the data."""
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

    run_demo(config_from(DemoConfig, params), echo=click.echo)


@demo.command("data")
@click.argument("output")
@click.option(
    "--pool-size",
    type=click.IntRange(min=10),
    default=10_000,
    show_default=True,
    help="Records in each demo pool.",
)
@seed_option
def demo_data(output, pool_size, seed) -> None:
    """Write the demo corpora to OUTPUT: made from Python's standard library docstrings (lm,
    text pairs), and synthetic scenes with captions (image-text, WebDataset tars)."""
    from .demo_data import DemoDataConfig, make_corpora
    from .demo_scenes import SceneConfig, make_scenes

    counts = make_corpora(DemoDataConfig(output=output, pool_size=pool_size, seed=seed))
    scenes = make_scenes(SceneConfig(output=output, seed=seed))
    counts |= {name: n for name, n in scenes.items() if not name.startswith("pool:")}
    for name, count in counts.items():
        click.echo(f"{count:>7} records  {output.rstrip('/')}/{name}")


if __name__ == "__main__":
    main()
