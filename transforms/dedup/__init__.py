"""What makes two examples copies: `copies` (normalisation, exact keys, a group's buckets linked
as arrays, near edges checked on the signatures, clusters) and `minhash` (shingles, MinHash
signatures and LSH bands for a batch at once)."""

from .copies import DEDUP_METHODS, DedupConfig, Member, components, link_buckets, normalise
from .minhash import lsh_bands, shingles, signatures

__all__ = [
    "DEDUP_METHODS",
    "DedupConfig",
    "Member",
    "components",
    "link_buckets",
    "lsh_bands",
    "normalise",
    "shingles",
    "signatures",
]
