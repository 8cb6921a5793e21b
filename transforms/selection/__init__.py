"""JEST selection: `jest` (scores, joint sampling with relative temperature and keyed Gumbel
noise), `offline` (one scored super-batch → decisions), `super_batches` (the hash order that
makes super-batches, and the shard groups' rank ranges), `stats` (score counts, tiers)."""

from .jest import (
    RELATIVE_TEMPERATURE,
    ContrastivePairScores,
    easy_reference,
    hard_learner,
    learnability,
    score,
    select_independent,
    select_joint,
)
from .offline import Decision, ScoredBatch, SelectionConfig, kept_count, select_super_batch
from .stats import summarize, tier_thresholds
from .super_batches import bucket_of, group_ranges

__all__ = [
    "RELATIVE_TEMPERATURE",
    "ContrastivePairScores",
    "Decision",
    "ScoredBatch",
    "SelectionConfig",
    "bucket_of",
    "easy_reference",
    "group_ranges",
    "hard_learner",
    "kept_count",
    "learnability",
    "score",
    "select_independent",
    "select_joint",
    "select_super_batch",
    "summarize",
    "tier_thresholds",
]
