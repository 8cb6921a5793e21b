"""Joint selection under the softmax (InfoNCE, CLIP) loss, checked against set losses computed
densely: L(S) = Σ_{i∈S} −z_ii + ½ (log Σ_{j∈S} e^{z_ij} + log Σ_{j∈S} e^{z_ji}), z = t·UVᵀ.
The conditional score of a candidate given the chosen set S is L(S ∪ {k}) − L(S); the first
chunk draws from each candidate's loss against the whole super-batch (alone, a pair has none)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from test_selection import exact_orders, pooled_chi_square

from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.models.scoring import pair_loss_shares
from jestflow.transforms.selection import pair_scores as pair_scores_module
from jestflow.transforms.selection.jest import (
    ContrastivePairScores,
    SoftmaxPairScores,
    conditional_walk,
    select_joint,
)


def embeddings(n: int, d: int, seed: int, scale: float = 5.0) -> PairEmbeddings:
    gen = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    v = F.normalize(u + 0.8 * torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    return PairEmbeddings(u, v, scale, 0.0, loss="softmax")


def set_loss(emb: PairEmbeddings, members) -> float:
    """L(S) by definition, dense, float64."""
    idx = torch.tensor(sorted(members), dtype=torch.long)
    if len(idx) == 0:
        return 0.0
    z = emb.scale * emb.left[idx].double() @ emb.right[idx].double().T
    rows, cols = torch.logsumexp(z, 1), torch.logsumexp(z, 0)
    return float((-z.diagonal() + 0.5 * (rows + cols)).sum())


def whole_batch_losses(emb: PairEmbeddings) -> torch.Tensor:
    """Each example's loss against the whole batch: ℓ_k = −z_kk + ½ (LSE_row + LSE_col)."""
    z = emb.scale * emb.left.double() @ emb.right.double().T
    return -z.diagonal() + 0.5 * (torch.logsumexp(z, 1) + torch.logsumexp(z, 0))


def conditional(models, members) -> torch.Tensor:
    """Σ_m w_m (L_m(S ∪ {k}) − L_m(S)) for every k (−inf for the chosen); the first chunk's
    scores (each loss against the whole batch) when S is empty."""
    n = models[0][1].size
    if not members:
        return sum(w * whole_batch_losses(emb) for w, emb in models)
    out = torch.full((n,), float("-inf"), dtype=torch.float64)
    for k in range(n):
        if k not in members:
            out[k] = sum(
                w * (set_loss(emb, {*members, k}) - set_loss(emb, members)) for w, emb in models
            )
    return out


def test_a_pairs_loss_is_its_share_of_the_clip_loss():
    emb = embeddings(7, 5, 0)
    shares = pair_loss_shares(emb).double()
    assert torch.allclose(shares, whole_batch_losses(emb), atol=1e-5)
    assert emb.batch_loss().item() == pytest.approx(set_loss(emb, range(7)) / 7, rel=1e-6)
    # CLIP's loss: the mean of the two cross-entropies over the batch
    z = emb.scale * emb.left @ emb.right.T
    target = torch.arange(7)
    clip = 0.5 * (F.cross_entropy(z, target) + F.cross_entropy(z.T, target))
    assert emb.batch_loss().item() == pytest.approx(clip.item(), rel=1e-6)


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("mode", ["easy_reference", "learnability"])
def test_the_lazy_conditional_scores_are_the_set_loss_differences(mode, cached, monkeypatch):
    """Whether the chosen rows' logits are kept or recomputed in blocks of two."""
    if not cached:
        monkeypatch.setattr(pair_scores_module, "CACHED_LOGITS", 0)
    student, teacher = embeddings(9, 4, 1), embeddings(9, 4, 2, scale=8.0)
    pairs = SoftmaxPairScores(mode, student=student, teacher=teacher, block_size=2)
    models = [(-1.0, teacher)] if mode == "easy_reference" else [(1.0, student), (-1.0, teacher)]
    walk = conditional_walk(pairs)
    chosen: list[int] = []
    for new in ([4, 0], [7], [1, 8, 2]):
        want = conditional(models, set(chosen))
        free = [k for k in range(9) if k not in chosen]
        assert torch.allclose(walk.scores[free], want[free], atol=1e-9, rtol=1e-9), chosen
        walk.add(torch.tensor(new))
        chosen += new
    want = conditional(models, set(chosen))
    free = [k for k in range(9) if k not in chosen]
    assert torch.allclose(walk.scores[free], want[free], atol=1e-9, rtol=1e-9)


def exact_softmax_orders(
    models, n: int, sizes: list[int], temperature: float, first_alone: bool = False
) -> dict:
    """P(each ordered selection) under blocked sampling on the dense conditional scores
    (`first_alone`: the first chunk from L({k}) = 0, a pair's softmax loss by itself)."""

    def scores(prefix: tuple) -> torch.Tensor:
        if first_alone and not prefix:
            return torch.zeros(n, dtype=torch.float64)
        return conditional(models, set(prefix))

    return exact_orders(scores, n, sizes, temperature)


def test_softmax_joint_sampling_matches_exact_blocked_probabilities():
    """Learnability under the softmax loss, three chunks of one from six: every ordered
    selection at its exact probability. The sigmoid loss's pair sums on the same embeddings, or
    the first chunk drawn from zeros (a pair's loss alone), fail the same draws."""
    student, teacher = embeddings(6, 3, 3, scale=4.0), embeddings(6, 3, 4, scale=6.0)
    pairs = SoftmaxPairScores("learnability", student=student, teacher=teacher)
    gen = torch.Generator().manual_seed(5)
    temperature, n = 0.5, 10_000
    draws = Counter(
        tuple(select_joint(pairs, 3, n_chunks=3, temperature=temperature, noise=gen).tolist())
        for _ in range(n)
    )
    models = [(1.0, student), (-1.0, teacher)]
    exact = exact_softmax_orders(models, 6, [1, 1, 1], temperature)
    stat, critical = pooled_chi_square(draws, exact, n)
    assert stat < critical, f"softmax blocked draws: χ² {stat:.0f} ≥ {critical:.0f}"
    alone = exact_softmax_orders(models, 6, [1, 1, 1], temperature, first_alone=True)
    assert pooled_chi_square(draws, alone, n)[0] > 5 * critical

    sigmoid = [
        PairEmbeddings(e.left, e.right, e.scale, -e.scale / 2, loss="sigmoid")
        for e in (student, teacher)
    ]
    wrong = Counter(
        tuple(
            select_joint(
                ContrastivePairScores("learnability", student=sigmoid[0], teacher=sigmoid[1]),
                3,
                n_chunks=3,
                temperature=temperature,
                noise=gen,
            ).tolist()
        )
        for _ in range(n)
    )
    assert pooled_chi_square(wrong, exact, n)[0] > 5 * critical


def test_no_b_by_b_block_is_built():
    """The conditional scores come from blocks of `block_size` chosen rows against the pool (and
    its columns), never a B×B matrix."""
    emb = embeddings(300, 8, 6)
    pairs = SoftmaxPairScores("easy_reference", teacher=emb, block_size=64)
    seen: list[tuple[int, ...]] = []
    original = torch.Tensor.__matmul__

    def spy(a, b):
        out = original(a, b)
        seen.append(tuple(out.shape))
        return out

    torch.Tensor.__matmul__ = spy
    try:
        picked = select_joint(pairs, 150, n_chunks=8, noise=torch.Generator().manual_seed(0))
    finally:
        torch.Tensor.__matmul__ = original
    assert len(set(picked.tolist())) == 150
    assert seen and max(a * b for a, b in seen) <= 64 * 300
