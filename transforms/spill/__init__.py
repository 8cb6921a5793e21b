"""The curation job's shuffle through files: `files` (a producer's rows sorted by partition in
Arrow IPC runs, read back by partition range), `rows` (what is spilled: payloads, scored records,
decisions; row ↔ value) and `dedup_rows` (dedup's spills: members, needs, signatures, edges,
removed copies)."""

from ..lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "BLOCK_ROWS": "files",
        "SpillWriter": "files",
        "read_rows": "files",
        "read_spill": "files",
        "remove_folder": "files",
    },
)
