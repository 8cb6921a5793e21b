"""Spill files: the curation job's own shuffle through files, so that no per-example data waits in
a runner's memory (Beam's local runner holds everything that crosses a grouping step in memory).

A producer — one unit of work: an input file, a scoring chunk, a shard group — writes its rows
into `partitions` partitions of an Arrow IPC file: the rows sorted by partition, in record batches
of BLOCK_ROWS rows, with each partition's end row in the schema's metadata; a consumer reads a
range of partitions from every producer's files (only the blocks that hold them). Blocks, not a
batch per partition: a thousand partitions of a few rows each cost more in batch metadata and
per-batch calls than the rows themselves. A producer keeps its rows in memory up to
`max_bytes` and then writes them as a run, `NAME-RRRR.arrow`, so its memory is bounded too. Names
come from the unit of work and rows are written in the order the unit produced them, so a retried
unit rewrites the same files with the same rows (write-then-rename: a reader never sees half a
file), and what a consumer reads does not depend on the runner's bundles or workers.

The files live under the run's `_temporary/` folder and are deleted once `_SUCCESS` is written
(`run_folder.close`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..paths import child, filesystem, replacing

MAX_BYTES = 32 << 20  # rows a producer keeps before writing a run
BLOCK_ROWS = 2048  # rows per record batch of a run
PIECE_ROWS = 4096  # rows added one by one that are held as Python values, at most
ENDS = b"jestflow.partition_ends"  # metadata: each partition's end row, int64 little-endian


class SpillWriter:
    """Rows of one producer, by partition, written as one or more runs `NAME-RRRR.arrow`."""

    def __init__(
        self,
        folder: str,
        name: str,
        schema: pa.Schema,
        partitions: int = 1,
        *,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if partitions < 1:
            raise ValueError("a spill file needs at least one partition")
        self.folder, self.name, self.schema = folder, name, schema
        self.partitions, self.max_bytes = partitions, max_bytes
        self.urls: list[str] = []
        self._rows: list[tuple] = []  # rows added one by one, not yet columns …
        self._row_partitions: list[int] = []
        self._pieces: list[tuple[pa.RecordBatch, np.ndarray]] = []  # … and columns, in order
        self._bytes = 0

    def add(self, row: tuple, partition: int = 0, *, size: int = 64) -> None:
        """Add a row: its values in the schema's order (`size`: its rough size in bytes, for the
        run limit)."""
        self._rows.append(row)
        self._row_partitions.append(partition)
        if len(self._rows) == PIECE_ROWS:  # as Arrow columns: a fraction of Python's footprint
            self._rows_to_columns()
        self._added(size)

    def add_columns(self, partitions: np.ndarray, columns: list, *, size: int) -> None:
        """Add many rows at once: `columns` in the schema's order (arrays or lists of one length),
        `partitions` each row's partition."""
        self._rows_to_columns()
        self._pieces.append((self._batch(columns), np.asarray(partitions, dtype=np.int64)))
        self._added(size)

    def close(self) -> list[str]:
        """Write what is left; returns every run's URL (none when no row was added)."""
        self._rows_to_columns()
        if self._pieces:
            self._write_run()
        return self.urls

    def _added(self, size: int) -> None:
        self._bytes += size
        if self._bytes >= self.max_bytes:
            self._rows_to_columns()
            self._write_run()

    def _rows_to_columns(self) -> None:
        if self._rows:
            columns = list(zip(*self._rows, strict=True))
            self._pieces.append((self._batch(columns), np.asarray(self._row_partitions)))
            self._rows, self._row_partitions = [], []

    def _batch(self, columns: Sequence) -> pa.RecordBatch:
        arrays = [_array(c, f.type) for c, f in zip(columns, self.schema, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _write_run(self) -> None:
        """The rows so far as one file: sorted by partition (stable: a partition keeps the order
        its rows came in), in blocks of BLOCK_ROWS rows, each partition's end row in the
        metadata."""
        batch = pa.concat_batches([piece for piece, _ in self._pieces])
        partitions = np.concatenate([p for _, p in self._pieces])
        if partitions.min() < 0 or partitions.max() >= self.partitions:
            raise ValueError(f"a partition outside 0–{self.partitions - 1} in {self.name}")
        order = np.argsort(partitions, kind="stable")
        ends = np.searchsorted(partitions[order], np.arange(1, self.partitions + 1))
        schema = self.schema.with_metadata({ENDS: ends.astype("<i8").tobytes()})
        url = child(self.folder, f"{self.name}-{len(self.urls):04d}.arrow")
        fs, path = filesystem(url)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with replacing(fs, path) as f, pa.ipc.new_file(f, schema) as writer:
            for start in range(0, len(order), BLOCK_ROWS):
                # `take`, not a slice: the IPC writer would write a slice's whole buffers
                block = batch.take(pa.array(order[start : start + BLOCK_ROWS]))
                writer.write_batch(block)
        self.urls.append(url)
        self._pieces, self._bytes = [], 0


def _array(values, kind: pa.DataType) -> pa.Array:
    """A column as an Arrow array of `kind`: Arrow columns are cast, not rebuilt value by value."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(kind)
    return pa.array(values, type=kind)


def read_spill(
    urls: Sequence[str], lo: int = 0, hi: int | None = None, *, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """The rows of partitions [lo, hi) of each spill file (all of them without `hi`), file by
    file, in record batches."""
    for url in urls:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as f, pa.ipc.open_file(f) as reader:
            bounds = np.frombuffer(reader.schema.metadata[ENDS], dtype="<i8").tolist()
            bounds = [0, *bounds]  # partition p: rows [bounds[p], bounds[p + 1])
            last = len(bounds) - 1
            start = bounds[min(lo, last)]
            stop = max(start, bounds[last if hi is None else min(hi, last)])
            for block in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
                first = block * BLOCK_ROWS
                batch = reader.get_batch(block)
                skip = max(start - first, 0)
                batch = batch.slice(skip, min(stop - first, batch.num_rows) - skip)
                if batch.num_rows:
                    yield batch if columns is None else batch.select(list(columns))


def read_rows(
    urls: Sequence[str], lo: int = 0, hi: int | None = None, *, columns: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of `read_spill`, as dicts."""
    for batch in read_spill(urls, lo, hi, columns=columns):
        yield from batch.to_pylist()


def remove_folder(url: str) -> None:
    """Delete a spill folder and everything under it (nothing when it is not there)."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
