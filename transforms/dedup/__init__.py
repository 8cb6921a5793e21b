"""What makes two examples copies: `copies` (normalisation, exact keys, each layout's method and
threshold, a group's buckets linked as arrays, near edges checked on the signatures, clusters),
`minhash` (texts: shingles, MinHash signatures and LSH bands for a batch at once),
`perceptual` (images: perceptual hashes with a colour layout, their similarity, bit-sampling LSH
bands) and `semantic` (SemDeDup on the teacher's embeddings: k-means clusters, copies above a
cosine threshold inside each)."""

from ..lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "DEDUP_METHODS": "copies",
        "DedupConfig": "copies",
        "THRESHOLDS": "copies",
        "Member": "copies",
        "SemanticConfig": "semantic",
        "components": "copies",
        "find_copies": "semantic",
        "fingerprints": "copies",
        "image_bands": "perceptual",
        "link_buckets": "copies",
        "lsh_bands": "minhash",
        "normalise": "copies",
        "shingles": "minhash",
        "signatures": "minhash",
    },
)
