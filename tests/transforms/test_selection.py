"""JEST selection, checked against exact probabilities enumerated on small cases."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.selection.jest import (
    ContrastivePairScores,
    KeyedNoise,
    chunk_sizes,
    easy_reference,
    hard_learner,
    learnability,
    score,
    select_independent,
    select_joint,
    temperature_of,
)

# --- exact probabilities ----------------------------------------------------------------------


def sequential_probability(
    scores: torch.Tensor,
    order: tuple[int, ...],
    temperature: float,
    excluded: frozenset[int] = frozenset(),
) -> float:
    """P(drawing `order` one by one without replacement, ∝ exp(score/τ)), skipping `excluded`."""
    remaining = [i for i in range(len(scores)) if i not in excluded]
    p = 1.0
    for item in order:
        weights = torch.tensor(
            [float(scores[i]) / temperature for i in remaining], dtype=torch.float64
        )
        p *= float(torch.softmax(weights, 0)[remaining.index(item)])
        remaining.remove(item)
    return p


def set_probability(scores, members, temperature, excluded=frozenset()) -> float:
    """P(the unordered set `members` is the next len(members) draws)."""
    return sum(
        sequential_probability(scores, order, temperature, excluded)
        for order in itertools.permutations(members)
    )


def exact_joint_distribution(
    A: torch.Tensor, chunk: int, temperature: float, transpose: bool = True
):
    """P((first chunk set, second chunk set)) under JEST blocked sampling with two chunks."""
    n = A.shape[0]
    diag = A.diagonal()
    dist = {}
    for first in itertools.combinations(range(n), chunk):
        p1 = set_probability(diag, first, temperature)
        idx = list(first)
        cond = diag + A[:, idx].sum(1) + (A[idx, :].sum(0) if transpose else 0)
        rest = [i for i in range(n) if i not in first]
        for second in itertools.combinations(rest, chunk):
            dist[(first, second)] = p1 * set_probability(
                cond, second, temperature, frozenset(first)
            )
    return dist


def exact_chunked_orders(A: torch.Tensor, sizes: list[int], temperature: float) -> dict:
    """P(each ordered selection) under JEST blocked sampling with chunks of `sizes`."""
    diag = A.diagonal()

    def conditional(prefix: tuple) -> torch.Tensor:
        idx = list(prefix)
        return diag + (A[:, idx].sum(1) + A[idx, :].sum(0) if idx else 0)

    return exact_orders(conditional, A.shape[0], sizes, temperature)


def exact_orders(conditional, n: int, sizes: list[int], temperature: float) -> dict:
    """P(each ordered selection of n candidates) under blocked sampling with chunks of `sizes`,
    each chunk drawn from `conditional(chosen so far)`."""
    dist: dict = {}

    def walk(prefix: tuple, p: float, chunk: int) -> None:
        if chunk == len(sizes):
            dist[prefix] = p
            return
        cond = conditional(prefix)
        rest = [i for i in range(n) if i not in prefix]
        for order in itertools.permutations(rest, sizes[chunk]):
            q = sequential_probability(cond, order, temperature, frozenset(prefix))
            walk(prefix + order, p * q, chunk + 1)

    walk((), 1.0, 0)
    return dist


def chi_square(counts: Counter, probs: dict, n: int) -> float:
    assert set(counts) <= set(probs), "drew an outcome that has probability zero"
    return sum((counts.get(o, 0) - n * p) ** 2 / (n * p) for o, p in probs.items())


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.1 % point of χ²(df), Wilson–Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def pooled_chi_square(draws: Counter, exact: dict, n: int) -> tuple[float, float]:
    """(χ², its 0.1 % critical value) with the outcomes expected fewer than five times pooled into
    one: blocked draws have many outcomes of probability ~1e-9, whose cells would otherwise
    swing χ² on a single hit and shrink its effective degrees of freedom."""
    assert set(draws) <= set(exact), "drew an outcome that has probability zero"
    rare = {o for o, p in exact.items() if n * p < 5}
    probs = {o: p for o, p in exact.items() if o not in rare}
    counts = Counter({o: c for o, c in draws.items() if o not in rare})
    if rare:
        probs["rare"] = sum(exact[o] for o in rare)
        counts["rare"] = sum(draws.get(o, 0) for o in rare)
    return chi_square(counts, probs, n), chi_square_critical(len(probs) - 1)


# --- select_independent -----------------------------------------------------------------------


def test_independent_sampling_matches_exact_sequential_probabilities():
    scores = torch.tensor([0.3, -1.2, 2.0, 0.9, -0.4, 1.5])
    temperature, k, n = 0.7, 3, 30_000
    gen = torch.Generator().manual_seed(0)
    draws = Counter(
        tuple(select_independent(scores, k, temperature=temperature, noise=gen).tolist())
        for _ in range(n)
    )
    exact = {
        order: sequential_probability(scores, order, temperature)
        for order in itertools.permutations(range(6), k)
    }
    stat, critical = pooled_chi_square(draws, exact, n)
    assert stat < critical
    # The same draws are far from a subtly wrong algorithm (temperature ignored): the test can fail.
    wrong = {order: sequential_probability(scores, order, 1.0) for order in exact}
    assert pooled_chi_square(draws, wrong, n)[0] > 5 * critical


def test_topk_is_deterministic_and_sorted_with_ties_by_position():
    scores = torch.tensor([1.0, 3.0, 2.0, 3.0, -1.0])
    assert select_independent(scores, 3, method="topk").tolist() == [1, 3, 2]
    assert select_independent(scores, 0, method="topk").tolist() == []


def test_same_seed_same_selection_and_seeds_differ():
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(1))

    def draw(seed):
        return select_independent(scores, 100, noise=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_low_temperature_approaches_topk_and_high_temperature_uniform():
    scores = torch.linspace(0, 10, 200)
    gen = torch.Generator().manual_seed(3)
    cold = select_independent(scores, 20, temperature=1e-4, noise=gen)
    assert cold.tolist() == select_independent(scores, 20, method="topk").tolist()
    hot = torch.cat(
        [select_independent(scores, 20, temperature=1e4, noise=gen) for _ in range(200)]
    )
    assert abs(hot.double().mean().item() - 99.5) < 3  # uniform over 0..199


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 7}, "cannot select k=7 of 6"),
        ({"k": -1}, "cannot select"),
        ({"k": 2, "temperature": 0.0}, "temperature must be positive"),
        ({"k": 2, "relative_temperature": -1.0}, "relative temperature must be positive"),
        ({"k": 2, "method": "greedy"}, "unknown method"),
    ],
)
def test_independent_rejects_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, JestflowError), match=message):
        select_independent(torch.zeros(6), **kwargs)


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        select_independent(torch.tensor([0.0, float("nan")]), 1)


# --- select_joint -----------------------------------------------------------------------------


def test_joint_sampling_matches_exact_blocked_probabilities():
    gen = torch.Generator().manual_seed(4)
    A = torch.randn(6, 6, generator=gen, dtype=torch.float64)  # asymmetric: A_kj ≠ A_jk
    temperature, n = 0.8, 30_000
    draws = Counter()
    for _ in range(n):
        picked = select_joint(A, 4, n_chunks=2, temperature=temperature, noise=gen).tolist()
        draws[(tuple(sorted(picked[:2])), tuple(sorted(picked[2:])))] += 1
    exact = exact_joint_distribution(A, 2, temperature)
    stat, critical = pooled_chi_square(draws, exact, n)
    assert stat < critical
    # Forgetting the A_jk half of the pair terms is detected by the same draws.
    wrong = exact_joint_distribution(A, 2, temperature, transpose=False)
    assert pooled_chi_square(draws, wrong, n)[0] > 5 * critical


def test_joint_sampling_accumulates_over_three_chunks_exactly():
    gen = torch.Generator().manual_seed(12)
    A = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    n = 20_000
    draws = Counter(
        tuple(select_joint(A, 3, n_chunks=3, temperature=0.9, noise=gen).tolist()) for _ in range(n)
    )
    exact = exact_chunked_orders(A, [1, 1, 1], 0.9)
    stat, critical = pooled_chi_square(draws, exact, n)
    assert stat < critical


def test_joint_with_one_chunk_is_independent_on_the_diagonal():
    A = torch.randn(40, 40, generator=torch.Generator().manual_seed(5))
    joint = select_joint(A, 10, n_chunks=1, noise=torch.Generator().manual_seed(9))
    indep = select_independent(A.diagonal(), 10, noise=torch.Generator().manual_seed(9))
    assert torch.equal(joint, indep)


def test_joint_topk_follows_conditional_scores():
    # 0 and 1 have the best diagonal but hurt each other; 2 pairs well with 0.
    A = torch.tensor(
        [
            [5.0, -10.0, 1.0, 0.0],
            [-10.0, 4.9, 0.0, 0.0],
            [1.0, 0.0, 3.0, 0.0],
            [0.0, 0.0, 0.0, 3.5],
        ]
    )
    assert select_joint(A, 2, n_chunks=2, method="topk").tolist() == [0, 2]
    assert select_independent(A.diagonal(), 2, method="topk").tolist() == [0, 1]


def test_joint_returns_distinct_indices_in_chunks():
    A = torch.randn(100, 100, generator=torch.Generator().manual_seed(6))
    picked = select_joint(A, 37, n_chunks=16, noise=torch.Generator().manual_seed(0))
    assert len(picked) == 37 and len(set(picked.tolist())) == 37
    assert chunk_sizes(37, 16) == [3, 3, 3, 3, 3] + [2] * 11
    assert chunk_sizes(5, 16) == [1] * 5
    assert select_joint(A, 0).tolist() == []


def test_joint_rejects_non_square_and_bad_chunks():
    with pytest.raises(ValueError, match="square"):
        select_joint(torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match="n_chunks"):
        select_joint(torch.zeros(3, 3), 2, n_chunks=0)


# --- keyed noise: what every offline selection draws -------------------------------------------

IDS = [f"doc-{i}" for i in range(6)]


def keyed(draw: int, vary: str) -> KeyedNoise:
    """The keyed noise of draw number `draw` over six candidates, varied as curation varies it:
    the same six examples under a new `--seed`, or (one seed) the six examples of another
    super-batch."""
    if vary == "seed":
        return KeyedNoise(IDS, seed=draw)
    return KeyedNoise([f"{draw:06d}/{key}" for key in IDS], seed=3)


@pytest.mark.parametrize("vary", ["seed", "super_batch"])
def test_keyed_independent_sampling_matches_exact_sequential_probabilities(vary):
    """Gumbel-top-k on keyed noise, one draw per seed (or per super-batch), is sampling without
    replacement ∝ exp(s/τ): noise that ignores the seed (or the key), is not Gumbel, or is
    scaled (another τ in disguise) fails the χ² against the enumerated probabilities."""
    scores = torch.tensor([0.3, -1.2, 2.0, 0.9, -0.4, 1.5])
    temperature, k, n = 0.7, 3, 20_000
    draws = Counter(
        tuple(select_independent(scores, k, temperature=temperature, noise=keyed(d, vary)).tolist())
        for d in range(n)
    )
    exact = {
        order: sequential_probability(scores, order, temperature)
        for order in itertools.permutations(range(6), k)
    }
    stat, critical = pooled_chi_square(draws, exact, n)
    assert stat < critical, f"keyed draws, one per {vary}: χ² {stat:.0f} ≥ {critical:.0f}"


def test_keyed_joint_sampling_matches_exact_blocked_probabilities():
    """Blocked sampling with keyed noise, each draw a super-batch of other ids: the (first chunk,
    second chunk) sets follow the exact distribution. The second chunk must draw fresh noise:
    reusing the first chunk's for the same ids fails."""
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    temperature, n = 0.8, 20_000
    draws = Counter()
    for d in range(n):
        noise = keyed(d, "super_batch")
        picked = select_joint(A, 4, n_chunks=2, temperature=temperature, noise=noise).tolist()
        draws[(tuple(sorted(picked[:2])), tuple(sorted(picked[2:])))] += 1
    exact = exact_joint_distribution(A, 2, temperature)
    stat, critical = pooled_chi_square(draws, exact, n)
    assert stat < critical, f"keyed blocked draws: χ² {stat:.0f} ≥ {critical:.0f}"


def test_keyed_joint_sampling_accumulates_over_three_chunks_exactly():
    """Three chunks of one, one draw per seed: every ordered selection at its exact probability,
    which needs each chunk's noise independent of the others' (a third chunk that reuses the
    second's noise fails)."""
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    n = 20_000
    draws = Counter(
        tuple(select_joint(A, 3, n_chunks=3, temperature=0.9, noise=keyed(d, "seed")).tolist())
        for d in range(n)
    )
    exact = exact_chunked_orders(A, [1, 1, 1], 0.9)
    stat, critical = pooled_chi_square(draws, exact, n)
    assert stat < critical, f"keyed three-chunk draws: χ² {stat:.0f} ≥ {critical:.0f}"


def test_keyed_noise_is_standard_gumbel_independent_across_chunks_seeds_and_neighbours():
    """Each value is a standard Gumbel (Kolmogorov–Smirnov on its CDF), and streams that must be
    independent are: the same ids in chunks 0 and 1, 1 and 2, 0 and 15, under seeds 0 and 1,
    and neighbouring ids (doc-2i, doc-2i+1) in one chunk (χ² of the 10×10 table of their CDF
    deciles against the uniform 1/100 of independent uniforms)."""
    n = 40_000
    ids = [f"doc-{i}" for i in range(n)]
    noise = KeyedNoise(ids, seed=0)
    cdf = {f"chunk {c}": np.exp(-np.exp(-noise.gumbel(c).numpy())) for c in (0, 1, 2, 15)}
    cdf["seed 1"] = np.exp(-np.exp(-KeyedNoise(ids, seed=1).gumbel(0).numpy()))
    ks_critical = 1.95 / math.sqrt(n)  # the upper 0.1 % point of the KS statistic
    for name, u in cdf.items():
        u = np.sort(u)
        ks = max((np.arange(1, n + 1) / n - u).max(), (u - np.arange(n) / n).max())
        assert ks < ks_critical, f"{name}: not standard Gumbel (KS {ks:.4f} ≥ {ks_critical:.4f})"
    streams = {
        "chunks 0 and 1": (cdf["chunk 0"], cdf["chunk 1"]),
        "chunks 1 and 2": (cdf["chunk 1"], cdf["chunk 2"]),
        "chunks 0 and 15": (cdf["chunk 0"], cdf["chunk 15"]),
        "seeds 0 and 1": (cdf["chunk 0"], cdf["seed 1"]),
        "neighbouring ids": (cdf["chunk 0"][0::2], cdf["chunk 0"][1::2]),
    }
    for name, (a, b) in streams.items():
        table, _, _ = np.histogram2d(a, b, bins=10, range=[[0, 1], [0, 1]])
        expected = len(a) / 100
        stat = float(((table - expected) ** 2 / expected).sum())
        assert stat < chi_square_critical(99), f"{name} draw dependent noise (χ² {stat:.0f})"


def test_a_keyed_draw_depends_on_the_ids_not_on_their_positions_or_neighbours():
    """An id draws the same noise alone, among other ids, or moved: so a shuffled pool selects the
    same ids in the same order, independently and jointly."""
    gen = torch.Generator().manual_seed(8)
    ids = [f"doc-{i}" for i in range(40)]
    scores = torch.randn(40, generator=gen, dtype=torch.float64)
    A = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    perm = torch.randperm(40, generator=gen)
    noise, moved = KeyedNoise(ids, seed=5), KeyedNoise([ids[i] for i in perm], seed=5)
    for chunk in (0, 3):
        assert torch.equal(moved.gumbel(chunk), noise.gumbel(chunk)[perm]), "noise follows position"
        alone = torch.cat([KeyedNoise([key], seed=5).gumbel(chunk) for key in ids])
        assert torch.equal(alone, noise.gumbel(chunk)), "an id's noise depends on its neighbours"
        others = KeyedNoise(["x", ids[7], "y"], seed=5).gumbel(chunk)[1]
        assert others == noise.gumbel(chunk)[7], "an id's noise depends on its neighbours"

    def chosen(picked, order):
        return [ids[order[i]] for i in picked.tolist()]

    same = list(range(40))
    assert chosen(select_independent(scores, 10, noise=noise), same) == chosen(
        select_independent(scores[perm], 10, noise=moved), perm.tolist()
    )
    assert chosen(select_joint(A, 12, n_chunks=4, noise=noise), same) == chosen(
        select_joint(A[perm][:, perm], 12, n_chunks=4, noise=moved), perm.tolist()
    )


# --- lazy pair scores -------------------------------------------------------------------------


def random_embeddings(b: int, d: int, seed: int, scale=10.0, bias=-5.0) -> PairEmbeddings:
    gen = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(b, d, generator=gen, dtype=torch.float64), dim=1)
    v = F.normalize(u + 0.5 * torch.randn(b, d, generator=gen, dtype=torch.float64), dim=1)
    return PairEmbeddings(u, v, scale, bias)


def brute_force_losses(e: PairEmbeddings) -> torch.Tensor:
    """ℓ_ij = softplus(−z_ij (t⟨u_i, v_j⟩ + β)) entry by entry."""
    b = e.size
    out = torch.empty(b, b, dtype=torch.float64)
    for i in range(b):
        for j in range(b):
            z = 1.0 if i == j else -1.0
            logit = e.scale * float(e.left[i] @ e.right[j]) + e.bias
            out[i, j] = math.log1p(math.exp(-z * logit))
    return out


@pytest.mark.parametrize("mode", ["learnability", "easy_reference", "hard_learner"])
def test_lazy_pair_scores_equal_dense_formula(mode):
    student, teacher = random_embeddings(24, 8, 0, 5.0, -2.0), random_embeddings(24, 8, 1)
    lazy = ContrastivePairScores(mode, student=student, teacher=teacher)
    dense = score(mode, student=brute_force_losses(student), teacher=brute_force_losses(teacher))
    torch.testing.assert_close(lazy.to_dense().double(), dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lazy.diagonal().double(), dense.diagonal(), rtol=1e-5, atol=1e-5)
    chosen = torch.tensor([3, 17, 0, 9])
    expected = dense[:, chosen].sum(1) + dense[chosen, :].sum(0)
    torch.testing.assert_close(lazy.cross_sums(chosen).double(), expected, rtol=1e-5, atol=1e-5)
    gen_a, gen_b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(
        select_joint(lazy, 8, n_chunks=4, noise=gen_a),
        select_joint(dense, 8, n_chunks=4, noise=gen_b),
    )


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any torch operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_lazy_joint_selection_never_materialises_b_by_b():
    b, d, k, chunks = 1024, 16, 128, 16
    student = random_embeddings(b, d, 3)
    teacher = random_embeddings(b, d, 4)
    pairs = ContrastivePairScores("learnability", student=student, teacher=teacher)
    with LargestTensor() as probe:
        picked = select_joint(pairs, k, n_chunks=chunks, noise=torch.Generator().manual_seed(0))
    assert len(set(picked.tolist())) == k
    assert probe.largest <= max(b * d, b * (k // chunks))  # the inputs, or one B×chunk block
    assert probe.largest < b * b // 50


def test_joint_beats_diagonal_only_when_pair_terms_matter():
    """Eight copies of one easy pair: alone each looks best, together they are hard negatives."""
    b, d, k = 64, 16, 16
    gen = torch.Generator().manual_seed(11)
    u = F.normalize(torch.randn(b, d, generator=gen), dim=1)
    v = F.normalize(u + 0.8 * torch.randn(b, d, generator=gen), dim=1)
    u[:8], v[:8] = u[0], u[0]  # duplicates: matching pairs are easy, cross pairs look matching too
    teacher = PairEmbeddings(u, v, scale=10.0, bias=-5.0)
    pairs = ContrastivePairScores("easy_reference", teacher=teacher)
    A = pairs.to_dense()

    independent = select_independent(pairs.diagonal(), k, method="topk")
    joint = select_joint(pairs, k, n_chunks=k, method="topk")

    def batch_score(chosen):
        return A[chosen][:, chosen].sum().item()

    assert sum(i < 8 for i in independent.tolist()) == 8  # diagonal-only takes every copy
    assert sum(i < 8 for i in joint.tolist()) <= 2
    assert batch_score(joint) > batch_score(independent) + 50

    # Sampling too: joint beats independent on average over seeds.
    gains = [
        batch_score(select_joint(pairs, k, noise=torch.Generator().manual_seed(s)))
        - batch_score(
            select_independent(pairs.diagonal(), k, noise=torch.Generator().manual_seed(s))
        )
        for s in range(20)
    ]
    assert sum(gains) / len(gains) > 10


# --- score modes ------------------------------------------------------------------------------


def test_score_modes():
    student, teacher = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])
    assert learnability(student, teacher).tolist() == [2.0, -1.0]
    assert easy_reference(teacher).tolist() == [-1.0, -2.0]
    assert hard_learner(student).tolist() == [3.0, 1.0]
    assert score("learnability", student=student, teacher=teacher).tolist() == [2.0, -1.0]
    with pytest.raises(ValueError, match="needs the student"):
        score("learnability", teacher=teacher)
    with pytest.raises(ValueError, match="unknown score mode"):
        score("loss", student=student)
    with pytest.raises(ValueError, match="needs the teacher model"):
        ContrastivePairScores("easy_reference", student=random_embeddings(4, 2, 0))


def test_the_relative_temperature_is_the_median_absolute_deviation_of_the_scores():
    """τ = factor × median |s − median(s)|, computed here with numpy on an odd count (one middle
    value): a far tail that moves the standard deviation and the quartiles a lot leaves it be,
    and where most scores tie (a zero median deviation) the mean absolute deviation stands in."""
    import numpy as np

    def mad(x):
        return float(np.median(np.abs(x - np.median(x))))

    base = np.arange(101, dtype=np.float64)
    for tail in (1e3, 1e9):
        scores = np.concatenate([base, np.full(4, tail), [-np.inf]])  # -inf: a masked candidate
        finite = scores[np.isfinite(scores)]
        got = temperature_of(torch.from_numpy(scores), None, 0.1)
        assert got == pytest.approx(0.1 * mad(finite), rel=1e-12) == pytest.approx(2.6)
    tied = np.concatenate([np.zeros(61), np.arange(1.0, 41.0)])  # 101 scores, 61 tied
    assert mad(tied) == 0
    mean_deviation = float(np.mean(np.abs(tied - np.median(tied))))
    assert temperature_of(torch.from_numpy(tied), None, 0.1) == pytest.approx(0.1 * mean_deviation)
    assert temperature_of(torch.zeros(5), None, 0.1) == pytest.approx(0.1)  # all tie: a unit
    assert temperature_of(torch.tensor([3.0]), 2.0, 0.1) == 2.0  # an absolute τ as given
