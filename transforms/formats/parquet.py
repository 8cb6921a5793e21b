"""Parquet tables from open files (fsspec's, on any filesystem), read through `pq.ParquetFile`.

Not `pq.read_table(file)`: given a Python file object it scans through Arrow's dataset layer,
whose I/O threads may drop their last reference to the file while the interpreter exits; the
thread then needs the GIL that is gone, and the process aborts (SIGABRT, exit 134) after its
work is done — measured with pyarrow 25 on Python 3.11 in about one exit in ten."""

from __future__ import annotations

from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq


def read_parquet(
    f: IO[bytes], *, schema: pa.Schema | None = None, columns: list[str] | None = None
) -> pa.Table:
    """The table in `f`: only `columns` if given; with `schema`, exactly its columns in its
    order and types (a column the file lacks is all nulls, as pq.read_table(schema=…) gives)."""
    with pq.ParquetFile(f) as part:
        present = set(part.schema_arrow.names)
        wanted = columns or (schema.names if schema is not None else None)
        table = part.read(columns=None if wanted is None else [c for c in wanted if c in present])
    if schema is None:
        return table
    arrays = [
        table[field.name].cast(field.type)
        if field.name in present
        else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def first_row(f: IO[bytes], columns: list[str]) -> dict | None:
    """The first row of `f` (those columns), None for an empty file; reads one batch only."""
    with pq.ParquetFile(f) as part:
        batch = next(part.iter_batches(batch_size=1, columns=columns), None)
    return batch.to_pylist()[0] if batch is not None and batch.num_rows else None
