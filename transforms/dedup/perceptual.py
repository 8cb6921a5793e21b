"""Near-duplicate fingerprints of images: perceptual hashes and a colour layout, their similarity
and the LSH bands, for a batch of examples at once (what `minhash.py` is to texts).

An image's signature is a uint32 vector, one entry per part:

- **grey bits** (`GREY_BITS`, 0 or 1 each): imagehash's pHash on a 16 × 16 block of the DCT
  (256 bits) and dHash on 8 × 8 neighbour comparisons (64 bits). A near-flat image (the grey
  spread of its 32 × 32 thumbnail under `FLAT`) has no structure to hash, only noise: its grey
  bits are all 0, and its colours alone tell it apart.
- **colour layout** (`CELLS` entries): the mean R, G, B of an 8 × 8 grid of cells, divided by the
  image's mean brightness (at least `DARK`), in thousandths. Perceptual hashes are grey-level,
  and a scene of small objects on a plain background is mostly background: two such scenes hash
  alike whatever their objects' colours; the colour layout tells them apart.
- **brightness**: the image's mean grey level, in thousandths.

Two images are copies when their grey bits agree on at least the threshold's share of bits
(`similarities`: 1 − Hamming distance / bits) **and** their colour layouts agree cell by cell:
no channel of a cell differs by more than `COLOUR_TOLERANCE` (of the mean brightness, or of
the larger of the two values where they are brighter than the mean: a bright cell clipped at
255 in the brighter copy keeps its colour), and their brightness differs by a factor of at most
`BRIGHTNESS_RATIO`, **and**, where both images have grey bits, the layouts' structure agrees
(`_changed_structure`: each layout less its mean colour, the energy of their difference is at
most `STRUCTURE_TOLERANCE` of their own energies; a small shape in another colour moves no cell
by 15 % but is most of the layout's structure). Otherwise their similarity is 0. A resized,
re-encoded or ±10 % brighter copy keeps its grey bits (brightness scales every grey level
alike), its normalised colours and their structure; a different image, or the same drawing in
other colours, does not.

The LSH bands sample the grey bits (bit-sampling LSH for the Hamming distance): band k is a
fixed random set of `rows` bit positions, drawn from the dedup seed, and its bucket a hash of
those bits (`band_keys`); `image_bands` picks (bands, rows) for the threshold as `lsh_bands`
does for MinHash. Near-flat images share every band and are told apart by the colour check.

The hashes are imagehash's (PIL and scipy): their bits depend on those versions, which the lock
pins.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

import numpy as np

from ..records import Example
from .minhash import lsh_keys

PHASH = 16  # pHash: a PHASH × PHASH block of the DCT, one bit each
DHASH = 8  # dHash: DHASH rows of DHASH neighbour comparisons
GREY_BITS = PHASH * PHASH + DHASH * DHASH
GRID = 8  # the colour layout: GRID × GRID cells
CELLS = GRID * GRID * 3
LENGTH = GREY_BITS + CELLS + 1  # a signature's entries: grey bits, colour layout, brightness
FLAT = 4.0  # grey standard deviation (of 255) under which an image is near-flat: no grey bits
DARK = 64.0  # the least brightness the colours are divided by (dark images: noise is not colour)
SCALE = 1000  # the colour layout and brightness are stored in thousandths
COLOUR_TOLERANCE = 0.15  # the largest difference of a cell's normalised colour between copies,
# relative to the larger of the two where it is brighter than the mean (`similarities`)
STRUCTURE_TOLERANCE = 0.06  # the largest share of a pair's colour-layout structure that may
# differ between copies (`_changed_structure`)
STRUCTURE_FLOOR = 0.02 * SCALE  # the least structure per entry: a near-flat image's noise
BRIGHTNESS_RATIO = 1.25  # the largest ratio of mean brightness between copies
DIM = 16.0  # brightness below this counts as this in the ratio (black is black)
DECODE = 256  # JPEGs are decoded at a reduced scale, no smaller than this
MAX_BANDS = 32
BAND_RECALL = 0.95  # the chance that a pair at the threshold shares a band, at least


def signatures(examples: Sequence[Example]) -> list[np.ndarray | None]:
    """Each example's image signature (uint32 × LENGTH); None when it has no image that
    decodes."""
    return [
        _signature(example.image) if example.image is not None else None for example in examples
    ]


def _signature(data: bytes) -> np.ndarray | None:
    import imagehash
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (DECODE, DECODE))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    grey = rgb.convert("L")
    thumb = np.asarray(grey.resize((32, 32), Image.Resampling.BOX), np.float64)
    if thumb.std() < FLAT:
        bits = np.zeros(GREY_BITS, np.uint32)
    else:
        bits = np.concatenate(
            [
                imagehash.phash(grey, hash_size=PHASH).hash.ravel(),
                imagehash.dhash(grey, hash_size=DHASH).hash.ravel(),
            ]
        ).astype(np.uint32)
    cells = np.asarray(rgb.resize((GRID, GRID), Image.Resampling.BOX), np.float64)
    brightness = thumb.mean()
    colours = np.rint(cells.ravel() / max(brightness, DARK) * SCALE)
    return np.concatenate([bits, colours.astype(np.uint32), [np.uint32(round(brightness * SCALE))]])


def similarities(signature: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The similarity of an image signature with each row of a matrix of them: the share of
    equal grey bits where the colour layouts and brightness agree (module docstring), else 0."""
    grey = (others[:, :GREY_BITS] == signature[:GREY_BITS]).sum(axis=1) / GREY_BITS
    mine, theirs = (
        signature[GREY_BITS:-1].astype(np.int64),
        others[:, GREY_BITS:-1].astype(np.int64),
    )
    scale = np.maximum(np.maximum(mine, theirs), SCALE)  # relative above the mean brightness
    close = (np.abs(theirs - mine) <= COLOUR_TOLERANCE * scale).all(axis=1)
    flat = ~others[:, :GREY_BITS].any(axis=1) | (not signature[:GREY_BITS].any())
    close &= flat | (_changed_structure(mine, theirs) <= STRUCTURE_TOLERANCE)
    light = np.maximum(others[:, -1].astype(np.float64), DIM * SCALE)
    own = max(float(signature[-1]), DIM * SCALE)
    ratio = np.maximum(light / own, own / light)
    return np.where(close & (ratio <= BRIGHTNESS_RATIO), grey, 0.0)


def _changed_structure(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """How much of two colour layouts' structure differs: the energy of the difference of the
    layouts, each less its mean colour, over the sum of their own energies (at least
    `STRUCTURE_FLOOR` per entry, so a near-flat pair's noise is not structure)."""
    a = mine.reshape(-1, 3).astype(np.float64)
    b = theirs.reshape(len(theirs), CELLS // 3, 3).astype(np.float64)
    a -= a.mean(axis=0)
    b -= b.mean(axis=1, keepdims=True)
    changed = ((b - a) ** 2).sum(axis=(1, 2))
    own = (a**2).sum() + (b**2).sum(axis=(1, 2))
    return changed / np.maximum(own, CELLS * STRUCTURE_FLOOR**2)


def similarity(a: bytes, b: bytes) -> float:
    """The similarity of two image signatures given as bytes (`similarities`)."""
    return float(similarities(np.frombuffer(a, np.uint32), np.frombuffer(b, np.uint32)[None])[0])


@functools.cache
def image_bands(threshold: float, recall: float = BAND_RECALL) -> tuple[int, int]:
    """The most selective bit-sampling banding (the most bits per band, then the fewest bands,
    at most MAX_BANDS) under which two images whose grey bits agree on the `threshold` share of
    bits share a band with probability ≥ `recall`: 1 − (1 − s^r)^b (b = 32, r = 18 at 0.875:
    0.95 at 0.875, 0.99 at 0.9, 0.44 at 0.8, 0.05 at 0.7, 0.0001 at 0.5: unrelated images
    rarely meet)."""
    for rows in range(GREY_BITS, 0, -1):
        found = 1 - (1 - threshold**rows) ** MAX_BANDS
        if found >= recall:
            bands = next(
                b for b in range(1, MAX_BANDS + 1) if 1 - (1 - threshold**rows) ** b >= recall
            )
            return bands, rows
    return MAX_BANDS, 1


@functools.cache
def band_bits(bands: int, rows: int, seed: int) -> np.ndarray:
    """The grey-bit positions of each band (bands × rows), fixed by the seed: each band a random
    set of distinct bits."""
    rng = np.random.default_rng([seed, bands, rows])
    return np.stack([rng.choice(GREY_BITS, size=rows, replace=False) for _ in range(bands)])


def band_keys(matrix: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """The LSH bucket of each band of each image signature (a matrix, one per row): a signed
    64-bit hash of (band, its bits), an int64 matrix with a column per band."""
    picked = matrix[:, band_bits(bands, rows, seed).ravel()]
    return lsh_keys(picked, bands, rows)
