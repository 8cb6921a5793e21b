"""The job's Beam counters: one namespace, read back by `job.py` for the run's progress log."""

from __future__ import annotations

from apache_beam.metrics import Metrics

NAMESPACE = "jestflow"


def count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)
