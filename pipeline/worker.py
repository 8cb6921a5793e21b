"""Beam's local worker process (`FnApiRunner` with several workers starts one per worker), with
jestflow's logging set up before Beam loads: its lines show at the level the job was started
with, and Beam's start-up notices stay out of the way (see `transforms/logs.py`)."""

from __future__ import annotations

import os
import runpy

from ..transforms import logs


def main() -> None:
    logs.configure(os.environ.get(logs.LEVEL_VARIABLE, "WARNING"))
    runpy.run_module("apache_beam.runners.worker.sdk_worker_main", run_name="__main__")


if __name__ == "__main__":
    main()
