"""What the curation job spills (`files.py`), a schema and its row ↔ value functions each, side by
side: examples' payloads, scored examples, selection decisions (dedup's rows are in
`dedup_rows.py`).

A row is written as a tuple in its schema's order and read back as a dict. Only the payload rows
hold texts and images; the others are the small records that the grouping
into super-batches, selection and shard writing work from. Floats keep every bit (a loss is a
float32 value, stored as float64; embeddings as float32), so values read back are the values
written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..formats.score_cache import ModelOutput
from ..records import Example
from ..selection.offline import Decision

PAYLOAD = pa.schema(
    [
        ("key", pa.string()),
        ("id", pa.string()),
        ("layout", pa.string()),
        ("text", pa.large_string()),
        ("pair", pa.large_string()),
        ("image", pa.large_binary()),
        ("file", pa.int32()),  # the input file's index in the run's sorted inputs
        ("position", pa.int64()),
        ("occurrence", pa.int32()),  # earlier records of the file with the same id
        ("meta", pa.large_string()),  # kept fields, as JSON (None: none)
    ]
)


def _output_fields(role: str) -> list[tuple[str, pa.DataType]]:
    return [
        (f"{role}_loss", pa.float64()),
        (f"{role}_embeddings", pa.list_(pa.float32())),  # [2, d] flattened
        (f"{role}_scale", pa.float64()),
        (f"{role}_bias", pa.float64()),
        (f"{role}_precision", pa.string()),
        (f"{role}_windows", pa.list_(pa.float32())),  # lm, whole documents
        (f"{role}_window", pa.int32()),
    ]


SCORED = pa.schema(
    [
        ("hash", pa.uint64()),  # key_hash(key, seed): the order inside super-batches
        ("key", pa.string()),
        ("id", pa.string()),
        ("file", pa.int32()),
        ("position", pa.int64()),
        ("occurrence", pa.int32()),  # earlier records of the file with the same id
        ("meta", pa.large_string()),  # kept fields, as JSON: the manifest rows carry them
        *_output_fields("teacher"),
        *_output_fields("student"),
        ("ensemble", pa.list_(pa.float64())),  # the other teachers' losses (teacher_2, …)
    ]
)

DECISION = pa.schema(
    [
        ("key", pa.string()),
        ("super_batch", pa.int64()),
        ("teacher_loss", pa.float64()),
        ("score", pa.float64()),
        ("order", pa.int64()),
        ("embeddings", pa.list_(pa.float32())),
        ("scale", pa.float64()),
        ("bias", pa.float64()),
        ("windows", pa.list_(pa.float32())),  # the teacher's, lm whole documents
        ("window", pa.int32()),
        ("weight", pa.float64()),
    ]
)


def payload_row(example: Example, file: int) -> tuple:
    return (
        example.key,
        example.id,
        example.layout,
        example.text,
        example.pair,
        example.image,
        file,
        example.position,
        example.occurrence,
        _meta(example),
    )


def payload_size(example: Example) -> int:
    """Roughly the memory a payload row takes while it is held (its payload, and about 600 bytes
    of Python objects besides: a text of 200 characters takes 3× its length), for the spill's
    run limit and the scoring chunks' byte limit."""
    return 600 + len(example.text) + len(example.pair or "") + len(example.image or b"")


def example_of(row: Mapping[str, Any], urls: Sequence[str]) -> Example:
    return Example(
        id=row["id"],
        layout=row["layout"],
        text=row["text"],
        pair=row["pair"],
        image=row["image"],
        source=urls[row["file"]],
        position=row["position"],
        occurrence=row["occurrence"],
        meta=_meta_of(row),
    )


def scored_row(example: Example, file: int, h: int, outputs: Mapping[str, ModelOutput]) -> tuple:
    """An example's small record: its order, what names it, and each model's output (the other
    teachers' losses alone)."""
    row = (h, example.key, example.id, file, example.position, example.occurrence)
    row += (_meta(example),)
    for role in ("teacher", "student"):
        out = outputs.get(role)
        row += (
            (None,) * 7
            if out is None
            else (
                out.loss,
                _flat(out.embeddings),
                out.scale,
                out.bias,
                out.precision,
                _list(out.windows),
                out.window,
            )
        )
    others = ensemble_roles(outputs)
    return (*row, [outputs[role].loss for role in others] if others else None)


def ensemble_roles(roles: Iterable[str]) -> list[str]:
    """The other teachers' roles (`teacher_2`, `teacher_3` …), in order."""
    return sorted((r for r in roles if r.startswith("teacher_")), key=lambda r: int(r[8:]))


def ensemble_of(rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """The other teachers' losses of scored rows, [rows, teachers] (None: one teacher)."""
    if not rows or rows[0]["ensemble"] is None:
        return None
    return np.asarray([row["ensemble"] for row in rows], dtype=np.float64)


def output_of(row: Mapping[str, Any], role: str) -> ModelOutput | None:
    """A model's output from a scored row (None when that model did not score)."""
    if row[f"{role}_precision"] is None:
        return None
    flat = row[f"{role}_embeddings"]
    return ModelOutput(
        loss=row[f"{role}_loss"],
        embeddings=None if flat is None else np.asarray(flat, dtype=np.float32).reshape(2, -1),
        scale=row[f"{role}_scale"],
        bias=row[f"{role}_bias"],
        precision=row[f"{role}_precision"],
        windows=_tuple(row[f"{role}_windows"]),
        window=row[f"{role}_window"],
    )


def stub_example(row: Mapping[str, Any], urls: Sequence[str]) -> Example:
    """The example a scored row names, without its payload: enough to select and to write
    manifest rows (id, key, source, position, kept fields)."""
    return Example(
        id=row["id"],
        layout="text",
        text="",
        source=urls[row["file"]],
        position=row["position"],
        occurrence=row["occurrence"],
        meta=_meta_of(row),
    )


def decision_row(d: Decision) -> tuple:
    return (
        d.example.key,
        d.super_batch,
        d.teacher_loss,
        d.score,
        d.order,
        _flat(d.embeddings),
        d.scale,
        d.bias,
        _list(d.windows),
        d.window,
        d.weight,
    )


def decision_of(row: Mapping[str, Any], example: Example) -> Decision:
    flat = row["embeddings"]
    return Decision(
        example=example,
        super_batch=row["super_batch"],
        teacher_loss=row["teacher_loss"],
        score=row["score"],
        order=row["order"],
        embeddings=None if flat is None else np.asarray(flat, dtype=np.float32).reshape(2, -1),
        scale=row["scale"],
        bias=row["bias"],
        windows=_tuple(row["windows"]),
        window=row["window"],
        weight=row["weight"],
    )


def _flat(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else np.asarray(values, dtype=np.float32).reshape(-1).tolist()


def _meta(example: Example) -> str | None:
    return json.dumps(dict(example.meta)) if example.meta else None


def _meta_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(row["meta"]) if row["meta"] else {}


def _list(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else list(values)


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)
