"""The framework-free core: records and readers, the data formats (shard samples, shards,
manifest, score cache, run folder, checkpoints), models and scoring, JEST selection, and what
people read (reports, tables, logs). Never imports Beam, `pipeline` or `trainer`."""
