"""The manifest parts and dead letters the steps write beside the shards (`write_step.py`).

Every file name comes from the data — super-batch ids, input file indices — never from workers
or bundles, so a re-run writes the same files with the same bytes:
`manifest/not-selected-SSSSSS.parquet` (a super-batch's others), `manifest/rejected-FFFFFF.parquet`
and `rejected/part-FFFFFF.parquet` (an input file's dead letters), and the parts of the removed
copies and of an empty pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..transforms.formats.manifest import (
    MANIFEST_SCHEMA,
    REJECTED_SCHEMA,
    dead_letter,
    example_row,
    rejected_row,
    write_parquet,
)
from ..transforms.paths import child
from ..transforms.records import Rejected
from ..transforms.selection.offline import Decision


def write_not_selected(decisions: Iterable[Decision], output: str) -> int:
    """The manifest part of one super-batch's examples that were scored but not kept."""
    rows = [
        example_row(
            d.example,
            selected=False,
            teacher_loss=d.teacher_loss,
            score=d.score,
            super_batch=d.super_batch,
        )
        for d in decisions
        if not d.selected
    ]
    if not rows:
        return 0
    return write_manifest_part(rows, output, f"not-selected-{rows[0]['super_batch']:06d}")


def write_manifest_part(rows: list[dict[str, Any]], output: str, name: str) -> int:
    rows = sorted(rows, key=lambda r: (r["super_batch"], r["key"]))
    return write_parquet(rows, child(output, "manifest", f"{name}.parquet"), MANIFEST_SCHEMA)


def write_rejected(element: tuple[int, Iterable[Rejected]], output: str) -> int:
    """The dead letters of one input file, and their manifest rows."""
    index, records = element
    records = sorted(records, key=lambda r: (r.source, r.position))
    name = f"part-{index:06d}.parquet"
    write_parquet(
        [dead_letter(r) for r in records], child(output, "rejected", name), REJECTED_SCHEMA
    )
    return write_manifest_part([rejected_row(r) for r in records], output, f"rejected-{index:06d}")
