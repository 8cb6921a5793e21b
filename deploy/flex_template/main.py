"""The Dataflow Flex Template's main file (FLEX_TEMPLATE_PYTHON_PY_FILE in deploy/Dockerfile).

Dataflow's launcher runs `python main.py --name=value ...` with the template's parameters
(metadata.json: `inputs` and the options of `jestflow curate`, spelt with underscores) and the
pipeline options it adds itself (--runner, --project, --region, --temp_location,
--staging_location, --template_location, --job_name, --sdk_container_image, …). This turns them
into one `jestflow curate` command line and runs it:

- `inputs` (comma-separated URLs or globs) become curate's positional INPUT...;
- a parameter named like a curate option gets the CLI spelling (`super_batch=2048` →
  `--super-batch=2048`; flags take true/false; `keep_field` is comma-separated);
- everything else passes through to Beam unchanged, as `--name=value`.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from jestflow.cli import main as jestflow
from jestflow.cli.curate import curate
from jestflow.pipeline.job import FLEX_TEMPLATE

TRUE = {"true", "yes", "1"}
FALSE = {"false", "no", "0"}


def curate_options() -> dict[str, click.Option]:
    """curate's options by template parameter name: `--super-batch` → `super_batch`."""
    return {
        max(p.opts, key=len).lstrip("-").replace("-", "_"): p
        for p in curate.params
        if isinstance(p, click.Option)
    }


def option_args(option: click.Option, value: str | None) -> list[str]:
    """One template parameter as curate arguments (value None: given without `=value`)."""
    flag = max(option.opts, key=len)
    if option.is_flag:
        given = "true" if value is None else value.strip().lower()
        if given not in TRUE | FALSE:
            raise ValueError(f"{flag[2:]} takes true or false, not {value!r}")
        return [flag] if given in TRUE else []
    if value is None:
        raise ValueError(f"{flag[2:]} needs a value: --{flag[2:]}=VALUE")
    values = value.split(",") if option.multiple else [value]
    return [f"{flag}={v}" for v in values if v]  # an empty value is a parameter left unset


def curate_args(argv: list[str]) -> list[str]:
    """The `jestflow` arguments for the launcher's argv (template parameters and Beam options)."""
    options = curate_options()
    inputs: list[str] = []
    given: list[str] = []
    beam: list[str] = []
    for arg in argv:
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}: parameters come as --name=value")
        name, has_value, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key == "inputs":
            inputs += [url.strip() for url in value.split(",") if url.strip()]
        elif key in options:
            given += option_args(options[key], value if has_value else None)
        else:
            beam.append(arg)
    if not inputs:
        raise ValueError("no inputs: give the parameter inputs=URL[,URL...]")
    return ["curate", *inputs, *given, *beam]


def main(argv: list[str] | None = None) -> None:
    try:
        args = curate_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        sys.exit(f"jestflow flex template: {e}")
    print(f"jestflow flex template: jestflow {shlex.join(args)}", file=sys.stderr, flush=True)
    # The launcher builds the graph at launch time: `curate` may stage it (--template_location).
    os.environ[FLEX_TEMPLATE] = "1"
    jestflow(args, prog_name="jestflow")  # exits: 0, or 1 with an `Error: …` line


if __name__ == "__main__":
    main()
