"""JEST selection: `jest` (scores, joint sampling with relative temperature and keyed Gumbel
noise), `offline` (one scored super-batch → decisions), `super_batches` (the hash order that
makes super-batches, and the shard groups' ranges of the hash space), `stats` (score counts, tiers)."""

from ..lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "ContrastivePairScores": "pair_scores",
        "Decision": "offline",
        "RELATIVE_TEMPERATURE": "jest",
        "ScoredBatch": "offline",
        "SelectionConfig": "offline",
        "bucket_of": "super_batches",
        "easy_reference": "scores",
        "group_ranges": "super_batches",
        "hard_learner": "scores",
        "kept_count": "offline",
        "learnability": "scores",
        "score": "scores",
        "select_independent": "jest",
        "select_joint": "jest",
        "select_super_batch": "offline",
        "SoftmaxPairScores": "pair_scores",
        "summarize": "stats",
        "tier_thresholds": "stats",
    },
)
