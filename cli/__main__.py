"""`python -m jestflow.cli …` is the `jestflow` command (torchrun uses it: `-m jestflow.cli train`)."""

from .main import main

main()
