"""The curation job's shuffle through files: `files` (a producer's rows sorted by partition in
Arrow IPC runs, read back by partition range), `rows` (what is spilled: payloads, scored records,
decisions; row ↔ value) and `dedup_rows` (dedup's spills: members, needs, signatures, edges,
removed copies)."""

from .files import BLOCK_ROWS, SpillWriter, read_rows, read_spill, remove_folder

__all__ = ["BLOCK_ROWS", "SpillWriter", "read_rows", "read_spill", "remove_folder"]
