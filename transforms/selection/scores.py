"""The score modes: which model's losses a score weighs, and how (the paper's names).

`learnability` = ℓ(student) − ℓ(teacher), `easy_reference` = −ℓ(teacher), `hard_learner` =
ℓ(student): `score` of per-example losses, and `weighted_terms` for the pair scores built from
both models' embeddings (`pair_scores.py`). Several teachers' scores combine by `ensemble_score`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..vocabulary import SCORE_MODES


def mode_weights(mode: str) -> tuple[float, float]:
    """(weight of the student's loss, weight of the teacher's loss) for a score mode."""
    weights = {
        "learnability": (1.0, -1.0),
        "easy_reference": (0.0, -1.0),
        "hard_learner": (1.0, 0.0),
    }
    if mode not in weights:
        raise ValueError(f"unknown score mode {mode!r}; expected one of {', '.join(SCORE_MODES)}")
    return weights[mode]


def weighted_terms(mode: str, student, teacher) -> list:
    """[(weight, value)] of the student and teacher terms a score mode uses."""
    w_student, w_teacher = mode_weights(mode)
    terms = []
    for weight, value, name in (
        (w_student, student, "student"),
        (w_teacher, teacher, "teacher"),
    ):
        if weight and value is None:
            raise ValueError(f"score mode {mode!r} needs the {name} model's losses or embeddings")
        if weight:
            terms.append((weight, value))
    return terms


def score(
    mode: str, *, student: torch.Tensor | None = None, teacher: torch.Tensor | None = None
) -> torch.Tensor:
    """Scores of one mode from per-example (or dense pair) losses."""
    return sum(w * value for w, value in weighted_terms(mode, student, teacher))  # type: ignore[return-value]


def learnability(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """ℓ(θ) − ℓ(θ*): not yet learnt by the student, but learnable (easy for the teacher)."""
    return score("learnability", student=student, teacher=teacher)


def easy_reference(teacher: torch.Tensor) -> torch.Tensor:
    """−ℓ(θ*): the only score available offline, before any student exists."""
    return score("easy_reference", teacher=teacher)


def hard_learner(student: torch.Tensor) -> torch.Tensor:
    """ℓ(θ): the student's hardest examples (an ablation: it chases noise)."""
    return score("hard_learner", student=student)


def ensemble_score(
    components: Sequence[torch.Tensor], weights: Sequence[float] = ()
) -> torch.Tensor:
    """Σ_i w_i z_i over several teachers' scores of one super-batch, float64: z_i is score i as a
    z-score within the super-batch, (s − mean) / std (0 where all its values are equal), so
    scores on other scales (an LM's −NLL, a classifier's log-odds) weigh as `weights` say (all 1
    when empty)."""
    weights = list(weights) or [1.0] * len(components)
    total = torch.zeros(len(components[0]), dtype=torch.float64)
    for weight, values in zip(weights, components, strict=True):
        values = values.double()
        spread = values.std(unbiased=False)
        if spread > 0:
            total += weight * (values - values.mean()) / spread
    return total
