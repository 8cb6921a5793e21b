"""The words of jestflow's options, declared once: tasks, score modes, selection methods, field
layouts. The configs check values against them and the CLI's choices read them.

The two models are the teacher (the paper's reference model) and the student (its learner);
the score modes keep the paper's names.
"""

from __future__ import annotations

from collections.abc import Collection

from .errors import JestflowError

TASKS = ("lm", "contrastive")  # per-example LM loss, or a two-tower model's sigmoid pair loss
# What a model can be: a task's, or a classifier teacher of texts (its log-odds of being
# reference is a score for an lm pool).
MODEL_TASKS = (*TASKS, "classifier")
# What a task's inputs look like (records.FieldMap.layout).
LAYOUTS = {"lm": ("text",), "contrastive": ("image_text", "text_pair"), "classifier": ("text",)}

# Selection scores: learnability = ℓ(student) − ℓ(teacher), easy_reference = −ℓ(teacher),
# hard_learner = ℓ(student).
SCORE_MODES = ("learnability", "easy_reference", "hard_learner")
# `jestflow curate --score`; the last two are contrastive only, from the teacher's embeddings of
# the super-batch: each pair's cosine similarity (CLIP-score), and minus its softmax loss against
# the super-batch (negCLIPLoss)
OFFLINE_MODES = ("easy_reference", "learnability", "clip_score", "neg_clip_loss")
PAIR_SCORE_MODES = ("clip_score", "neg_clip_loss")
# `jestflow train --mode`: the scores, and `uniform` (the first b of each draw: the baseline).
ONLINE_MODES = (
    "learnability",
    "uniform",
    "easy_reference",
    "hard_learner",
    "weighted",
    "curated_weights",
)
RAW_MODES = ("uniform", "hard_learner")  # the online modes that need no teacher values
# the online modes without a scoring pass: they train on the b they draw (uniform: as drawn;
# weighted: weighted by the learnability its training forward gives; curated_weights: by the
# soft weights curation wrote), or choose by teacher alone
DRAW_B_MODES = ("uniform", "weighted", "curated_weights")
UNSCORED_MODES = (*DRAW_B_MODES, "easy_reference")

# `jestflow demo --task`: language modelling, text-text pairs, image-text pairs.
DEMO_TASKS = ("lm", "text-pairs", "image-text")
# `--pair-teacher`: the text pairs' teacher (MiniLM where installed, MiniLM, or built-in).
PAIR_TEACHERS = ("auto", "minilm", "built-in")

METHODS = ("sample", "topk")  # sample ∝ exp(score / τ) without replacement, or the top scores


def check_choice(what: str, value: str, allowed: Collection[str]) -> None:
    """A JestflowError naming the allowed values when `value` is not one of them."""
    if value not in allowed:
        raise JestflowError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
