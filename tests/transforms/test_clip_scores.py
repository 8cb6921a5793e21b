"""CLIP-score and negCLIPLoss as offline scores of a contrastive super-batch: each pair's cosine
similarity, and minus its softmax (CLIP) loss against the super-batch, whose other pairs are the
negatives; selected per example (the batch score is their sum)."""

from __future__ import annotations

import numpy as np
import pytest

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.records import make_example
from jestflow.transforms.selection.offline import ScoredBatch, SelectionConfig, select_super_batch

EXAMPLES = [make_example(layout="text_pair", text=f"q{i}", pair=f"d{i}") for i in range(40)]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def batch(pairs: np.ndarray, scale: float = 10.0) -> ScoredBatch:
    n = len(pairs)
    return ScoredBatch(
        super_batch=0,
        examples=EXAMPLES[:n],
        loss=np.zeros(n, dtype=np.float32),
        embeddings=pairs.astype(np.float32),
        scale=scale,
        bias=-10.0,
    )


def neg_clip_loss(pairs: np.ndarray, t: float) -> np.ndarray:
    """t·⟨u_i, v_i⟩ − ½ (log Σ_j e^{t⟨u_i, v_j⟩} + log Σ_j e^{t⟨u_j, v_i⟩}), in float64."""
    u, v = pairs[:, 0].astype(np.float64), pairs[:, 1].astype(np.float64)
    s = t * u @ v.T

    def lse(x, axis):
        m = x.max(axis=axis, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)

    return np.diag(s) - 0.5 * (lse(s, 1) + lse(s, 0))


def random_pairs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = unit(rng.normal(size=(n, 8)))
    v = unit(u + rng.normal(scale=rng.uniform(0.2, 2.0, size=(n, 1)), size=(n, 8)))
    return np.stack([u, v], axis=1)


@pytest.mark.parametrize("mode", ["clip_score", "neg_clip_loss"])
def test_the_scores_and_the_kept_are_the_definitions(mode):
    pairs = random_pairs(40, 0)
    grid = np.round(pairs.astype(np.float64) / 1e-4) * 1e-4  # the selection grid
    want = (grid[:, 0] * grid[:, 1]).sum(1) if mode == "clip_score" else neg_clip_loss(grid, 10.0)
    config = SelectionConfig(keep=0.25, mode=mode, method="topk")
    decisions = select_super_batch(batch(pairs), config)
    assert np.allclose([d.score for d in decisions], want, atol=1e-5)
    kept = {i for i, d in enumerate(decisions) if d.selected}
    assert kept == set(np.argsort(-want, kind="stable")[:10].tolist())


def test_neg_clip_loss_discounts_a_pair_that_matches_everything():
    """Every image shares a component c, and caption 0 is c itself (a generic caption): pair 0
    is the most similar pair, but its caption matches every image nearly as well. Pair 1 is a
    little less similar and matches only its own. CLIP-score keeps 0; negCLIPLoss, whose
    negatives are the super-batch's other pairs, keeps 1."""
    rng = np.random.default_rng(0)
    c = np.eye(16)[0]
    own = rng.normal(size=(12, 16))
    own[:, 0] = 0
    own = unit(own)
    v = unit(c + own)
    u = unit(own + 0.3 * unit(rng.normal(size=(12, 16))))
    u[0], v[0] = c, unit(c + 0.4 * own[0])
    v[1], u[1] = own[1], unit(own[1] + 0.45 * unit(rng.normal(size=16)))
    pairs = np.stack([u, v], axis=1)
    cos = (u * v).sum(1)
    assert cos[0] > cos[1] > cos[2:].max()
    pick = {}
    for mode in ("clip_score", "neg_clip_loss"):
        config = SelectionConfig(keep=1 / 12, mode=mode, method="topk")
        decisions = select_super_batch(batch(pairs), config)
        pick[mode] = [i for i, d in enumerate(decisions) if d.selected]
    assert pick == {"clip_score": [0], "neg_clip_loss": [1]}


def test_the_scores_need_pair_embeddings():
    lm = ScoredBatch(super_batch=0, examples=EXAMPLES[:4], loss=np.zeros(4, dtype=np.float32))
    with pytest.raises(JestflowError, match="clip_score scores image–text or text pairs"):
        select_super_batch(lm, SelectionConfig(keep=0.5, mode="clip_score"))
