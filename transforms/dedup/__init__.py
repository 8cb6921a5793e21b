"""What makes two examples copies: `copies` (normalisation, exact keys, a group's buckets linked
as arrays, near edges checked on the signatures, clusters), `minhash` (shingles, MinHash
signatures and LSH bands for a batch at once) and `semantic` (SemDeDup on the teacher's
embeddings: k-means clusters, copies above a cosine threshold inside each)."""

from ..lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "DEDUP_METHODS": "copies",
        "DedupConfig": "copies",
        "Member": "copies",
        "SemanticConfig": "semantic",
        "components": "copies",
        "find_copies": "semantic",
        "link_buckets": "copies",
        "lsh_bands": "minhash",
        "normalise": "copies",
        "shingles": "minhash",
        "signatures": "minhash",
    },
)
