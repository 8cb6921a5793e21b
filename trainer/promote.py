"""`jestflow teacher promote`: a trained student becomes the next teacher.

The model files (config.json, model.safetensors) are copied byte for byte, so the teacher keeps
the student's fingerprint, and every output the score cache holds for the student (from a
curation run with `--student`) serves the teacher too. The trainer's own files (optimizer
state, trainer state, log) stay behind. `promoted.json` records where the teacher came from;
with held-out data, `metrics.json` has its held-out loss, beside the current teacher's when
one is given (`against`), so the promotion can be judged before curating with it; a student
worse than that teacher is refused unless `force`.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import (
    copy_model,
    fingerprint,
    is_huggingface,
    load_model,
    read_config,
)
from ..transforms.models.scoring import resolve_device
from ..transforms.paths import filesystem, read_json, same_location, write_json
from ..transforms.records import FieldMap
from . import output_folder
from .checkpoints import STATE, checkpoint_folder
from .core import evaluate, load_examples


@dataclass(kw_only=True)
class PromoteConfig:
    student: str  # a `jestflow train` output directory
    output: str  # the new teacher's directory
    eval_inputs: tuple[str, ...] = ()  # held-out data for the new teacher's loss
    fields: FieldMap | None = None  # how to read eval_inputs
    against: str | None = None  # the current teacher, evaluated on the same data
    batch_size: int = 32
    device: str = "auto"
    overwrite: bool = False
    force: bool = False  # promote a student worse than `against` on the held-out data

    def __post_init__(self) -> None:
        if self.eval_inputs and self.fields is None:
            raise JestflowError("held-out inputs need a field mapping")
        if self.against and not self.eval_inputs:
            raise JestflowError("--against compares held-out losses: give --eval data too")


@dataclass(kw_only=True)
class PromoteResult:
    output: str
    fingerprint: str
    student: str
    step: int | None  # the student's training step
    eval_examples: int = 0
    eval_loss: float | None = None
    against_loss: float | None = None  # the current teacher's, on the same data


def promote(config: PromoteConfig) -> PromoteResult:
    student = config.student.rstrip("/")
    if same_location(student, config.output):
        raise JestflowError("the new teacher needs its own --output, not the student's directory")
    if is_huggingface(read_config(student)):
        raise JestflowError(f"{student} is a Hugging Face model: use it as --teacher directly")
    state_url = posixpath.join(student, STATE)
    state_fs, state_path = filesystem(state_url)
    trained = state_fs.exists(state_path)
    step = read_json(state_url).get("step") if trained else None
    # A training run's committed checkpoint (its top copy may lag after a kill).
    source = checkpoint_folder(student) if trained else student
    model = load_model(source)  # a checkpoint that loads, or a clear error
    inputs = [student, config.against, *config.eval_inputs]
    held = output_folder.claim(config.output, overwrite=config.overwrite, inputs=inputs)
    result = PromoteResult(
        output=config.output, fingerprint=fingerprint(source), student=student, step=step
    )
    if config.eval_inputs:
        held_out, _ = load_examples(config.eval_inputs, config.fields)
        device = resolve_device(config.device)
        result.eval_examples = len(held_out)
        result.eval_loss = evaluate(model.to(device), held_out, config.batch_size)[0]
        if config.against:
            current = load_model(config.against, task=model.task, device=device)
            result.against_loss = evaluate(current, held_out, config.batch_size)[0]
            _check_better(result, config)
    output_folder.clear(config.output, held)  # only with `overwrite`
    copied = copy_model(source, config.output)
    if copied != result.fingerprint:
        raise JestflowError(f"copying {student} changed its fingerprint; the copy is incomplete")
    write_json(asdict(result), posixpath.join(config.output, "promoted.json"))
    if config.eval_inputs:
        scores = {"eval_loss": result.eval_loss, "eval_examples": result.eval_examples}
        write_json(scores, posixpath.join(config.output, "metrics.json"))
    return result


def _check_better(result: PromoteResult, config: PromoteConfig) -> None:
    """Refuse a student whose held-out loss is above the current teacher's, unless `force`."""
    if result.eval_loss <= result.against_loss or config.force:
        return
    raise JestflowError(
        f"the student's held-out loss {result.eval_loss:.4f} is worse than the current "
        f"teacher's {result.against_loss:.4f} ({result.eval_loss - result.against_loss:+.4f} on "
        f"{result.eval_examples} examples); nothing promoted — pass --force to promote it anyway"
    )
