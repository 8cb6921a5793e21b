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
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import JestflowError
from ..hashing import GOLDEN, hash64, mix64
from ..models.losses import PairEmbeddings, as_float
from ..vocabulary import METHODS, SCORE_MODES

Method = Literal["sample", "topk"]
RELATIVE_TEMPERATURE = 0.1  # the default: τ = this × the scores' median absolute deviation
# Soft weights' relative τ: 1 × the spread of the weighted scores. Selection's 0.1 would put
# nearly all the weight on one or two examples (measured in bench/data_efficiency.py: the weighted
# arm at 0.1 trains worse than uniform).
WEIGHTING_TEMPERATURE = 1.0


# --- score modes ------------------------------------------------------------------------------


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


# --- pair scores ------------------------------------------------------------------------------


@runtime_checkable
class PairScores(Protocol):
    """What `select_joint` needs from the B×B pair score matrix A."""

    @property
    def size(self) -> int: ...

    def diagonal(self) -> torch.Tensor:
        """A_kk for every k, [B]."""
        ...

    def cross_sums(self, chosen: torch.Tensor) -> torch.Tensor:
        """Σ_{j∈chosen} (A_kj + A_jk) for every k, [B]."""
        ...


class ConditionalWalk(Protocol):
    """The conditional scores a blocked selection walks through: `scores` [B] (float64) given the
    chosen so far (at first, the first chunk's), updated by `add` with each chosen chunk."""

    scores: torch.Tensor

    def add(self, new: torch.Tensor) -> None: ...


class _PairSumWalk:
    """Sums of pair terms (the sigmoid loss): A_kk, then + Σ_{j∈new} (A_kj + A_jk) per chunk."""

    def __init__(self, pairs: PairScores) -> None:
        self.pairs = pairs
        self.diagonal = pairs.diagonal().double()
        _check_finite(self.diagonal, "pair score diagonal")
        self.running = torch.zeros_like(self.diagonal)
        self.scores = self.diagonal + self.running

    def add(self, new: torch.Tensor) -> None:
        self.running += self.pairs.cross_sums(new).double()
        self.scores = self.diagonal + self.running


def conditional_walk(pairs: PairScores | SoftmaxPairScores) -> ConditionalWalk:
    """A fresh walk of `pairs`' conditional scores, for one selection."""
    if isinstance(pairs, SoftmaxPairScores):
        return _SoftmaxWalk(pairs)
    return _PairSumWalk(pairs)


class DensePairScores:
    """A materialised B×B pair score matrix (small B: tests, tiny batches)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"pair scores must be a square B×B matrix, got {tuple(matrix.shape)}")
        _check_finite(matrix, "pair scores")
        self.matrix = matrix

    @property
    def size(self) -> int:
        return self.matrix.shape[0]

    def diagonal(self) -> torch.Tensor:
        return self.matrix.diagonal()

    def cross_sums(self, chosen: torch.Tensor) -> torch.Tensor:
        return self.matrix[:, chosen].sum(1) + self.matrix[chosen, :].sum(0)


class ContrastivePairScores:
    """Lazy A = w_l·L(θ) + w_r·L(θ*) from student and/or teacher embeddings.

    Each `cross_sums` call computes the sigmoid pair losses of every candidate against the newly
    chosen chunk only, in both directions: O(B·c·d) work and O(B·c) memory for a chunk of c.
    """

    def __init__(
        self,
        mode: str,
        *,
        student: PairEmbeddings | None = None,
        teacher: PairEmbeddings | None = None,
    ) -> None:
        self.terms: list[tuple[float, PairEmbeddings]] = weighted_terms(mode, student, teacher)
        sizes = {emb.size for _, emb in self.terms}
        if len(sizes) != 1:
            raise ValueError(f"student and teacher embeddings cover different batches: {sizes}")
        self.mode = mode

    @property
    def size(self) -> int:
        return self.terms[0][1].size

    def diagonal(self) -> torch.Tensor:
        return sum(w * emb.diagonal_losses() for w, emb in self.terms)  # type: ignore[return-value]

    def cross_sums(self, chosen: torch.Tensor) -> torch.Tensor:
        return sum(w * emb.cross_sums(chosen.to(emb.left.device)) for w, emb in self.terms)  # type: ignore[return-value]

    def to_dense(self) -> torch.Tensor:
        """The full B×B matrix (tests and small B only)."""
        return sum(w * emb.losses() for w, emb in self.terms)  # type: ignore[return-value]


def pair_scores(
    mode: str,
    *,
    student: PairEmbeddings | None = None,
    teacher: PairEmbeddings | None = None,
) -> ContrastivePairScores | SoftmaxPairScores:
    """The lazy pair scores of the loss the embeddings are judged by (both models' must agree)."""
    kinds = {emb.loss for emb in (student, teacher) if emb is not None}
    if len(kinds) != 1:
        raise ValueError(f"the student's and teacher's embeddings name other losses: {kinds}")
    kind = kinds.pop()
    scores = SoftmaxPairScores if kind == "softmax" else ContrastivePairScores
    return scores(mode, student=student, teacher=teacher)


class SoftmaxPairScores:
    """Lazy conditional scores under the softmax (InfoNCE, CLIP) loss, from student and/or
    teacher embeddings: Σ_m w_m (L_m(S ∪ {k}) − L_m(S)) for every candidate k, with the set loss
    L(S) = Σ_{i∈S} −s_ii + ½ (log Σ_{j∈S} e^{s_ij} + log Σ_{j∈S} e^{s_ji}).

    A candidate alone has no softmax loss (L({k}) = 0), so the first chunk draws from each
    candidate's loss against the whole super-batch (`softmax_losses`, its stored share).
    For k ∉ S, with r_k = log Σ_{j∈S} e^{s_kj} and c_k = log Σ_{j∈S} e^{s_jk} kept for every k,
        L(S ∪ {k}) − L(S) = −s_kk + ½ (logaddexp(s_kk, r_k) + logaddexp(s_kk, c_k))
                            + ½ Σ_{i∈S} (softplus(s_ik − r_i) + softplus(s_ki − c_i)).
    Adding a chunk of c updates r and c in O(B·c·d); the last sum changes with every r_i, so it
    is recomputed per chunk from blocks of `block_size` chosen rows: O(B·|S|·d) work, O(block·B)
    memory, never B×B.
    """

    def __init__(
        self,
        mode: str,
        *,
        student: PairEmbeddings | None = None,
        teacher: PairEmbeddings | None = None,
        block_size: int = 1024,
    ) -> None:
        self.terms: list[tuple[float, PairEmbeddings]] = weighted_terms(mode, student, teacher)
        if {emb.size for _, emb in self.terms} != {self.terms[0][1].size}:
            raise ValueError("student and teacher embeddings must cover the same candidates")
        if any(emb.loss != "softmax" for _, emb in self.terms):
            raise ValueError("SoftmaxPairScores judges embeddings by the softmax loss")
        self.block_size = block_size

    @property
    def size(self) -> int:
        return self.terms[0][1].size

    def first(self) -> torch.Tensor:
        """The first chunk's scores: Σ_m w_m ℓ_m(k) against the whole super-batch, [B]."""
        return sum(  # type: ignore[return-value]
            w * emb.softmax_losses(block_size=self.block_size) for w, emb in self.terms
        )


class _SoftmaxTerm:
    """One model's running log-sums over the chosen set S, for every candidate."""

    def __init__(self, emb: PairEmbeddings, block_size: int) -> None:
        self.emb, self.block_size = emb, block_size
        self.t = as_float(emb.scale)
        self.u, self.v = emb.left.double(), emb.right.double()
        self.own = self.t * (self.u * self.v).sum(1)  # s_kk
        self.rows = torch.full_like(self.own, float("-inf"))  # r_k = log Σ_{j∈S} e^{s_kj}
        self.cols = torch.full_like(self.own, float("-inf"))  # c_k = log Σ_{j∈S} e^{s_jk}
        self.chosen = torch.zeros(0, dtype=torch.long, device=self.own.device)

    def add(self, new: torch.Tensor) -> None:
        new = new.to(self.own.device)
        into = self.t * (self.u @ self.v[new].T)  # s_kj, j ∈ new: [B, c]
        out_of = self.t * (self.v @ self.u[new].T)  # s_jk, j ∈ new: [B, c]
        self.rows = torch.logaddexp(self.rows, torch.logsumexp(into, 1))
        self.cols = torch.logaddexp(self.cols, torch.logsumexp(out_of, 1))
        self.chosen = torch.cat([self.chosen, new])

    def conditional(self) -> torch.Tensor:
        own = self.own
        gain = -own + 0.5 * (torch.logaddexp(own, self.rows) + torch.logaddexp(own, self.cols))
        others = torch.zeros_like(own)
        for start in range(0, len(self.chosen), self.block_size):
            block = self.chosen[start : start + self.block_size]
            s = self.t * (self.u[block] @ self.v.T)  # s_ik, i ∈ block: [block, B]
            others += F.softplus(s - self.rows[block, None]).sum(0)
            s = self.t * (self.v[block] @ self.u.T)  # s_ki
            others += F.softplus(s - self.cols[block, None]).sum(0)
        return gain + 0.5 * others


class _SoftmaxWalk:
    def __init__(self, pairs: SoftmaxPairScores) -> None:
        self.terms = [(w, _SoftmaxTerm(emb, pairs.block_size)) for w, emb in pairs.terms]
        self.scores = pairs.first().double()
        _check_finite(self.scores, "first-chunk scores")

    def add(self, new: torch.Tensor) -> None:
        for _, term in self.terms:
            term.add(new)
        self.scores = sum(w * term.conditional() for w, term in self.terms)  # type: ignore[assignment]


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


def _check_finite(values: torch.Tensor, what: str) -> None:
    if not torch.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinite values")
