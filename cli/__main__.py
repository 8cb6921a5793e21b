"""`python -m jestflow.cli …` is the `jestflow` command (torchrun runs `-m jestflow.cli train`)."""

from .main import main

main()
