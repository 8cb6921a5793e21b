"""The folder of a `jestflow train` run, and how it is saved, committed, repaired and read back.

    config.json, model.safetensors   the latest committed model (a checkpoint like a teacher's)
    checkpoints/step-NNNNNNNN/       the committed step's model and `optimizer.pt` (tensors only,
                                     loaded with `weights_only=True`)
    trainer_state.json               the step and which checkpoint folder holds it: the commit
    log.jsonl                        a JSON line per step and per evaluation

Saving is crash-safe: a checkpoint folder is written whole (the model, then `optimizer.pt`), then
`trainer_state.json` is replaced (written aside and renamed) to point at it — the commit — and
only then are the model files copied to the top and older folders removed. A run killed at any
moment resumes from the last committed step; `repair_top` redoes the copy a kill cut short.

The log is created with its first line, once the first step is done: a run that fails before
then (wrong data, a bad field mapping) leaves no log, so the folder is free for a corrected run.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import signal
import threading
from collections.abc import Iterator
from typing import IO, Any

import torch
from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import copy_model, fingerprint, save_checkpoint
from ..transforms.paths import child, filesystem, read_json, replacing, write_json

STATE, OPTIMIZER, LOG = "trainer_state.json", "optimizer.pt", "log.jsonl"
CHECKPOINTS = "checkpoints"


def checkpoint_folder(output: str) -> str:
    """The committed checkpoint of a run: the folder `trainer_state.json` points at (the run
    folder itself for runs saved before checkpoint folders existed)."""
    state = read_json(posixpath.join(output, STATE))
    if "checkpoint" not in state:
        return output
    return child(output, *state["checkpoint"].split("/"))


def committed_step(output: str) -> int | None:
    """The step of the run's last commit (None: nothing committed), its model copied to the top
    of the folder first if a kill left the top behind."""
    fs, root = filesystem(output)
    if not fs.exists(posixpath.join(root, STATE)):
        return None
    repair_top(output)
    return read_json(posixpath.join(output, STATE))["step"]


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block is done, then raise KeyboardInterrupt: a save
    interrupted in the middle would leave a checkpoint that a resume cannot use. Outside the
    main thread (where signals cannot be handled) the block just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def resume_note(output: str) -> str:
    """Where an interrupted run stands, and what `--resume` does with it."""
    step = committed_step(output)
    if step is None:
        return f"{output} holds no checkpoint yet, so --resume starts it again at step 0"
    return f"{output} holds its checkpoint at step {step}: add --resume to go on from there"


def holds_run(output: str) -> bool:
    """Whether the folder holds a run that took a step: a commit, or a log with a line."""
    fs, root = filesystem(output)
    log = posixpath.join(root, LOG)
    return fs.exists(posixpath.join(root, STATE)) or (fs.exists(log) and fs.size(log) > 0)


def has_log(output: str) -> bool:
    """Whether the run logged steps (it may have been killed before its first commit)."""
    fs, root = filesystem(output)
    return fs.exists(posixpath.join(root, LOG))


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


def load_optimizer_state(output: str) -> dict[str, Any]:
    """The optimizer state of the run's committed checkpoint, to resume from."""
    fs, path = filesystem(posixpath.join(checkpoint_folder(output), OPTIMIZER))
    with fs.open(path, "rb") as f:
        return torch.load(f, weights_only=True)


def save(
    output: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: dict[str, Any],
    digests: list[str],
) -> None:
    """Save and commit step `step` (`config`: the run's, as a dict; `digests`: every rank's
    parameter digest), in the crash-safe order above."""
    fs, root = filesystem(output)
    meta = {"trained_by": "jestflow train", "step": step, "mode": config["mode"]}
    name = f"step-{step:08d}"
    folder = posixpath.join(output, CHECKPOINTS, name)
    save_checkpoint(model, folder, meta=meta)
    optimizer_path = posixpath.join(root, CHECKPOINTS, name, OPTIMIZER)
    with replacing(fs, optimizer_path) as f:
        torch.save(optimizer.state_dict(), f)
    # The ranks' parameter digests: equal, or the all-reduce is broken.
    state = {
        "step": step,
        "checkpoint": f"{CHECKPOINTS}/{name}",
        "parameter_digests": digests,
        "config": config,
    }
    write_json(state, posixpath.join(output, STATE))  # the commit
    copy_model(folder, output)  # the run folder is itself the latest model
    for old in fs.ls(posixpath.join(root, CHECKPOINTS), detail=False):
        if posixpath.basename(old.rstrip("/")) != name:
            fs.rm(old, recursive=True)


class Log:
    """A run's log.jsonl, a JSON line per record. The file is opened (created, or appended to on
    resume) at the first record, so a run that fails before its first step leaves none."""

    def __init__(self, output: str, start: int) -> None:
        fs, root = filesystem(output)
        self.fs, self.path = fs, posixpath.join(root, LOG)
        self.file: IO[str] | None = None
        if fs.exists(self.path):
            self._trim(start)

    def _trim(self, start: int) -> None:
        """Drop the lines past the checkpoint's step (about to be run again) and a torn last
        line (a run killed mid-write)."""
        with self.fs.open(self.path, "r") as f:
            kept = [line for line in f if line.endswith("\n") and json.loads(line)["step"] <= start]
        with replacing(self.fs, self.path, "w") as f:  # a kill here loses nothing
            f.writelines(kept)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            self.file = self.fs.open(self.path, "a")
        self.file.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
