"""`jestflow demo`: the whole loop on the embedded demo data (`demo/`), and `jestflow demo data`."""

from __future__ import annotations

import click

from ..transforms.vocabulary import DEMO_TASKS, PAIR_TEACHERS
from .options import (
    POSITIVE,
    Group,
    config_from,
    device_option,
    seed_option,
    temperature_options,
)


@click.group(cls=Group, invoke_without_command=True)
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
    default=16_000,
    show_default=True,
    help="Records in the LM pool.",
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
    default=4000,
    show_default=True,
    help="Records in the text-pair pool.",
)
@click.option(
    "--scene-pool-size",
    type=click.IntRange(min=100),
    default=10_000,
    show_default=True,
    help="Records in the image-text pool.",
)
@click.option(
    "--student-steps",
    type=POSITIVE,
    default=None,
    show_default="300; 150 for text pairs",
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
    from ..demo import DemoConfig, run_demo

    run_demo(config_from(DemoConfig, params), echo=click.echo)


@demo.command("data")
@click.argument("output")
@click.option(
    "--pool-size",
    type=click.IntRange(min=10),
    default=16_000,
    show_default=True,
    help="Records in the LM pool (text pairs: 4,000; scenes: 10,000).",
)
@seed_option
def demo_data(output, pool_size, seed) -> None:
    """Write the demo corpora to OUTPUT: made from Python's standard library docstrings (lm,
    text pairs), and synthetic scenes with captions (image-text, WebDataset tars)."""
    from ..demo import DemoDataConfig, SceneConfig, make_corpora, make_scenes

    counts = make_corpora(DemoDataConfig(output=output, pool_size=pool_size, seed=seed))
    scenes = make_scenes(SceneConfig(output=output, seed=seed))
    counts |= {name: n for name, n in scenes.items() if not name.startswith("pool:")}
    for name, count in counts.items():
        click.echo(f"{count:>7} records  {output.rstrip('/')}/{name}")
