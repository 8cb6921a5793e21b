"""`jestflow curate`: the curation job (`pipeline/`) from the command line."""

from __future__ import annotations

import contextlib
import difflib
import os

import click

from ..transforms.reporting import logs
from .options import (
    POSITIVE,
    config_from,
    dedup_config,
    dedup_options,
    device_option,
    echo_next,
    exit_on_ctrl_c,
    field_flags,
    field_map,
    field_options,
    score_document_options,
    score_seq_len_option,
    selection_options,
    semantic_config,
    task_option,
)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("inputs", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--output", "-o", required=True, help="Output URL (local path, gs://, s3://, memory://)."
)
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    required=True,
    help="Teacher checkpoint directory: an lm or contrastive model, or (lm pools) a classifier "
    "(`teacher train --task classifier`: its log-odds is the score). Repeat for an ensemble "
    "(lm pools): each example's score is the weighted sum of every teacher's score as a z-score "
    "within its super-batch (the first teacher's by --score, the others' log-odds or −loss).",
)
@click.option(
    "--teacher-weight",
    "teacher_weights",
    type=float,
    multiple=True,
    help="The weight of each --teacher's z-score in an ensemble, in the same order  [default: 1 "
    "each]",
)
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
@score_document_options
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
    from ..pipeline.config import CurateConfig
    from ..pipeline.job import run_curation
    from ..pipeline.worker import stop_workers
    from ..transforms.reporting.runs import stats_text
    from ..transforms.selection.offline import SelectionConfig

    inputs = params.pop("inputs")
    check_beam_options([a for a in inputs if a.startswith("-")], click.get_current_context())
    params["mode"] = params["mode"] or ("learnability" if params["student"] else "easy_reference")
    params["workers"] = params["workers"] or os.cpu_count() or 1
    params["teacher"], *others = params.pop("teachers")
    params["teachers"] = tuple(others)
    config = config_from(
        CurateConfig,
        params,
        inputs=tuple(a for a in inputs if not a.startswith("-")),
        beam_args=tuple(a for a in inputs if a.startswith("-")),
        fields=field_map(params["task"], params),
        dedup=dedup_config(params),
        semantic=semantic_config(params),
        selection=config_from(SelectionConfig, params),
    )
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
    echo_next(
        [
            f"jestflow train --shards '{root}/shards/*.tar' --task {config.task} -o STUDENT "
            f"--eval HELD_OUT{field_flags(config.fields)}   (a student, with online JEST)"
        ]
    )


def check_beam_options(args: list[str], context: click.Context) -> None:
    """Options curate does not know pass through to Beam; one Beam does not know either (a typo
    such as `--tier=4`) would be dropped without a word, so it is a usage error."""
    if not args:
        return
    from ..pipeline.job import unknown_beam_options

    unknown = unknown_beam_options(args)
    if unknown:
        name = unknown[0]
        ours = [opt for param in context.command.params for opt in param.opts]
        close = difflib.get_close_matches(name.replace("_", "-"), ours, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise click.UsageError(f"no such option: {name} (neither curate's nor Beam's){hint}")
