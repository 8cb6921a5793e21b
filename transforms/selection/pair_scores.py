"""Pair scores of contrastive super-batches, and the conditional scores blocked selection walks
through (`select_joint` in `jest.py`).

Sigmoid loss: the B×B pair score matrix A = L(θ) − L(θ*) (learnability), dense
(`DensePairScores`) or lazy from embeddings (`ContrastivePairScores`); adding k to the chosen set
S adds A_kk + Σ_{j∈S} (A_kj + A_jk), kept as running sums (`_PairSumWalk`). Softmax loss: the set
loss's increment L(S ∪ {k}) − L(S) (`SoftmaxPairScores`, `_SoftmaxWalk`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..models.losses import PairEmbeddings, as_float
from .scores import weighted_terms


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

    def first(self) -> torch.Tensor:
        """The first chunk's scores: the diagonal A_kk."""
        return self.diagonal()

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
    Adding a chunk of c updates r and c in O(B·c·d). The last sum changes with every r_i, so it
    is summed afresh per chunk over the chosen rows' logits: kept from their own chunk while they
    fit in CACHED_LOGITS values (O(B·|S|) work per chunk beyond the chunk's own products), else
    recomputed in blocks of chosen rows (at most `block_size`, and B/16 of a large super-batch:
    O(B·|S|·d)). Never B×B; products and softplus in the embeddings' precision (float32 from the
    job), sums in float64.
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


CACHED_LOGITS = 1 << 24  # a term keeps the chosen rows' logits up to this many values a side


class _SoftmaxTerm:
    """One model's running log-sums over the chosen set S, for every candidate, and the chosen
    rows' logits against every candidate while they fit in CACHED_LOGITS (then each chunk
    computes only its own: O(B·c·d)); past that they are recomputed per chunk in blocks."""

    def __init__(self, emb: PairEmbeddings, block_size: int) -> None:
        self.block_size = min(block_size, max(64, emb.size // 16))
        self.t = as_float(emb.scale)
        self.u, self.v = emb.left, emb.right  # products in their precision, sums in float64
        self.own = self.t * (self.u.double() * self.v.double()).sum(1)  # s_kk
        self.rows = torch.full_like(self.own, float("-inf"))  # r_k = log Σ_{j∈S} e^{s_kj}
        self.cols = torch.full_like(self.own, float("-inf"))  # c_k = log Σ_{j∈S} e^{s_jk}
        self.chosen = torch.zeros(0, dtype=torch.long, device=self.own.device)
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] | None = []  # (s_jk, s_kj), j ∈ chunk

    def add(self, new: torch.Tensor) -> None:
        new = new.to(self.own.device)
        out_of, into = self._logits(new)
        self.rows = torch.logaddexp(self.rows, torch.logsumexp(into.double(), 0))
        self.cols = torch.logaddexp(self.cols, torch.logsumexp(out_of.double(), 0))
        self.chosen = torch.cat([self.chosen, new])
        if self.cache is not None and len(self.chosen) * len(self.own) <= CACHED_LOGITS:
            self.cache.append((out_of, into))
        else:
            self.cache = None

    def conditional(self) -> torch.Tensor:
        own = self.own
        gain = -own + 0.5 * (torch.logaddexp(own, self.rows) + torch.logaddexp(own, self.cols))
        others = torch.zeros_like(own)
        for block, out_of, into in self._chosen_logits():
            for s, sums in ((out_of, self.rows), (into, self.cols)):
                others += F.softplus(s - sums[block, None].to(s.dtype)).sum(0, dtype=torch.float64)
        return gain + 0.5 * others

    def _chosen_logits(self):
        """(chosen rows i, s_ik and s_ki for every k) by blocks: cached, or computed afresh."""
        if self.cache is not None:
            start = 0
            for out_of, into in self.cache:
                yield self.chosen[start : start + len(out_of)], out_of, into
                start += len(out_of)
            return
        for start in range(0, len(self.chosen), self.block_size):
            block = self.chosen[start : start + self.block_size]
            yield block, *self._logits(block)

    def _logits(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_jk, s_kj) for j in `rows` and every k: [len(rows), B] each."""
        return (self.u[rows] @ self.v.T).mul_(self.t), (self.v[rows] @ self.u.T).mul_(self.t)


class _SoftmaxWalk:
    def __init__(self, pairs: SoftmaxPairScores) -> None:
        self.terms = [(w, _SoftmaxTerm(emb, pairs.block_size)) for w, emb in pairs.terms]
        self.scores = pairs.first().double()
        _check_finite(self.scores, "first-chunk scores")

    def add(self, new: torch.Tensor) -> None:
        for _, term in self.terms:
            term.add(new)
        self.scores = sum(w * term.conditional() for w, term in self.terms)  # type: ignore[assignment]


def _check_finite(values: torch.Tensor, what: str) -> None:
    if not torch.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinite values")
