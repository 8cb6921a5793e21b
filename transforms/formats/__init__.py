"""The files jestflow writes and reads, a module each with the writer beside the reader:
`shard_samples` (one selected example in a shard), `shards` (the WebDataset tars), `manifest`
(manifest and dead-letter Parquet), `score_cache` (models' outputs by example id and model),
`run_folder` (a curation output and its markers), `model_files` (model checkpoints and their
fingerprints), `parquet` (reading Parquet from an open file)."""

from .manifest import MANIFEST_SCHEMA, REJECTED_SCHEMA, read_manifest, write_parquet
from .model_files import checkpoint_task, fingerprint, load_model, save_checkpoint
from .run_folder import close, is_complete, prepare
from .score_cache import CachedOutputs, ModelOutput, write_cache_part
from .shard_samples import TrainSample, decode, encode
from .shards import ShardInfo, ShardWriter, read_shard, write_shards

__all__ = [
    "MANIFEST_SCHEMA",
    "REJECTED_SCHEMA",
    "CachedOutputs",
    "ModelOutput",
    "ShardInfo",
    "ShardWriter",
    "TrainSample",
    "checkpoint_task",
    "close",
    "decode",
    "encode",
    "fingerprint",
    "is_complete",
    "load_model",
    "prepare",
    "read_manifest",
    "read_shard",
    "save_checkpoint",
    "write_cache_part",
    "write_parquet",
    "write_shards",
]
