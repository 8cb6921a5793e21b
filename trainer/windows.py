"""Training on windows of whole documents.

Shards of documents curated whole (what `curate` does by default) carry, per sample, the
teacher's loss on each window of the document (`teacher_windows`, windows of `teacher_window`
tokens). The student then works on one window of each drawn document, drawn uniformly among its
windows: it scores that window (its loss there − the teacher's there is the learnability), and
trains on it if chosen. The windows are cut exactly as curation cut them
(`models/documents.windows_of`: each opens with the token before it), so both losses are on the
same tokens, and no teacher runs at train time. Raw documents (`train --data`, the uniform and
hard-learner baselines) are read the same way: one window of the student's context each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.shard_samples import TrainSample
from ..transforms.models.documents import document_windows, windows_of
from ..transforms.models.scoring import scoring_length
from ..transforms.selection.jest import generator_for
from ..transforms.vocabulary import RAW_MODES

WINDOWS, WIDTH, TOKENS = "teacher_windows", "teacher_window", "teacher_tokens"

log = logging.getLogger(__name__)


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
    counts = [len(s.info[WINDOWS]) for s in samples]
    picks = _picks(counts, generator)
    ids = model.token_ids([s.text for s in samples], max((p + 1) * width for p in picks))
    sequences = []
    for document, pick, sample in zip(ids, picks, samples, strict=True):
        windows = windows_of(document, width, model.bos)
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


def draw_raw_windows(
    model: nn.Module, samples: Sequence[TrainSample], generator: torch.Generator
) -> Windows:
    """A window of the student's context of each raw document (`--data`: no teacher values),
    drawn uniformly among its windows (of its first `DEFAULT_SCORE_MAX_TOKENS` tokens), so a
    baseline on raw data reads whole documents as one on curated shards does."""
    windows = document_windows(model, [s.text for s in samples])
    picks = _picks([len(w) for w in windows], generator)
    sequences = [torch.tensor(w[p], dtype=torch.long) for w, p in zip(windows, picks, strict=True)]
    return Windows(sequences, torch.full((len(samples),), float("nan")), picks)


def _picks(counts: Sequence[int], generator: torch.Generator) -> list[int]:
    """One window of each document, uniformly among its `counts` windows."""
    counts = torch.tensor(counts, dtype=torch.float64)
    picks = (torch.rand(len(counts), generator=generator, dtype=torch.float64) * counts).long()
    return picks.clamp_max(counts.long() - 1).tolist()


def step_windows(
    model: nn.Module, batch: Sequence[TrainSample], seed: int, step: int, *, raw: bool = False
) -> Windows | None:
    """A training step's windows, drawn from a random stream of the step's own: for lm documents
    scored whole, a window of each sample among its teacher's; for `raw` lm documents, among its
    windows of the student's context; None for anything else (shards with one teacher loss per
    document, pairs)."""
    if model.task != "lm" or not (raw or has_windows(batch)):
        return None
    generator = generator_for(seed, f"windows-{step}")
    return (
        draw_raw_windows(model, batch, generator) if raw else draw_windows(model, batch, generator)
    )


# What trains on shards a classifier teacher curated: their teacher values are −log-odds, not LM
# losses the student's can be compared with.
CLASSIFIER_SHARD_MODES = (*RAW_MODES, "curated_weights")


def check_classifier_shards(mode: str) -> None:
    if mode not in CLASSIFIER_SHARD_MODES:
        raise JestflowError(
            f"--mode {mode} compares the student's loss with the teacher's, but these shards were "
            "curated by a classifier (their teacher_loss is its −log-odds): train with --mode "
            f"{', '.join(CLASSIFIER_SHARD_MODES)}, or curate with an lm teacher first (--teacher "
            "LM --teacher CLASSIFIER)"
        )


def shard_scoring_length(
    sample: TrainSample, score_seq_len: int | None, mode: str, main: bool
) -> int | None:
    """The first tokens of each lm candidate the student scores (None: all it reads, or the
    windows of documents curated whole): `--score-seq-len` if given, else what the shards' teacher
    scored. The main rank warns when the two compare unlike parts of a text, and when the shards
    hold one teacher loss per document (curated on its first tokens, or before documents were
    scored whole): they still train, on each document's start."""
    asked = scoring_length("lm", score_seq_len)
    if sample.info.get("teacher_task") == "classifier":
        check_classifier_shards(mode)
        return asked
    if has_windows([sample]):  # documents scored whole: the student works on the same windows
        if main:
            log.info("training on windows of %d tokens of each document", sample.info[WIDTH])
        if main and asked is not None:
            log.warning(
                "--score-seq-len %d is not used: the shards' teacher scored whole documents, and "
                "the student scores the windows it trains on",
                asked,
            )
        return None
    teacher = sample.info.get("score_seq_len")  # absent: whole texts, up to the model's context
    if score_seq_len is None:
        if main and mode not in RAW_MODES:  # modes that use the teacher values
            log.warning(
                "the shards hold one teacher loss per document, on %s: the student scores the "
                "same and trains on each document's start; curate again (the default scores whole "
                "documents) to train on windows of whole documents",
                f"its first {teacher} tokens" if teacher else "its start (the model's context)",
            )
        return teacher
    if main and mode == "learnability" and teacher != asked:
        said = {None: "whole texts"}
        log.warning(
            "the shards' teacher losses cover %s, the student scores %s: drop --score-seq-len to "
            "follow the shards (or curate again with the student's length)",
            said.get(teacher, f"the first {teacher} tokens"),
            said.get(asked, f"the first {asked} tokens"),
        )
    return asked
