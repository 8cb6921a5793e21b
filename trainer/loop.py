"""The online trainer: `jestflow train`. Each step draws r·b samples from the curated shards,
lets the student re-score them, chooses b (online JEST, or the first b for `uniform`), and takes
one optimizer step on those b. Raw inputs (`data`) instead of shards train the baselines that
need no teacher values: `uniform` and `hard_learner`.

The output directory is a checkpoint like a teacher's (config.json + model.safetensors, so a
trained student can be the next teacher), plus the committed checkpoint folder, the trainer
state and the log: `checkpoints.py` has the layout and the crash-safe order it is saved in. A
run killed at any moment resumes (`resume`) from its last committed step and continues exactly
as an uninterrupted run would: the same samples, the same sub-batches, the same parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import load_model
from ..transforms.formats.shard_samples import TrainSample
from ..transforms.models.scoring import scoring_length
from ..transforms.paths import expand_urls, writable_directory
from ..transforms.records import FieldMap
from ..transforms.reporting.logs import progress
from ..transforms.selection.jest import RELATIVE_TEMPERATURE, check_temperatures, generator_for
from ..transforms.vocabulary import (
    DRAW_B_MODES,
    ONLINE_MODES,
    RAW_MODES,
    UNSCORED_MODES,
    check_choice,
)
from . import checkpoints, output_folder
from .checkpoints import deferred_interrupt
from .core import (
    ModelSize,
    Optimization,
    fresh_model,
    initial_model,
    load_examples,
    right_kind_of,
    start_training,
)
from .distributed import LossOf, Ranks, gather, parameter_digest, setup, teardown, wrap
from .flops import FlopCount
from .loader import cores_beside_reader, raw_samples, read_ahead, train_samples
from .online_selection import select_online
from .prefetch import Candidates, Prefetcher, step_candidates
from .steps import Run, log_step, step_record
from .weighted import step_batch, training_loss
from .windows import has_windows, shard_scoring_length

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainConfig(ModelSize, Optimization):
    shards: tuple[str, ...] = ()  # URL patterns: brace ranges, globs, any fsspec URL
    task: str
    output: str
    data: tuple[str, ...] = ()  # raw inputs instead of shards (uniform and hard_learner only)
    mode: str = "learnability"
    batch_size: int = 32  # b: examples trained on per step
    # r: the student scores r·b per step. 2, measured: as many steps saved as 3 or 5 on every
    # demo task once curation has taken out the noise, at less scoring (the results page: the
    # recipe sweep of bench/data_efficiency.py)
    super_batch_ratio: int = 2
    n_chunks: int = 16
    temperature: float | None = None  # absolute τ; None: relative_temperature × the spread
    relative_temperature: float = RELATIVE_TEMPERATURE
    eval_inputs: tuple[str, ...] = ()  # held-out raw data (JSONL, Parquet, tars)
    fields: FieldMap | None = None  # of `data` and `eval_inputs`
    eval_every: int = 100
    init: str | None = None  # start from this checkpoint instead of a fresh model
    resume: bool = False  # continue from the checkpoint in `output`
    overwrite: bool = False  # replace what `output` holds (anything but a run to resume)
    seed: int = 0
    # lm: the student scores only the first N tokens of each candidate, a cheaper pass; None:
    # what the shards' teacher scored (windows of whole documents, or the first N tokens of
    # shards curated so); 0: whole texts
    score_seq_len: int | None = None
    device: str = "auto"
    # make each step's candidates (read, decode, model inputs) in a worker process beside
    # training (`loader.read_ahead`); False: in the prefetching thread, in the trainer's process
    read_process: bool = True
    # images: the student scores them at this side in pixels, a cheaper pass (Flexi-JEST); None:
    # at its own size. `small_share` of the steps then train at that size too (multi-resolution
    # training): on the demo's scenes half the steps at 32 px make the cheap scores rank as the
    # full ones do with ρ 0.75 instead of 0.43, yet the student reaches its target in more steps
    # (3.7× against 4.5× fewer than uniform; bench/data_efficiency.py --sweep), so 0 by default
    score_image_size: int | None = None
    small_share: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("mode", self.mode, ONLINE_MODES)
        if self.batch_size < 2 or self.super_batch_ratio < 1 or self.steps < 1:
            raise JestflowError("batch size ≥ 2, super-batch ratio ≥ 1 and steps ≥ 1, please")
        if bool(self.shards) == bool(self.data):
            raise JestflowError(
                "give --shards (curated shards) or --data (raw inputs): exactly one"
            )
        if self.data and self.mode not in RAW_MODES:
            raise JestflowError(
                f"--mode {self.mode} needs the teacher's values: train on shards written by "
                f"jestflow curate (--keep 1 scores everything), or pass --mode uniform or "
                f"--mode hard_learner for raw data"
            )
        if (self.eval_inputs or self.data) and self.fields is None:
            raise JestflowError("raw and held-out inputs need a field mapping")
        scoring_length(self.task, self.score_seq_len)  # checks the option
        if self.resume and self.init is not None:
            raise JestflowError("--resume continues the run in --output; drop --init")
        if self.resume and self.overwrite:
            raise JestflowError("--resume continues the run in --output; drop --overwrite")
        check_temperatures(self.temperature, self.relative_temperature)
        if self.score_image_size is not None and self.task != "contrastive":
            raise JestflowError("--score-image-size is for image-text pairs (--task contrastive)")
        if self.score_image_size is not None and self.score_image_size < 16:
            raise JestflowError("--score-image-size is an image side of 16 pixels or more")
        if not 0 <= self.small_share <= 1:
            raise JestflowError("--small-share is a share of the steps, from 0 to 1")

    @property
    def super_batch(self) -> int:
        """r·b: the samples each step draws (per rank); b for uniform, which trains on what it
        draws (drawing r·b would only slow the baseline down)."""
        return self.batch_size * (1 if self.mode in DRAW_B_MODES else self.super_batch_ratio)

    @property
    def scoring_length(self) -> int | None:
        """The first tokens of each candidate `--score-seq-len` asks the student to score (None:
        not asked: `windows.shard_scoring_length` follows the shards then)."""
        return scoring_length(self.task, self.score_seq_len)

    def trains_small(self, step: int) -> bool:
        """Whether the step (0-based) trains at the scoring size: `small_share` of the steps,
        spread evenly (every other one at 0.5), when the student scores images smaller."""
        if self.score_image_size is None or self.mode in UNSCORED_MODES:
            return False
        return int((step + 1) * self.small_share) > int(step * self.small_share)

    def checkpoint_due(self, step: int) -> bool:
        """Whether the step (0-based) ends with an evaluation and a checkpoint."""
        return (step + 1) % self.eval_every == 0 or step + 1 == self.steps


def train(config: TrainConfig) -> dict:
    """Run the online trainer; returns the last evaluation (or the last step's log line)."""
    ranks = setup(config.device)
    finished = False
    try:
        last = _train(config, ranks)
        finished = True
        return last
    finally:
        teardown(ranks, finished=finished)


def _train(config: TrainConfig, ranks: Ranks) -> dict:
    """Set the run up and take its steps; where the reader process decodes images, the training
    threads leave it a core (`loader.cores_beside_reader`; text is cheap to read, and an LM step
    on 2 cores takes 1.6× as long on one thread)."""
    run = _set_up(config, ranks)
    decodes_images = getattr(run.model, "right_kind", None) == "image"
    with cores_beside_reader(config.read_process and decodes_images):
        return _take_steps(run)


def _take_steps(run: Run) -> dict:
    """Each step: take the r·b candidates drawn ahead (`prefetch`), let the student choose b of
    them, take one optimizer step on those; the main rank logs the step, and every `eval_every`
    steps evaluates and checkpoints."""
    config, ranks = run.config, run.ranks
    candidates = _draw_ahead(run)
    steps = _steps(config, run.start, main=ranks.main)
    last: dict = {}
    try:
        with Prefetcher(candidates) as ahead:
            for step in steps:
                step_began = time.perf_counter()
                drawn, waited = ahead.get()
                chosen = select_online(
                    run.model,
                    drawn.samples,
                    config.batch_size,
                    mode=config.mode,
                    n_chunks=config.n_chunks,
                    temperature=config.temperature,
                    relative_temperature=config.relative_temperature,
                    generator=generator_for(run.stream_seed, step),
                    windows=drawn.windows,
                    scored=drawn.scored,
                )
                began = time.perf_counter()
                source = drawn.scored if config.trains_small(step) else drawn.inputs
                trained = [source[i] for i in chosen.indices]
                batch = step_batch(config, drawn.samples, drawn.windows, trained, chosen.indices)
                loss = run.training.step(batch)
                timing = (step_began, waited, began)
                last = step_record(run, step, loss.item(), chosen, drawn, trained, timing)
                if ranks.main:
                    steps.set_postfix(loss=f"{last['loss']:.3f}")
                    last = log_step(run, step, last, drawn, chosen)
                if config.checkpoint_due(step):
                    with deferred_interrupt():  # Ctrl-C waits for the commit: no half-written one
                        _checkpoint(run, step + 1)
    finally:
        _stop_reading(candidates)
    if run.log is not None:
        run.log.close()
    return last


def _stop_reading(drawn: Iterator[Candidates]) -> None:
    """Stop the reader process when the steps are over (ended, failed or interrupted), not at
    the interpreter's exit: closing its stream releases its DataLoader, which stops the worker."""
    close = getattr(drawn, "close", None)
    if close is not None:
        # ValueError: still running in a prefetching thread that did not stop; leave it be
        with contextlib.suppress(ValueError):
            close()


def _draw_ahead(run: Run) -> Iterator[Candidates]:
    """Each step's candidates, in order: made in a worker process of their own (it forks here,
    before the prefetching thread starts), or by the prefetching thread (`read_process` off)."""
    drawn = (_candidates(run, step) for step in range(run.start, run.config.steps))
    return read_ahead(drawn, run.skipped) if run.config.read_process else drawn


def _candidates(run: Run, step: int) -> Candidates:
    """A step's candidates: its samples drawn from the stream and made into inputs."""
    config = run.config
    return step_candidates(
        run.model,
        run.stream,
        step,
        size=config.super_batch,
        seed=run.stream_seed,
        raw=bool(config.data),
        scoring=config.mode not in UNSCORED_MODES,
        score_max_len=run.scoring_length,
        score_image_size=config.score_image_size,
    )


def _set_up(config: TrainConfig, ranks: Ranks) -> Run:
    """Everything the steps need: the model (fresh, `--init` or resumed), its optimizer and
    schedule, this rank's sample stream, the held-out examples and the log."""
    urls = expand_urls(config.shards, what="shard") if config.shards else []
    writable_directory(config.output)
    first = next(iter(train_samples(urls, task=config.task)), None) if urls else None
    held_out = load_examples(config.eval_inputs, config.fields)[0] if config.eval_inputs else []
    if config.task == "contrastive" and config.loss is None and first is not None:
        config = dataclasses.replace(config, loss=first.info.get("pair_loss"))  # the curation's
    model, start = _start(config, ranks, _right_kind(config, first))
    if config.task == "contrastive":
        config = dataclasses.replace(config, loss=model.pair_loss)
    # A run killed before its first checkpoint starts over at 0, with a fresh optimizer.
    saved = checkpoints.load_optimizer_state(config.output) if start > 0 else None
    training = start_training(
        model,
        config,
        ranks.device,
        start=start,
        optimizer_state=saved,
        loss=wrap(LossOf(model, training_loss), ranks),
    )
    seed = stream_seed(config.seed, ranks.rank)
    stream, skipped = _open_stream(config, urls, ranks, seed, start)
    return Run(
        config=config,
        ranks=ranks,
        model=model,
        training=training,
        start=start,
        stream_seed=seed,
        stream=stream,
        skipped=skipped,
        held_out=held_out,
        log=checkpoints.Log(config.output, start) if ranks.main else None,
        flops=FlopCount(model),
        whole_documents=config.task == "lm"
        and (bool(config.data) or (first is not None and has_windows([first]))),
        scoring_length=(
            config.scoring_length  # raw documents are read window by window
            if config.task != "lm" or config.data or first is None
            else shard_scoring_length(first, config.score_seq_len, config.mode, ranks.main)
        ),
    )


def _start(config: TrainConfig, ranks: Ranks, right_kind: str) -> tuple[nn.Module, int]:
    """The model to train and the step to start at (fresh, `--init`, or `--resume`). A fresh
    run's folder must be empty, or is emptied (by the main rank) with `overwrite`."""
    device = ranks.device
    if not config.resume:
        inputs = [*config.shards, *config.data, *config.eval_inputs, config.init]
        held = output_folder.claim(
            config.output, overwrite=config.overwrite, resumable=True, inputs=inputs
        )
        if ranks.main:
            output_folder.clear(config.output, held)
        if config.init is not None:
            return initial_model(config.init, config.task, right_kind, device, config.loss), 0
        return fresh_model(config, right_kind, device), 0
    step = checkpoints.committed_step(config.output)
    if step is None:
        if checkpoints.has_log(config.output):  # killed before its first checkpoint
            if ranks.main:
                log.info("%s: no checkpoint yet, so training starts again at step 0", config.output)
            return fresh_model(config, right_kind, device), 0
        raise JestflowError(f"nothing to resume: {config.output} has no {checkpoints.STATE}")
    if step >= config.steps:
        raise JestflowError(f"{config.output} is already at step {step}; raise --steps")
    if ranks.main:
        log.info(
            "resuming %s from its checkpoint at step %d of %d", config.output, step, config.steps
        )
    folder = checkpoints.checkpoint_folder(config.output)
    return load_model(folder, task=config.task, device=device).train(), step


def _right_kind(config: TrainConfig, first: TrainSample | None) -> str:
    """What a two-tower model's right tower reads: `image` or `text` (documents), as the data
    holds; the shards' first sample tells for shards."""
    if config.task != "contrastive":
        return "text"
    if config.data:
        return right_kind_of(config.fields.layout)
    return "image" if first is not None and first.image is not None else "text"


def stream_seed(seed: int, rank: int) -> int:
    """The seed of one rank's sample stream, which also seeds each step's sub-batch draw
    (`generator_for(stream seed, step)`). Each rank reads its own stream, seeded by (seed, rank):
    1009 is a prime above any rank in use, so seed · 1009 + rank spreads the seeds and no two
    (seed, rank) pairs with rank < 1009 share one."""
    return seed * 1_009 + rank


def _open_stream(
    config: TrainConfig, urls: Sequence[str], ranks: Ranks, seed: int, start: int
) -> tuple[Iterator[TrainSample], Counter]:
    """This rank's endless sample stream, and the count of corrupt samples it skips. A resumed
    run reads past the `start · r·b` samples the steps before `start` drew, so it continues
    exactly as an uninterrupted run would."""
    skipped: Counter = Counter()
    shuffle = max(1000, 4 * config.super_batch)
    if urls:
        stream = train_samples(
            urls, task=config.task, resampled=True, seed=seed, shuffle=shuffle, skipped=skipped
        )
    else:
        stream = raw_samples(
            config.data,
            config.fields,
            seed=seed,
            shuffle=shuffle,
            skipped=skipped,
            rank=ranks.rank,
            world=ranks.world,
        )
    return itertools.islice(stream, start * config.super_batch, None), skipped


def _steps(config: TrainConfig, start: int, *, main: bool) -> Iterable[int]:
    """The steps to take, under a progress bar on the main rank."""
    steps = range(start, config.steps)
    if not main:
        return steps
    return progress(
        steps,
        desc=f"train {config.mode}",
        unit="step",
        initial=start,
        total=config.steps,
        examples_per_unit=config.batch_size,
    )


def _checkpoint(run: Run, step: int) -> None:
    """Save and commit the run after `step` steps; every rank hands in its parameter digest."""
    digests = gather(parameter_digest(run.model), run.ranks)
    if run.ranks.main:
        checkpoints.save(
            run.config.output, run.model, run.training.optimizer, step, asdict(run.config), digests
        )
