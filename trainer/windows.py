"""Training on windows of whole documents.

Shards curated with whole-document scoring (`curate --score-seq-len 0`) carry, per sample, the
teacher's loss on each window of the document (`teacher_windows`, windows of `teacher_window`
tokens). The student then works on one window of each drawn document, drawn uniformly among its
windows: it scores that window (its loss there − the teacher's there is the learnability), and
trains on it if chosen. The windows are cut exactly as curation cut them
(`models/documents.windows_of`: each opens with the token before it), so both losses are on the
same tokens, and no teacher runs at train time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.shard_samples import TrainSample
from ..transforms.models.documents import windows_of
from ..transforms.selection.jest import generator_for
from .core import model_inputs

WINDOWS, WIDTH, TOKENS = "teacher_windows", "teacher_window", "teacher_tokens"


@dataclass(frozen=True)
class Windows:
    """One drawn window of each sample of a super-batch."""

    sequences: list[torch.Tensor]  # the window's tokens, opening with the token before it
    teacher: torch.Tensor  # [N] the teacher's loss on that window
    picks: list[int]  # which window of its document


def has_windows(samples: Sequence[TrainSample]) -> bool:
    return bool(samples) and WINDOWS in samples[0].info


def draw_windows(
    model: nn.Module, samples: Sequence[TrainSample], generator: torch.Generator
) -> Windows:
    """A window of each sample, drawn uniformly among the windows its teacher scored."""
    plain = [s.key for s in samples if WINDOWS not in s.info]
    if plain:
        raise JestflowError(
            f"{len(plain)} samples (e.g. {plain[0]!r}) hold one teacher loss each, the others "
            "their windows' losses: train on shards of one curation run at a time, or curate "
            "them all with the same --score-seq-len"
        )
    width = int(samples[0].info[WIDTH])
    tokens = samples[0].info.get(TOKENS)
    if tokens is not None and tokens != model.token_kind:
        raise JestflowError(
            f"the shards' windows are cut in the teacher's tokens ({tokens}), the student's are "
            f"{model.token_kind}: train a student that tokenizes as the teacher does (a built-in "
            "student for a built-in teacher, --init with the teacher's tokenizer otherwise)"
        )
    if width > model.context:
        raise JestflowError(
            f"the shards' windows are {width} tokens, more than the student's context of "
            f"{model.context}: train a student with --max-len {width} or more, or curate with "
            f"--score-window {model.context}"
        )
    counts = torch.tensor([len(s.info[WINDOWS]) for s in samples], dtype=torch.float64)
    picks = (torch.rand(len(samples), generator=generator, dtype=torch.float64) * counts).long()
    picks = picks.clamp_max(counts.long() - 1).tolist()
    limit = max((p + 1) * width for p in picks)
    sequences = []
    for ids, pick, sample in zip(
        model.token_ids([s.text for s in samples], limit), picks, samples, strict=True
    ):
        windows = windows_of(ids, width, model.bos)
        if pick >= len(windows):
            raise JestflowError(
                f"sample {sample.key!r} has {len(sample.info[WINDOWS])} teacher windows but "
                f"{len(windows)} of the student's: the student tokenizes text otherwise than the "
                "teacher did; train a student with the teacher's tokenizer"
            )
        sequences.append(torch.tensor(windows[pick], dtype=torch.long))
    teacher = torch.tensor(
        [s.info[WINDOWS][p] for s, p in zip(samples, picks, strict=True)], dtype=torch.float32
    )
    return Windows(sequences, teacher, picks)


def step_windows(
    model: nn.Module, batch: Sequence[TrainSample], seed: int, step: int
) -> Windows | None:
    """A training step's windows: for lm documents scored whole, a window of each sample, drawn
    from a random stream of the step's own (None for anything else)."""
    if model.task != "lm" or not has_windows(batch):
        return None
    return draw_windows(model, batch, generator_for(seed, f"windows-{step}"))


def training_inputs(
    model: nn.Module, picked: Sequence[TrainSample], windows: Windows | None, indices: list[int]
) -> list:
    """What the chosen samples train on: their drawn windows, or the model's inputs of them."""
    if windows is not None:
        return [windows.sequences[i] for i in indices]
    return model_inputs(model, [s.text for s in picked], [s.right for s in picked])
