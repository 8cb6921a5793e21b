"""`jestflow inspect` (a curation run, or two compared) and `jestflow plot` (training runs'
held-out curves)."""

from __future__ import annotations

import click


@click.command("inspect")
@click.argument("runs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_runs(runs, as_json) -> None:
    """Summarise the curation run in RUN, or compare two: OLD NEW (counts, the overlap of the
    selected examples, how teacher losses and scores moved)."""
    import json

    from ..transforms.reporting.runs import (
        compare_runs,
        comparison_text,
        summarize_run,
        summary_text,
    )

    if len(runs) > 2:
        raise click.UsageError("give one run to summarise, or two (OLD NEW) to compare")
    if len(runs) == 1:
        result, text = summarize_run(runs[0]), summary_text
    else:
        result, text = compare_runs(*runs), comparison_text
    click.echo(json.dumps(result, indent=2) if as_json else text(result))


@click.command("plot")
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
