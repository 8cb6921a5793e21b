"""The score cache: a model's per-example outputs as Parquet, keyed by (example id, model
fingerprint), so re-running curation with the same teacher scores only what is new.

Layout under the cache URL: `<fingerprint>[-first<N>]/part-<precision>-<digest>.parquet`, one
part per scored batch of new examples (`-first<N>`: an lm model's losses on the first N tokens,
`--score-seq-len`); the part name is a digest of the ids it holds, so writing the same
batch again (a retried bundle, a redone run) replaces the file instead of adding one. A new model
has a new fingerprint, hence an empty folder: everything is scored afresh. Outputs computed in
another precision (bf16 on a GPU, fp32 on a CPU) are not mixed with each other: a run uses only
those of the precision it scores in.

What is cached is what does not depend on which other examples share a super-batch: an LM's
per-example loss, or a two-tower model's (left, right) embeddings with its temperature t and
bias β (the pair losses are rebuilt from them for each super-batch).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import JestflowError
from ..paths import child, filesystem
from ..records import Example
from .manifest import write_parquet
from .parquet import read_parquet

CACHE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # the example's content id
        ("loss", pa.float64()),  # lm: mean token NLL
        ("left", pa.list_(pa.float32())),  # contrastive: the towers' embeddings …
        ("right", pa.list_(pa.float32())),
        ("scale", pa.float64()),  # … and the model's t and β
        ("bias", pa.float64()),
        ("precision", pa.string()),  # bf16 (CUDA autocast) or fp32
        ("windows", pa.list_(pa.float32())),  # lm, whole documents: each window's loss …
        ("window", pa.int32()),  # … and the tokens a window predicts
    ]
)


@dataclass(frozen=True, kw_only=True)
class ModelOutput:
    """One model's output for one example: an LM loss (whole documents: with each window's loss,
    rounded to float16, and the window's width in tokens), or pair embeddings [2, d] with t and
    β."""

    loss: float | None = None
    embeddings: np.ndarray | None = None
    scale: float | None = None
    bias: float | None = None
    precision: str = "fp32"
    windows: tuple[float, ...] | None = None
    window: int | None = None

    def row(self, example_id: str) -> dict:
        pair = self.embeddings
        return {
            "id": example_id,
            "loss": self.loss,
            "left": None if pair is None else pair[0].tolist(),
            "right": None if pair is None else pair[1].tolist(),
            "scale": self.scale,
            "bias": self.bias,
            "precision": self.precision,
            "windows": None if self.windows is None else list(self.windows),
            "window": self.window,
        }


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """An example on its way to scoring, with the outputs the cache already holds for it, by
    model role (`teacher`, `student`) and precision."""

    example: Example
    cached: Mapping[str, Mapping[str, ModelOutput]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.example.key

    def output(self, role: str, precision: str) -> ModelOutput | None:
        return self.cached.get(role, {}).get(precision)


def model_folder(cache: str, fingerprint: str) -> str:
    return child(cache.rstrip("/"), fingerprint)


def cache_parts(cache: str, fingerprint: str) -> list[str]:
    """The part files cached for a model, sorted (none when the model was never cached). The
    listing is fresh: cloud filesystems otherwise reuse one made before this run wrote parts."""
    fs, root = filesystem(model_folder(cache, fingerprint))
    fs.invalidate_cache(root)
    if not fs.isdir(root):
        return []
    names = fs.ls(root, detail=False)
    parts = sorted(
        p for p in names if posixpath.basename(p).startswith("part-") and p.endswith(".parquet")
    )
    return [fs.unstrip_protocol(p) if "://" in cache else p for p in parts]


def part_name(ids: list[str], precision: str) -> str:
    digest = hashlib.blake2b("\n".join(sorted(ids)).encode(), digest_size=16).hexdigest()
    return f"part-{precision}-{digest}.parquet"


def write_cache_part(cache: str, fingerprint: str, outputs: Mapping[str, ModelOutput]) -> int:
    """Write a batch of new outputs (by example id, one precision) as one part; returns the row
    count."""
    if not outputs:
        return 0
    (precision,) = {out.precision for out in outputs.values()}
    rows = [outputs[example_id].row(example_id) for example_id in sorted(outputs)]
    url = child(model_folder(cache, fingerprint), part_name(list(outputs), precision))
    return write_parquet(rows, url, CACHE_SCHEMA)


def read_cache_part(url: str) -> Iterator[tuple[str, ModelOutput]]:
    """(example id, output) for every row of one part."""
    for row in _table(url).to_pylist():
        pair = None
        if row["left"] is not None and row["right"] is not None:
            pair = np.asarray([row["left"], row["right"]], dtype=np.float32)
        output = ModelOutput(
            loss=row["loss"],
            embeddings=pair,
            scale=row["scale"],
            bias=row["bias"],
            precision=row["precision"],
            windows=_tuple(row["windows"]),
            window=row["window"],
        )
        yield row["id"], output


class CachedOutputs:
    """The outputs a model's cache parts hold, looked up by example id, per precision: sorted ids
    beside arrays of the outputs (tens of bytes per cached LM loss, not an object each). When
    several parts hold an id, the first part by name wins."""

    def __init__(self, parts: list[str]) -> None:
        tables = [_table(url) for url in sorted(parts)]
        table = pa.concat_tables(tables) if tables else CACHE_SCHEMA.empty_table()
        self._by_precision: dict[str, dict] = {}
        precisions = table.column("precision").to_numpy(zero_copy_only=False)
        for name in sorted(set(precisions.tolist())):
            rows = table.filter(pa.array(precisions == name))
            ids = np.asarray(rows.column("id").to_pylist(), dtype="S32")
            ids, first = np.unique(ids, return_index=True)  # first occurrence: the first part
            rows = rows.take(pa.array(first))
            left, right = rows.column("left"), rows.column("right")
            pairs = None
            if left.null_count == 0 and len(rows):
                pairs = np.stack([_matrix(left), _matrix(right)], axis=1)
            self._by_precision[name] = {
                "ids": ids,
                "pairs": pairs,
                **{
                    name: rows.column(name).combine_chunks()
                    for name in ("loss", "scale", "bias", "windows", "window")
                },
            }

    def __len__(self) -> int:
        return sum(len(found["ids"]) for found in self._by_precision.values())

    def get(self, example_id: str, precision: str) -> ModelOutput | None:
        found = self._by_precision.get(precision)
        if found is None:
            return None
        ids, key = found["ids"], example_id.encode()
        i = int(np.searchsorted(ids, key))
        if i >= len(ids) or ids[i] != key:
            return None
        pairs = found["pairs"]
        return ModelOutput(
            loss=found["loss"][i].as_py(),
            embeddings=None if pairs is None else pairs[i],
            scale=found["scale"][i].as_py(),
            bias=found["bias"][i].as_py(),
            precision=precision,
            windows=_tuple(found["windows"][i].as_py()),
            window=found["window"][i].as_py(),
        )


def _table(url: str) -> pa.Table:
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            return read_parquet(f, schema=CACHE_SCHEMA)
    except (OSError, pa.ArrowException) as e:
        raise JestflowError(
            f"unreadable score cache part {url}: {e}; delete it (its examples are scored again)"
        ) from e


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_pylist(), dtype=np.float32)


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)
