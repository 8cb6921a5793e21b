"""Prefetching: a step's candidates are taken in a thread, in order, a bounded number of steps
ahead; an error there reaches the step that needed them; closing stops the thread."""

from __future__ import annotations

import threading
import time

import pytest

from jestflow.trainer.prefetch import Prefetcher
from jestflow.transforms.errors import JestflowError


class Recorder:
    """A `make` that records the steps it was asked for, and in which thread."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.steps: list[int] = []
        self.threads: set[str] = set()
        self.fail_at = fail_at
        self.made = threading.Condition()

    def __call__(self, step: int) -> dict:
        with self.made:
            self.steps.append(step)
            self.threads.add(threading.current_thread().name)
            self.made.notify_all()
        if step == self.fail_at:
            raise JestflowError(f"step {step} could not be drawn")
        return {"step": step}

    def wait_for(self, n: int) -> None:
        with self.made:
            assert self.made.wait_for(lambda: len(self.steps) >= n, timeout=10)


def test_steps_come_in_order_made_ahead_in_another_thread():
    make = Recorder()
    with Prefetcher(map(make, range(3, 10)), depth=2) as ahead:
        first, waited = ahead.get()
        assert first == {"step": 3} and waited >= 0
        make.wait_for(4)  # step 3 taken: 4 and 5 queued, 6 made and waiting for room
        time.sleep(0.2)
        assert make.steps == [3, 4, 5, 6]  # no further: at most `depth` wait in the queue
        assert [ahead.get()[0]["step"] for _ in range(6)] == [4, 5, 6, 7, 8, 9]
    assert make.threads == {"jestflow-prefetch"}


def test_an_error_in_the_thread_reaches_the_step_that_needed_it():
    with Prefetcher(map(Recorder(fail_at=2), range(5))) as ahead:
        assert [ahead.get()[0]["step"] for _ in range(2)] == [0, 1]
        with pytest.raises(JestflowError, match="step 2 could not be drawn"):
            ahead.get()


def test_closing_mid_run_stops_the_thread():
    make = Recorder()
    ahead = Prefetcher(map(make, range(1000)), depth=2)
    ahead.get()
    make.wait_for(3)
    ahead.close()
    assert not ahead._thread.is_alive() and len(make.steps) <= 4
