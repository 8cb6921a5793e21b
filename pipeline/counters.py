"""The job's Beam counters: one namespace, read back by `job.py` for the run's progress log."""

from __future__ import annotations

from collections import Counter

from apache_beam.metrics import Metrics

NAMESPACE = "jestflow"


def count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)


def sum_counters(counters) -> Counter:
    total: Counter = Counter()
    for counter in counters:
        total.update(counter)
    return total
