"""The files jestflow writes and reads, a module each with the writer beside the reader:
`shard_samples` (one selected example in a shard), `shards` (the WebDataset tars), `manifest`
(manifest and dead-letter Parquet), `score_cache` (models' outputs by example id and model),
`run_folder` (a curation output and its markers), `model_files` (model checkpoints and their
fingerprints), `parquet` (reading Parquet from an open file)."""

from ..lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "CachedOutputs": "score_cache",
        "MANIFEST_SCHEMA": "manifest",
        "ModelOutput": "score_cache",
        "REJECTED_SCHEMA": "manifest",
        "ShardInfo": "shards",
        "ShardWriter": "shards",
        "TrainSample": "shard_samples",
        "checkpoint_task": "model_files",
        "close": "run_folder",
        "decode": "shard_samples",
        "encode": "shard_samples",
        "fingerprint": "model_files",
        "is_complete": "run_folder",
        "load_model": "model_files",
        "prepare": "run_folder",
        "read_manifest": "manifest",
        "read_shard": "shards",
        "save_checkpoint": "model_files",
        "write_cache_part": "score_cache",
        "write_parquet": "manifest",
        "write_shards": "shards",
    },
)
