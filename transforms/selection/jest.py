"""JEST selection: choose the most learnable sub-batch of a super-batch.

The two models are the student (the paper's learner, θ) and the teacher (its reference model,
θ*); the score modes keep the paper's names (`easy_reference`, `hard_learner`).

Per-example losses make the batch score a sum of per-example scores, so choosing a sub-batch is
sampling without replacement with probability ∝ exp(s_i / τ): `select_independent` (Gumbel-top-k).

The temperature is scale-free by default: τ = `relative_temperature` × the spread of the scores
being drawn from (their median absolute deviation), because per-token mean losses differ by a
few tenths of a nat and at the paper's τ = 1 sampling is nearly uniform. An explicit
`temperature` is used as is. The Gumbel noise comes from a `torch.Generator` (fresh draws) or
from `KeyedNoise`, a function of (seed, example key, chunk) alone: a record added to or edited in
a pool then changes only its own draw, and re-curations stay comparable.

Contrastive losses couple the members of a batch. With the sigmoid loss and A = L(θ) − L(θ*) the
B×B pair score matrix, adding candidate k to the chosen set S adds A_kk + Σ_{j∈S} (A_kj + A_jk).
`select_joint` draws the first chunk from the diagonal and each further chunk from these
conditional scores (JEST blocked sampling), keeping running sums so that a lazy
`ContrastivePairScores` never builds B×B. With the softmax loss the conditional score is the set
loss's increment L(S ∪ {k}) − L(S), whose log-sum-exp terms change as S grows
(`SoftmaxPairScores`); its first chunk draws from each candidate's loss against the super-batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from ..errors import JestflowError
from ..hashing import GOLDEN, hash64, mix64
from ..vocabulary import METHODS
from .pair_scores import (
    ContrastivePairScores,
    DensePairScores,
    PairScores,
    SoftmaxPairScores,
    _check_finite,
    conditional_walk,
    pair_scores,
)
from .scores import easy_reference, hard_learner, learnability, mode_weights, score, weighted_terms

__all__ = [  # with what selection is built on: the score modes and the pair scores
    "RELATIVE_TEMPERATURE",
    "WEIGHTING_TEMPERATURE",
    "ContrastivePairScores",
    "DensePairScores",
    "KeyedNoise",
    "PairScores",
    "SoftmaxPairScores",
    "check_temperatures",
    "chunk_sizes",
    "conditional_walk",
    "easy_reference",
    "generator_for",
    "hard_learner",
    "learnability",
    "mode_weights",
    "pair_scores",
    "score",
    "select_independent",
    "select_joint",
    "soft_weights",
    "temperature_of",
    "weighted_terms",
]

Method = Literal["sample", "topk"]
RELATIVE_TEMPERATURE = 0.1  # the default: τ = this × the scores' median absolute deviation
# Soft weights' relative τ: 1 × the spread of the weighted scores. Selection's 0.1 would put
# nearly all the weight on one or two examples (measured in bench/data_efficiency.py: the weighted
# arm at 0.1 trains worse than uniform).
WEIGHTING_TEMPERATURE = 1.0


# --- selection --------------------------------------------------------------------------------


class KeyedNoise:
    """Gumbel noise that is a function of (seed, example key, chunk) alone, one key per candidate.

    Each key is hashed once (BLAKE2b) to 64 bits; a chunk's value is SplitMix64's output at the
    key's state advanced by the chunk number, and its top 53 bits give a uniform in (0, 1).
    """

    def __init__(self, keys: Sequence[str], seed: int = 0) -> None:
        self.base = np.array([hash64(f"{seed}:{key}") for key in keys], dtype=np.uint64).reshape(-1)

    def __len__(self) -> int:
        return len(self.base)

    def gumbel(self, chunk: int) -> torch.Tensor:
        with np.errstate(over="ignore"):
            x = mix64(self.base + np.uint64(chunk) * GOLDEN)
        u = ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
        return torch.from_numpy(-np.log(-np.log(u)))


Noise = torch.Generator | KeyedNoise | None


def select_independent(
    scores: torch.Tensor,
    k: int,
    *,
    temperature: float | None = None,
    relative_temperature: float = RELATIVE_TEMPERATURE,
    method: Method = "sample",
    noise: Noise = None,
) -> torch.Tensor:
    """Choose k of the candidates, in selection order.

    "sample" draws without replacement with probability ∝ exp(score / τ) (Gumbel-top-k: the
    order of the perturbed keys is exactly sequential sampling without replacement), τ being
    `temperature` when given, else `relative_temperature` × the scores' spread; "topk" takes
    the k highest scores, ties broken by position.
    """
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    _check_finite(scores, "scores")
    _check_k(k, scores.shape[0])
    draw = _Draw(temperature, relative_temperature, method, noise, scores.shape[0])
    return draw(scores, k, chunk=0)


def select_joint(
    pairs: torch.Tensor | PairScores | SoftmaxPairScores,
    k: int,
    *,
    n_chunks: int = 16,
    temperature: float | None = None,
    relative_temperature: float = RELATIVE_TEMPERATURE,
    method: Method = "sample",
    noise: Noise = None,
) -> torch.Tensor:
    """JEST blocked selection of k candidates from pair scores, in selection order.

    The first k/n candidates come from the diagonal A_kk; each further chunk from the
    conditional scores A_kk + Σ_{j∈S} (A_kj + A_jk) given the chosen set S, chosen ones masked.
    Without an explicit `temperature`, each chunk's τ is relative to the spread of the scores it
    draws from (the conditional sums grow with S; their spread, not their size, sets the scale).
    `pairs` is a dense B×B tensor, a `PairScores` (e.g. lazy `ContrastivePairScores`), or a
    `SoftmaxPairScores` (the softmax loss's conditional scores, `conditional_walk`).
    """
    if isinstance(pairs, torch.Tensor):
        pairs = DensePairScores(pairs)
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be at least 1, got {n_chunks}")
    _check_k(k, pairs.size)
    draw = _Draw(temperature, relative_temperature, method, noise, pairs.size)

    walk = conditional_walk(pairs)
    chosen_mask = torch.zeros(pairs.size, dtype=torch.bool, device=walk.scores.device)
    chosen: list[torch.Tensor] = []
    sizes = chunk_sizes(k, n_chunks)
    for i, size in enumerate(sizes):
        conditional = walk.scores.masked_fill(chosen_mask, float("-inf"))
        new = draw(conditional, size, chunk=i)
        chosen.append(new)
        chosen_mask[new] = True
        if i + 1 < len(sizes):
            walk.add(new)
    return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)


def temperature_of(
    scores: torch.Tensor, temperature: float | None, relative_temperature: float
) -> float:
    """τ: `temperature` when given, else `relative_temperature` × the spread of the finite
    scores: their median absolute deviation from the median (the mean absolute deviation when
    most scores tie; 1 when all do). A robust spread: the far tails of a noisy pool (random
    bytes, say), which are never selected, do not soften the choice among the best."""
    if temperature is not None:
        return temperature
    finite = scores[torch.isfinite(scores)].double()
    if finite.numel() < 2:
        return relative_temperature
    deviation = (finite - finite.median()).abs()
    spread = float(deviation.median()) or float(deviation.mean()) or 1.0
    return relative_temperature * spread


def soft_weights(
    scores: torch.Tensor, temperature: float | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """n · softmax(s / τ) of n scores (RHO-LOSS, DRRho-style soft selection): mean 1, more
    weight on higher scores, all 1 when the scores tie. τ = `temperature` when given, else
    WEIGHTING_TEMPERATURE × the scores' spread (`temperature_of`); the softmax is taken in
    float64 and cast to `dtype` before the factor n."""
    tau = temperature_of(scores.cpu(), temperature, WEIGHTING_TEMPERATURE)
    return torch.softmax(scores.double() / tau, 0).to(dtype) * scores.numel()


def check_temperatures(temperature: float | None, relative_temperature: float) -> None:
    """A JestflowError unless the temperatures are positive (no absolute one is fine)."""
    for name, value in (
        ("temperature", temperature),
        ("relative temperature", relative_temperature),
    ):
        if value is not None and not value > 0:
            raise JestflowError(f"{name} must be positive, got {value}")


def generator_for(seed: int, stream: int | str) -> torch.Generator:
    """A random stream that is a function of (seed, stream id) alone, never of which worker,
    bundle or resumed process draws it."""
    return torch.Generator().manual_seed(hash64(f"{seed}:{stream}") >> 1)


def chunk_sizes(k: int, n_chunks: int) -> list[int]:
    """k split into at most n_chunks nearly equal, non-empty chunks (larger ones first)."""
    n = min(n_chunks, k)
    if n == 0:
        return []
    base, extra = divmod(k, n)
    return [base + 1] * extra + [base] * (n - extra)


class _Draw:
    """One draw of k from scores: Gumbel-top-k at the resolved τ, or the top k."""

    def __init__(
        self,
        temperature: float | None,
        relative_temperature: float,
        method: str,
        noise: Noise,
        n: int,
    ) -> None:
        check_temperatures(temperature, relative_temperature)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if isinstance(noise, KeyedNoise) and len(noise) != n:
            raise ValueError(f"keyed noise for {len(noise)} candidates, but there are {n}")
        self.temperature, self.relative = temperature, relative_temperature
        self.method, self.noise = method, noise

    def __call__(self, scores: torch.Tensor, k: int, *, chunk: int) -> torch.Tensor:
        keys = scores.double()
        if self.method == "sample":
            tau = temperature_of(keys, self.temperature, self.relative)
            keys = keys / tau + self._gumbel(keys.shape[0], chunk).to(keys.device)
        order = torch.argsort(keys, descending=True, stable=True)
        return order[:k].cpu()

    def _gumbel(self, n: int, chunk: int) -> torch.Tensor:
        """Standard Gumbel noise in float64: keyed, or drawn on the generator's device."""
        if isinstance(self.noise, KeyedNoise):
            return self.noise.gumbel(chunk)
        device = self.noise.device if self.noise is not None else torch.device("cpu")
        u = torch.rand(n, generator=self.noise, dtype=torch.float64, device=device)
        tiny = torch.finfo(torch.float64).tiny
        return -torch.log(-torch.log(u.clamp(tiny, 1.0 - 1e-16)))


def _check_k(k: int, n: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"cannot select k={k} of {n} candidates")
