"""Each step's candidates, drawn and made into model inputs ahead of the step that uses them.

A step of online JEST reads r·b samples, decodes them (tar members, json, images) and makes the
student's inputs of them (tokens, image tensors); done inside the step, that is time the step
spends neither scoring nor training. The trainer makes them in a worker process of their own
(`loader.read_ahead`; or in the thread below), and `Prefetcher` takes them in a background
thread, `depth` steps ahead, so a step only waits when they fall behind; the wait is what the
log's `draw_seconds` counts, and `load_seconds` the work of making them.

One reader takes the sample stream and draws the steps in order, and nothing it draws depends
on the model's weights (a step's windows come from the step's own random stream), so
a run draws the same candidates with or without it, and a resumed run the same as an
uninterrupted one. Each candidate's inputs are made once: the scoring pass and the training step
use the same tensors.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.shard_samples import TrainSample
from ..transforms.models.images import resize_images
from .core import model_inputs
from .online_selection import scoring_inputs
from .windows import Windows, step_windows

DEPTH = 2  # steps drawn ahead: one being drawn while one waits
JOIN_SECONDS = 30.0


@dataclass(frozen=True)
class Candidates:
    """One step's super-batch of r·b samples and the model inputs made of them."""

    step: int
    samples: list[TrainSample]
    windows: Windows | None  # lm documents: the window of each sample the step works on
    scored: list | None  # what the student scores (None: the mode scores nothing)
    inputs: list  # what each candidate trains on if chosen
    seconds: float  # spent drawing and preparing them


def draw(stream: Iterator[TrainSample], n: int) -> list[TrainSample]:
    """The next n samples of an endless stream."""
    batch = list(itertools.islice(stream, n))
    if len(batch) < n:
        raise JestflowError("the shards ran out of samples")  # resampled streams never do
    return batch


def prepare(
    model: nn.Module,
    samples: Sequence[TrainSample],
    windows: Windows | None,
    *,
    scoring: bool,
    score_max_len: int | None = None,
    score_image_size: int | None = None,
) -> tuple[list | None, list]:
    """(what the student scores, what each candidate trains on; `online_selection.scoring_inputs`
    for the first): a document's drawn window for both; an lm text's first `score_max_len` tokens
    and its whole tokens; a pair's two towers' inputs for both, its image resized to
    `score_image_size` for scoring where that is given. Nothing to score unless `scoring`."""
    scored = (
        scoring_inputs(model, samples, score_max_len=score_max_len, windows=windows)
        if scoring
        else None
    )
    if windows is not None:
        return scored, windows.sequences
    texts = [s.text for s in samples]
    if model.task == "lm":
        return scored, model.tokenize(texts)
    inputs = scored or model_inputs(model, texts, [s.right for s in samples])
    if scored is not None and score_image_size is not None:
        left, right = zip(*inputs, strict=True)
        if right[0].dim() != 3:
            raise JestflowError("--score-image-size is for image-text pairs: these pair texts")
        scored = list(zip(left, resize_images(right, score_image_size), strict=True))
    return scored, inputs


def step_candidates(
    model: nn.Module,
    stream: Iterator[TrainSample],
    step: int,
    *,
    size: int,
    seed: int,
    raw: bool,
    scoring: bool,
    score_max_len: int | None,
    score_image_size: int | None = None,
) -> Candidates:
    """Step `step`'s candidates: the next `size` samples of the stream, their windows (lm
    documents) and their inputs (`prepare`)."""
    began = time.perf_counter()
    samples = draw(stream, size)
    windows = step_windows(model, samples, seed, step, raw=raw)
    scored, inputs = prepare(
        model,
        samples,
        windows,
        scoring=scoring,
        score_max_len=score_max_len,
        score_image_size=score_image_size,
    )
    return Candidates(step, samples, windows, scored, inputs, time.perf_counter() - began)


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class Prefetcher:
    """The items (each step's candidates) taken from `items` in a background thread, in order, at
    most `depth` ahead of the steps that take them (`get`). An error in the thread is raised by
    the `get` that would have returned its item. `close` stops the thread (also mid-run: at an
    error or Ctrl-C)."""

    def __init__(self, items: Iterable[Candidates], depth: int = DEPTH) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(items,), name="jestflow-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, items: Iterable[Candidates]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the step that waits for it
            self._put(_Failed(error))

    def _put(self, item: Candidates | _Failed) -> bool:
        """Queue `item` once there is room; False if the prefetcher was closed first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> tuple[Candidates, float]:
        """The next step's candidates, and the seconds spent waiting for them."""
        began = time.perf_counter()
        item = self._queue.get()
        if isinstance(item, _Failed):
            raise item.error
        return item, time.perf_counter() - began

    def close(self) -> None:
        """Stop the thread (after the item it is taking) and let what it took go. A thread still
        stuck in its reader after JOIN_SECONDS is left behind (a daemon: it ends with the
        process), so a run that stops on an error or Ctrl-C never hangs on its reader."""
        self._stop.set()
        self._thread.join(JOIN_SECONDS)
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
