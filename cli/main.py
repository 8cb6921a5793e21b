"""The `jestflow` command line. It only fills config dataclasses (one module per command, their
shared options in `options.py`) and hands them to the code that does the work; bad input ends in
a one-line `Error:` and exit status 1 (2 for a bad option value), diagnostics go through
`logging` (`transforms/reporting/logs.py`)."""

from __future__ import annotations

import click

from ..transforms.reporting import logs
from .curate import curate
from .demo import demo
from .inspect import inspect_runs, plot
from .options import Group
from .teacher import teacher
from .train import train_command


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jestflow")
def main() -> None:
    """Curate training data with a teacher model and JEST joint example selection."""
    logs.configure("INFO")


for command in (curate, train_command, teacher, inspect_runs, plot, demo):
    main.add_command(command)


if __name__ == "__main__":
    main()
