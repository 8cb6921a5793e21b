"""The online trainer: `jestflow train`. Each step draws r·b samples from the curated shards,
lets the student re-score them, chooses b (online JEST, or the first b for `uniform`), and takes
one optimizer step on those b. Raw inputs (`data`) instead of shards train the baselines that
need no teacher values: `uniform` and `hard_learner`.

The output directory is a checkpoint like a teacher's (config.json + model.safetensors, so a
trained student can be the next teacher), plus `checkpoints/step-NNNNNNNN/` (the model and
`optimizer.pt`, tensors only, loaded with `weights_only=True`), `trainer_state.json` (the step
and which checkpoint folder holds it) and `log.jsonl` (a JSON line per step and per evaluation).

Saving is crash-safe: a checkpoint folder is written whole, then `trainer_state.json` is
replaced (written aside and renamed) to point at it — the commit — and only then are the model
files copied to the top and older folders removed. A run killed at any moment resumes from the
last committed step.
"""

from __future__ import annotations

import itertools
import json
import posixpath
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..transforms.checkpoint import (
    checkpoint_task,
    copy_model,
    fingerprint,
    load_model,
    save_checkpoint,
)
from ..transforms.errors import JestflowError
from ..transforms.models import new_model
from ..transforms.paths import (
    child,
    expand_urls,
    filesystem,
    read_json,
    replacing,
    writable_directory,
    write_json,
)
from ..transforms.records import FieldMap
from ..transforms.scoring import autocast
from ..transforms.selection import generator_for
from ..transforms.vocabulary import ONLINE_MODES, RAW_MODES, check_choice
from .distributed import LossOf, Ranks, gather, parameter_digest, setup, teardown, wrap
from .fit import (
    ModelSize,
    batch_loss,
    evaluate,
    load_examples,
    model_inputs,
    right_kind_of,
    warmup_cosine,
)
from .loader import TrainSample, raw_samples, train_samples
from .online_selection import select_online

STATE, OPTIMIZER, LOG = "trainer_state.json", "optimizer.pt", "log.jsonl"
CHECKPOINTS = "checkpoints"


@dataclass(kw_only=True)
class TrainConfig(ModelSize):
    shards: tuple[str, ...] = ()  # URL patterns: brace ranges, globs, any fsspec URL
    task: str
    output: str
    data: tuple[str, ...] = ()  # raw inputs instead of shards (uniform and hard_learner only)
    mode: str = "learnability"
    batch_size: int = 32  # b: examples trained on per step
    super_batch_ratio: int = 5  # r: the student scores r·b per step
    n_chunks: int = 16
    temperature: float = 1.0
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    eval_inputs: tuple[str, ...] = ()  # held-out raw data (JSONL, Parquet, tars)
    fields: FieldMap | None = None  # of `data` and `eval_inputs`
    eval_every: int = 100
    init: str | None = None  # start from this checkpoint instead of a fresh model
    resume: bool = False  # continue from the checkpoint in `output`
    seed: int = 0
    score_seq_len: int | None = None  # lm: the student scores only the first tokens
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
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
        if self.score_seq_len is not None and self.task != "lm":
            raise JestflowError("--score-seq-len shortens lm scoring only")
        if self.resume and self.init is not None:
            raise JestflowError("--resume continues the run in --output; drop --init")


def forward_flops(
    model: nn.Module, params: int, samples: Sequence[TrainSample], max_len: int | None
) -> float:
    """≈ 2 · parameters · tokens for one forward pass (training is ≈ 3× that)."""
    limit = max_len or getattr(getattr(model, "config", None), "max_len", 256)
    tokens = sum(min(len(s.text.encode()) + 1, limit + 1) for s in samples)
    if model.task != "lm":
        tokens += sum(min(len((s.pair or "").encode()) + 1, limit) for s in samples)
    return 2.0 * params * tokens


def _right_kind(config: TrainConfig, urls: Sequence[str]) -> str:
    """What a two-tower model's right tower reads: `image` or `text` (documents), as the data
    holds; the first sample of the first shard tells for shards."""
    if config.task != "contrastive":
        return "text"
    if config.data:
        return right_kind_of(config.fields.layout)
    first = next(iter(train_samples(urls[:1], task=config.task)), None)
    return "image" if first is not None and first.image is not None else "text"


def _start(config: TrainConfig, device: torch.device, right_kind: str) -> tuple[nn.Module, int]:
    """The model to train and the step to start at (fresh, `--init`, or `--resume`)."""
    fs, root = filesystem(config.output)
    state_path = posixpath.join(root, STATE)
    if fs.exists(state_path):
        repair_top(config.output)
    if config.resume:
        if not fs.exists(state_path):
            if fs.exists(posixpath.join(root, LOG)):  # killed before its first checkpoint
                return _fresh(config, device, right_kind), 0
            raise JestflowError(f"nothing to resume: {config.output} has no {STATE}")
        step = read_json(posixpath.join(config.output, STATE))["step"]
        if step >= config.steps:
            raise JestflowError(f"{config.output} is already at step {step}; raise --steps")
        folder = checkpoint_folder(config.output)
        return load_model(folder, task=config.task, device=device).train(), step
    if fs.exists(state_path) or fs.exists(posixpath.join(root, LOG)):
        raise JestflowError(
            f"{config.output} already holds a training run; --resume it or pick a new --output"
        )
    if config.init is not None:
        task = checkpoint_task(config.init)
        if task is not None and task != config.task:
            raise JestflowError(f"--init {config.init} is a {task} model, not {config.task}")
        model = load_model(config.init, task=config.task, device=device).train()
        reads = getattr(model, "right_kind", right_kind)
        if reads != right_kind:
            raise JestflowError(
                f"--init {config.init} pairs text with {reads}, but the data pairs it with "
                f"{right_kind}"
            )
        return model, 0
    return _fresh(config, device, right_kind), 0


def _fresh(config: TrainConfig, device: torch.device, right_kind: str) -> nn.Module:
    torch.manual_seed(config.seed)
    return new_model(config.task, right_kind=right_kind, **config.model_size).to(device).train()


def _draw(stream: Iterator[TrainSample], n: int) -> list[TrainSample]:
    batch = list(itertools.islice(stream, n))
    if len(batch) < n:
        raise JestflowError("the shards ran out of samples")  # resampled streams never do
    return batch


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
    device = ranks.device
    urls = expand_urls(config.shards, what="shard") if config.shards else []
    fs, root = writable_directory(config.output)
    held_out = load_examples(config.eval_inputs, config.fields)[0] if config.eval_inputs else []
    model, start = _start(config, device, _right_kind(config, urls))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    if config.resume and start > 0:  # (a run killed before its first checkpoint starts over)
        saved_fs, saved = filesystem(posixpath.join(checkpoint_folder(config.output), OPTIMIZER))
        with saved_fs.open(saved, "rb") as f:
            optimizer.load_state_dict(torch.load(f, weights_only=True))
    for group in optimizer.param_groups:  # a resumed schedule continues from `start`
        group.setdefault("initial_lr", config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.steps), last_epoch=start - 1
    )
    skipped: Counter = Counter()
    # Each rank reads its own stream, seeded by (seed, rank), and draws each step's sub-batch
    # from a generator seeded by (that seed, step). A resumed run reads past what the steps
    # before `start` drew, so it continues exactly as an uninterrupted run would.
    stream_seed = config.seed * 1_009 + ranks.rank
    b, drawn = config.batch_size, config.batch_size * config.super_batch_ratio
    shuffle = max(1000, 4 * drawn)
    if urls:
        stream = train_samples(urls, task=config.task, resampled=True, seed=stream_seed,
                               shuffle=shuffle, skipped=skipped)  # fmt: skip
    else:
        stream = raw_samples(config.data, config.fields, seed=stream_seed, shuffle=shuffle,
                             skipped=skipped, rank=ranks.rank, world=ranks.world)  # fmt: skip
    stream = itertools.islice(stream, start * drawn, None)
    step_loss = wrap(LossOf(model, batch_loss), ranks)
    params = sum(p.numel() for p in model.parameters())
    log = _open_log(fs, root, start) if ranks.main else None
    last: dict = {}
    bar = tqdm(range(start, config.steps), desc=f"train {config.mode}", unit="step",
               disable=not (config.progress and ranks.main), initial=start,
               total=config.steps)  # fmt: skip
    for step in bar:
        batch = _draw(stream, drawn)
        chosen = select_online(model, batch, b, mode=config.mode, n_chunks=config.n_chunks,
                               temperature=config.temperature,
                               generator=generator_for(stream_seed, step),
                               score_max_len=config.score_seq_len)  # fmt: skip
        picked = [batch[i] for i in chosen.indices]
        began = time.perf_counter()
        with autocast(device):
            loss = step_loss(
                model_inputs(model, [s.text for s in picked], [s.right for s in picked])
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        scoring = 0 if config.mode in ("uniform", "easy_reference") else drawn
        last = {
            "step": step + 1,
            "loss": loss.item(),
            "learnability": chosen.learnability,
            "tags": dict(Counter(s.tag for s in picked if s.tag is not None)),
            "score_seconds": round(chosen.seconds, 4),
            "train_seconds": round(time.perf_counter() - began, 4),
            "examples_seen": (step + 1) * drawn * ranks.world,
            "score_flops": ranks.world
            * forward_flops(model, params, batch[:scoring], config.score_seq_len),
            "train_flops": ranks.world * 3 * forward_flops(model, params, picked, None),
            "skipped": sum(skipped.values()),
        }
        bar.set_postfix(loss=f"{last['loss']:.3f}")
        if ranks.main:
            log.write(json.dumps(last) + "\n")
            if held_out and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
                eval_loss, recall = evaluate(model, held_out, b)
                last = {"step": step + 1, "eval_loss": eval_loss, "eval_recall_at_1": recall}
                log.write(json.dumps(last) + "\n")
            log.flush()
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            digests = gather(parameter_digest(model), ranks)  # every rank takes part
            if ranks.main:
                _save(model, optimizer, step + 1, config, fs, root, digests)
    if log is not None:
        log.close()
    return last


def _open_log(fs, root: str, start: int):
    """The log for appending; on resume, lines past the checkpoint's step (about to be run again)
    and a torn last line are dropped first."""
    path = posixpath.join(root, LOG)
    if fs.exists(path):
        with fs.open(path, "r") as f:  # a run killed mid-write may have left half a last line
            kept = [line for line in f if line.endswith("\n") and json.loads(line)["step"] <= start]
        with replacing(fs, path, "w") as f:  # a kill here loses nothing
            f.writelines(kept)
    return fs.open(path, "a")


def checkpoint_folder(output: str) -> str:
    """The committed checkpoint of a run: the folder `trainer_state.json` points at (the run
    folder itself for runs saved before checkpoint folders existed)."""
    state = read_json(posixpath.join(output, STATE))
    if "checkpoint" not in state:
        return output
    return child(output, *state["checkpoint"].split("/"))


def repair_top(output: str) -> None:
    """Copy the committed checkpoint's model to the top of the run folder if it is not there (a
    run killed after its commit but before that copy)."""
    folder = checkpoint_folder(output)
    if folder != output and fingerprint(folder) != _top_fingerprint(output):
        copy_model(folder, output)


def _top_fingerprint(output: str) -> str | None:
    try:
        return fingerprint(output)
    except JestflowError:  # no model at the top yet
        return None


def _save(model, optimizer, step: int, config: TrainConfig, fs, root: str, digests) -> None:
    meta = {"trained_by": "jestflow train", "step": step, "mode": config.mode}
    name = f"step-{step:08d}"
    folder = posixpath.join(config.output, CHECKPOINTS, name)
    save_checkpoint(model, folder, meta=meta)
    optimizer_path = posixpath.join(root, CHECKPOINTS, name, OPTIMIZER)
    with replacing(fs, optimizer_path) as f:
        torch.save(optimizer.state_dict(), f)
    # The ranks' parameter digests: equal, or the all-reduce is broken.
    state = {"step": step, "checkpoint": f"{CHECKPOINTS}/{name}", "parameter_digests": digests,
             "config": asdict(config)}  # fmt: skip
    write_json(state, posixpath.join(config.output, STATE))  # the commit
    copy_model(folder, config.output)  # the run folder is itself the latest model
    for old in fs.ls(posixpath.join(root, CHECKPOINTS), detail=False):
        if posixpath.basename(old.rstrip("/")) != name:
            fs.rm(old, recursive=True)
