"""Curated shards as a training stream: any fsspec URL pattern, split across ranks and loader
workers (or resampled, so every rank draws the same number of samples), each sample decoded into
the payload plus the teacher's values stored by `jestflow curate`. A corrupt sample is skipped and
counted; shards of the other task are an error.

Raw inputs (the data before curation, through the same readers as `curate`) stream the same way
without teacher values: the baseline a curated run is measured against.
"""

from __future__ import annotations

import functools
import io
import json
import math
import posixpath
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander

from ..transforms.errors import JestflowError
from ..transforms.paths import filesystem
from ..transforms.readers import input_urls, read_file
from ..transforms.records import FieldMap, Rejected

INTERLEAVE = 4  # distinct shards a resampled stream reads at once (round-robin)


class CorruptSample(ValueError):
    """A sample that cannot be used; skipped and counted, never fatal."""


@dataclass(frozen=True, kw_only=True)
class TrainSample:
    key: str
    text: str  # the text (lm), caption or query (contrastive)
    pair: str | None = None  # a text pair's document
    image: bytes | None = None  # an image-text pair's encoded image
    teacher_loss: float = math.nan  # nan for raw inputs, which have no teacher values
    embeddings: np.ndarray | None = None  # the teacher's [2, d] (left, right), contrastive only
    info: dict[str, Any] = field(default_factory=dict)  # the sample's json

    @property
    def right(self) -> str | bytes | None:
        """A two-tower model's right input: the image, or the document."""
        return self.image if self.image is not None else self.pair

    @property
    def tag(self) -> str | None:
        """The `kind` kept from the input (`--keep-field kind`), for breaking results down."""
        return self.info.get("meta", {}).get("kind")


def decode(sample: dict[str, Any], task: str) -> TrainSample:
    """A raw WebDataset sample → TrainSample; CorruptSample if unusable, JestflowError if it was
    curated for the other task."""
    url = sample.get("__url__", "?")
    try:
        info = json.loads(sample["json"])
        text = sample["txt"].decode("utf-8")
        loss = float(info["teacher_loss"])
        embeddings = (
            np.load(io.BytesIO(sample["npy"]), allow_pickle=False) if "npy" in sample else None
        )
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise CorruptSample(f"{url} sample {sample.get('__key__')!r}: {e!r}") from e
    contrastive = embeddings is not None
    if not contrastive and "teacher_scale" in info:
        raise CorruptSample(f"{url} sample {sample.get('__key__')!r}: no teacher embeddings")
    if contrastive != (task == "contrastive"):
        held = "contrastive (teacher embeddings)" if contrastive else "lm"
        raise JestflowError(f"{posixpath.basename(url)} holds {held} samples, not {task}")
    if embeddings is not None and (embeddings.ndim != 2 or embeddings.shape[0] != 2):
        raise CorruptSample(f"{url} sample {sample['__key__']!r}: embeddings {embeddings.shape}")
    pair = sample["doc.txt"].decode("utf-8") if "doc.txt" in sample else None
    image = next(
        (sample[k] for k in ("jpg", "png", "webp", "gif", "bmp", "img") if k in sample), None
    )
    if contrastive and pair is None and image is None:
        raise CorruptSample(f"{url} sample {sample['__key__']!r}: no document or image")
    if image is not None:
        try:
            with Image.open(io.BytesIO(image)) as img:
                img.verify()
        except Exception as e:  # PIL raises many kinds for a broken image
            raise CorruptSample(f"{url} sample {sample['__key__']!r}: bad image: {e}") from e
    return TrainSample(key=sample["__key__"], text=text, pair=pair, image=image,
                       teacher_loss=loss, embeddings=embeddings, info=info)  # fmt: skip


def _open(sources: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for source in sources:
        fs, path = filesystem(source["url"])
        with fs.open(path, "rb") as stream:
            yield {**source, "stream": stream}


def _skip(skipped: Counter, error: Exception) -> bool:
    """Count a corrupt sample or tar member and go on; anything else stops the run."""
    if isinstance(error, JestflowError):
        return False
    skipped[type(error).__name__] += 1
    return True


def train_samples(
    urls: Sequence[str],
    *,
    task: str,
    resampled: bool = False,
    seed: int = 0,
    shuffle: int = 0,
    skipped: Counter | None = None,
) -> wds.DataPipeline:
    """An IterableDataset of TrainSample over the shards.

    `resampled`: every rank and loader worker draws shards at random forever (seeded), reading
    INTERLEAVE distinct ones at a time, so all ranks see the same number of batches; otherwise each
    shard is read once, split across ranks (torch.distributed) and DataLoader workers.
    `shuffle` > 0 mixes samples in a seeded buffer of that size: shards are in rank order, so a
    super-batch of neighbours would leave a uniform draw biased and selection little to choose
    from. Corrupt samples are counted in `skipped`.
    """
    skipped = Counter() if skipped is None else skipped

    def handler(error: Exception) -> bool:
        if isinstance(error, JestflowError):
            raise error
        return _skip(skipped, error)

    def samples(source: list) -> wds.DataPipeline:
        return wds.DataPipeline(
            *source,
            _open,
            functools.partial(tar_file_expander, handler=handler),
            functools.partial(group_by_keys, handler=handler),
            wds.map(functools.partial(decode, task=task), handler=handler),
        )

    if resampled:  # shards are in rank order: read several at once
        source = ShardRounds(urls, INTERLEAVE, seed,
                             lambda url: samples([wds.SimpleShardList([url])]))  # fmt: skip
    else:
        source = samples([wds.SimpleShardList(list(urls)), wds.split_by_node, wds.split_by_worker])
    mix = [wds.shuffle(shuffle, initial=shuffle, rng=random.Random(seed))] if shuffle else []
    return wds.DataPipeline(source, *mix)


class ShardRounds(torch.utils.data.IterableDataset):
    """Endless rounds over the shards: each round draws `k` distinct shards at random (seeded,
    and per DataLoader worker) and yields their samples round-robin until all k are read."""

    def __init__(self, urls: Sequence[str], k: int, seed: int, samples) -> None:
        self.urls, self.k, self.seed, self.samples = list(urls), k, seed, samples

    def __iter__(self) -> Iterator:
        worker = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.seed}/{0 if worker is None else worker.id}")
        while True:
            picked = rng.sample(self.urls, min(self.k, len(self.urls)))
            streams = [iter(self.samples(url)) for url in picked]
            while streams:
                for stream in list(streams):
                    try:
                        yield next(stream)
                    except StopIteration:
                        streams.remove(stream)


def raw_samples(
    patterns: Sequence[str],
    fields: FieldMap,
    *,
    seed: int = 0,
    shuffle: int = 0,
    skipped: Counter | None = None,
    rank: int = 0,
    world: int = 1,
) -> Iterator[TrainSample]:
    """An endless stream of TrainSample over raw inputs (no teacher values): every pass visits
    the files in a new seeded order, and `shuffle` > 0 mixes samples in a seeded buffer of that
    size (a draw is uniform only within the buffer: records in a file stay in their order). Rank
    `rank` of `world` reads the records whose position in their file is `rank` modulo `world`.
    Records the readers reject are counted in `skipped` by reason (all of them, once, on the
    first pass); inputs without a usable example are an error."""
    urls = input_urls(patterns)
    skipped = Counter() if skipped is None else skipped
    rng = random.Random(seed)

    def forever() -> Iterator[TrainSample]:
        first_pass = True
        while True:
            usable = False
            for url in rng.sample(urls, len(urls)):
                for record in read_file(url, fields):
                    if isinstance(record, Rejected):
                        if first_pass:
                            skipped[record.reason] += 1
                        continue
                    usable = True
                    if record.position % world != rank:
                        continue
                    meta = {"meta": dict(record.meta)}  # where shards keep the kept fields
                    yield TrainSample(key=record.key, text=record.text, pair=record.pair,
                                      image=record.image, info=meta)  # fmt: skip
            if not usable:
                raise JestflowError(f"no usable examples in {', '.join(patterns)}")
            first_pass = False

    stream = forever()
    return iter(wds.shuffle(shuffle, initial=shuffle, rng=rng)(stream)) if shuffle else stream
