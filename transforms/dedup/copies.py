"""Duplicates, before anything is scored: what identifies a copy, and how copies form clusters.

- **exact**: two examples are copies when their normalised content is equal. Texts are
  normalised to Unicode NFC with runs of whitespace collapsed to one space and the ends
  stripped (case and punctuation count); a text pair is the pair of its normalised texts; an
  image–text pair is its image's bytes and its normalised caption.
- **near**, texts: MinHash over character 5-gram shingles of a more aggressive normalisation
  (NFC, lower case, punctuation removed, whitespace collapsed), with LSH banding tuned to the
  Jaccard `threshold` (`lsh_bands`): two examples whose signatures agree on every row of some
  band are candidates, and copies when their signatures also estimate a Jaccard similarity of
  at least the threshold (`bucket_edges`; a band shared by chance is not enough). A text pair's
  shingles come from both of its texts, each side hashed apart. A text with nothing left to
  shingle (only punctuation, say) is deduplicated exactly instead.
- **near**, image–text pairs: the image alone (`perceptual.py`: pHash and dHash bits with a
  colour layout, bit-sampling LSH bands), so a resized, re-encoded or slightly brighter copy is
  a copy whatever its caption; the same image under another caption is a near copy too (a
  contrastive batch holding one picture twice has a false negative either way).
- Copies form clusters (connected components, not only pairs). The copy kept is the first in
  input order — the lowest (input file index, position) — whatever the bundles and workers were.

The shingles, signatures and bands of texts are in `minhash.py`, those of images in
`perceptual.py`. `threshold` None means the layout's default: a Jaccard similarity of 0.8 for
texts, a share of equal grey bits of 0.875 for images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import JestflowError
from ..records import Example
from . import minhash, perceptual
from .minhash import lsh_bands, lsh_keys

DEDUP_METHODS = ("near", "exact", "none")
THRESHOLDS = {"text": 0.8, "text_pair": 0.8, "image_text": 0.875}  # near: each layout's default
PAIRED = 16  # the representatives of a bucket a new content is compared with, at most


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    method: str | None = None  # None: near
    # near: the similarity that makes copies (None: the layout's default, THRESHOLDS) — texts:
    # the Jaccard similarity of shingle sets; images: the share of equal perceptual-hash bits
    threshold: float | None = None
    num_perm: int = 128  # near, texts: MinHash permutations
    # near: the MinHash seed and the image bands' bits (not the run's seed: copies do not
    # depend on it)
    seed: int = 1
    layout: str = "text"  # the examples' layout: `resolved` sets it

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in DEDUP_METHODS:
            raise JestflowError(
                f"unknown dedup method {self.method!r}; expected one of {', '.join(DEDUP_METHODS)}"
            )
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise JestflowError(f"the dedup threshold must be in (0, 1), got {self.threshold}")

    def resolved(self, layout: str) -> DedupConfig:
        """This config for examples of `layout`: its method (near unless given) and threshold
        filled in."""
        return dataclasses.replace(
            self,
            method=self.method or "near",
            threshold=self.min_similarity_for(layout),
            layout=layout,
        )

    def min_similarity_for(self, layout: str) -> float:
        return THRESHOLDS[layout] if self.threshold is None else self.threshold

    @property
    def min_similarity(self) -> float:
        """The similarity that makes near copies (the threshold, or the layout's default)."""
        return self.min_similarity_for(self.layout)

    @property
    def images(self) -> bool:
        """Whether near dedup compares images (perceptual) rather than texts (MinHash)."""
        return self.layout == "image_text"

    @property
    def bands(self) -> tuple[int, int]:
        """(bands b, rows per band r) of the LSH banding: b·r ≤ num_perm for texts, bits sampled
        from the grey bits for images."""
        if self.images:
            return perceptual.image_bands(self.min_similarity)
        return lsh_bands(self.min_similarity, self.num_perm)

    def similarities(self, signature: np.ndarray, others: np.ndarray) -> np.ndarray:
        """The similarity of a signature with each row of a matrix of them."""
        if self.images:
            return perceptual.similarities(signature, others)
        return minhash.similarities(signature, others)


class Member(NamedTuple):
    """An example as dedup sees it: ordered by input order, the first of a cluster is kept (a
    tuple, which Beam's coder packs compactly)."""

    file: int  # the input file's index in the run's sorted inputs
    position: int
    key: str
    content: int  # a signed 64-bit hash of the exactly normalised content


def normalise(text: str) -> str:
    """The exact-duplicate form of a text: NFC, whitespace collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(example: Example) -> int:
    """A signed 64-bit hash of an example's exactly normalised content (its texts, its image
    bytes)."""
    h = hashlib.blake2b(digest_size=8)
    for part in (example.text, example.pair):
        if part is not None:
            h.update(normalise(part).encode("utf-8", "surrogatepass") + b"\x00")
    if example.image is not None:
        h.update(b"image\x00" + example.image)
    return int.from_bytes(h.digest(), "big", signed=True)


def fingerprints(examples: Sequence[Example], config: DedupConfig) -> list[np.ndarray | None]:
    """Each example's near-duplicate signature: MinHash of its texts, or its image's perceptual
    signature (None when it has nothing to shingle, or no image that decodes)."""
    if config.images:
        return perceptual.signatures(examples)
    return minhash.signatures(examples, config.num_perm, config.seed)


def band_keys(examples: Sequence[Example], config: DedupConfig) -> list[list[int]]:
    """Each example's LSH buckets, one per band (none when it has no signature)."""
    bands, rows = config.bands
    sigs = fingerprints(examples, config)
    found = [sig for sig in sigs if sig is not None]
    if not found:
        keys = iter([])
    elif config.images:
        keys = iter(perceptual.band_keys(np.stack(found), bands, rows, config.seed).tolist())
    else:
        keys = iter(lsh_keys(np.stack(found), bands, rows).tolist())
    return [next(keys) if sig is not None else [] for sig in sigs]


def signature(example: Example, config: DedupConfig) -> np.ndarray | None:
    """One example's signature (`fingerprints`)."""
    return fingerprints([example], config)[0]


def near_members(members: Iterable[tuple]) -> list[str]:
    """The keys of a bucket's members whose signatures `bucket_edges` compares: the first copy of
    each content, when the bucket holds more than one content."""
    firsts: dict[int, Member] = {}
    for m in sorted({Member(*t) for t in members}):
        firsts.setdefault(m.content, m)
    return [m.key for m in firsts.values()] if len(firsts) > 1 else []


def bucket_edges(
    members: Iterable[tuple],
    signatures: Mapping[str, bytes],
    threshold: float,
    similarities: Callable[[np.ndarray, np.ndarray], np.ndarray] = minhash.similarities,
) -> list[tuple[Member, Member]]:
    """A bucket's copies as edges, at most one per member after the first, in input order: a
    member is linked to the first member with its content (an exact copy), else to the first of
    the bucket's representatives (the first `PAIRED` of them) whose signature has a similarity of
    at least `threshold` with its own (`similarities`: MinHash's estimated Jaccard similarity, or
    the images' `DedupConfig.similarities`; a band shared by chance is not enough), else it
    becomes a representative. Members may come as plain tuples."""
    firsts: dict[int, Member] = {}
    representatives: list[Member] = []
    matrix = np.empty((PAIRED, 0), np.uint32)  # their signatures, a row each
    edges = []
    for m in sorted({Member(*t) for t in members}):
        first = firsts.setdefault(m.content, m)
        if first is not m:
            edges.append((first, m))
            continue
        if m.key not in signatures:
            continue  # nothing to compare: not a near copy of anything
        sig = np.frombuffer(signatures[m.key], np.uint32)
        if not representatives:
            matrix = np.empty((PAIRED, len(sig)), np.uint32)
        agree = np.flatnonzero(similarities(sig, matrix[: len(representatives)]) >= threshold)
        if len(agree):
            edges.append((representatives[agree[0]], m))
        elif len(representatives) < PAIRED:
            matrix[len(representatives)] = sig
            representatives.append(m)
    return edges


@dataclass(frozen=True, kw_only=True)
class Copies:
    """The duplicate clusters of a run: every removed copy with the copy kept in its place."""

    kept_of: dict[str, Member]  # removed copy's key → the member kept
    kinds: dict[str, str]  # removed copy's key → "exact" or "near"
    cluster_sizes: dict[int, int]  # cluster size → how many clusters of that size

    def summary(self) -> dict:
        kinds = Counter(self.kinds.values())
        return copies_summary(kinds["exact"], kinds["near"], self.cluster_sizes)


def copies_summary(exact: int, near: int, cluster_sizes: Mapping[int, int]) -> dict:
    """stats.json's count of the removed copies: by kind, and their clusters by size."""
    return {
        "duplicates": exact + near,
        "exact": exact,
        "near": near,
        "clusters": sum(cluster_sizes.values()),
        "cluster_sizes": {str(k): v for k, v in sorted(cluster_sizes.items())},
    }


def components(first: np.ndarray, second: np.ndarray, n: int) -> np.ndarray:
    """The connected components of the graph on nodes 0 … n-1 with edges (first[i], second[i]):
    each node's root, the smallest node of its component. Arrays only (roots hooked under the
    smaller root of each edge, then every node pointed at its root, until no edge joins two
    roots), so a million copies take tens of megabytes, not Python objects by the million."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    root = np.arange(n, dtype=np.int64)
    while True:
        a, b = root[first], root[second]
        if np.array_equal(a, b):
            return root
        low = np.minimum(a, b)
        np.minimum.at(root, a, low)  # a root's new parent is smaller: no cycles
        np.minimum.at(root, b, low)
        while not np.array_equal(up := root[root], root):
            root = up


def cluster_sizes(root: np.ndarray) -> dict[int, int]:
    """Cluster size → how many clusters of that size, from each node's root."""
    sizes = np.bincount(root, minlength=len(root))
    return dict(sorted(Counter(sizes[sizes > 0].tolist()).items()))


def clusters(edges: Iterable[tuple[Member, Member]]) -> Copies:
    """Connected components of the copy graph; each keeps its first member."""
    edges = list(edges)
    members = sorted({m for edge in edges for m in edge})  # input order
    index = {m: i for i, m in enumerate(members)}
    first = [index[a] for a, _ in edges]
    second = [index[b] for _, b in edges]
    root = components(np.asarray(first, np.int64), np.asarray(second, np.int64), len(members))
    kept_of, kinds = {}, {}
    for member, r in zip(members, root.tolist(), strict=True):
        kept = members[r]
        if kept != member:
            kept_of[member.key] = kept
            kinds[member.key] = "exact" if member.content == kept.content else "near"
    return Copies(kept_of=kept_of, kinds=kinds, cluster_sizes=cluster_sizes(root))


@dataclass(frozen=True, kw_only=True)
class LinkedRows:
    """What `link_buckets` found, as row indices into the members it was given."""

    kept: np.ndarray  # exact edges: kept[i] is the first copy of copies[i]'s content in a bucket
    copies: np.ndarray
    candidates: np.ndarray  # near: the members of buckets holding more than one content …
    firsts: np.ndarray  # … and the first copy of each content in each of them


def link_buckets(
    bucket: np.ndarray, band: np.ndarray, content: np.ndarray, *, near: bool
) -> LinkedRows:
    """The exact edges and near candidates of members given in (bucket, input order), each
    member once per bucket: in a bucket of one content (or any bucket, for exact dedup) each
    member is linked to the first member with its content, in band 0 only (exact copies share
    every band, so the other bands add nothing); a bucket of several contents is left to the
    signature check (`bucket_edges`) when `near`."""
    n = len(bucket)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]]) if n else np.empty(0, int)
    sizes = np.diff(np.r_[starts, n])
    of_row = np.repeat(np.arange(len(starts)), sizes)
    shared = (sizes > 1)[of_row]
    if near and n:
        other = content != content[starts][of_row]
        mixed = np.logical_or.reduceat(other, starts)[of_row] & shared
    else:
        mixed = np.zeros(n, bool)
    order, leader = _by_content(np.flatnonzero(shared & ~mixed & (band == 0)), bucket, content)
    linked = order != leader
    candidates = np.flatnonzero(mixed)
    among, leaders = _by_content(candidates, bucket, content)
    return LinkedRows(
        kept=leader[linked],
        copies=order[linked],
        candidates=candidates,
        firsts=np.sort(among[among == leaders]),
    )


def _by_content(rows: np.ndarray, bucket: np.ndarray, content: np.ndarray):
    """(`rows` ordered by bucket, content and input order; each one's leader, the first row of
    its bucket and content)."""
    order = rows[np.lexsort((rows, content[rows], bucket[rows]))]
    b, c = bucket[order], content[order]
    new = np.r_[True, (b[1:] != b[:-1]) | (c[1:] != c[:-1])][: len(order)]
    return order, order[np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))]
