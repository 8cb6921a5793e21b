"""Curated shards as a training stream: any fsspec URL pattern, split across ranks and loader
workers (or resampled, so every rank draws the same number of samples), each sample decoded into
the payload plus the teacher's values stored by `jestflow curate`. A corrupt sample is skipped and
counted; shards of the other task are an error.

Raw inputs (the data before curation, through the same readers as `curate`) stream the same way
without teacher values: the baseline a curated run is measured against.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import webdataset as wds

from ..transforms.errors import JestflowError
from ..transforms.formats.shard_samples import TrainSample, decode
from ..transforms.formats.shards import tar_samples
from ..transforms.readers import input_urls, read_file
from ..transforms.records import FieldMap, Rejected, nothing_usable
from .packing import pack, unpack

T = TypeVar("T")

INTERLEAVE = 4  # distinct shards a resampled stream reads at once (round-robin)


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
            functools.partial(tar_samples, handler=handler),
            wds.map(functools.partial(decode, task=task), handler=handler),
        )

    if resampled:  # shards are in rank order: read several at once
        source = ShardRounds(
            urls, INTERLEAVE, seed, lambda url: samples([wds.SimpleShardList([url])])
        )
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
        first_pass, first_rejected = True, None
        while True:
            usable = False
            for url in rng.sample(urls, len(urls)):
                for record in read_file(url, fields):
                    if isinstance(record, Rejected):
                        if first_pass:
                            skipped[record.reason] += 1
                            first_rejected = first_rejected or record
                        continue
                    usable = True
                    if record.position % world != rank:
                        continue
                    meta = {"meta": dict(record.meta)}  # where shards keep the kept fields
                    yield TrainSample(
                        key=record.key,
                        text=record.text,
                        pair=record.pair,
                        image=record.image,
                        info=meta,
                    )
            if not usable:
                raise nothing_usable(patterns, first_rejected)
            first_pass = False

    stream = forever()
    return iter(wds.shuffle(shuffle, initial=shuffle, rng=rng)(stream)) if shuffle else stream


class _Counted(torch.utils.data.IterableDataset):
    """Items packed (`packing.pack`), each with the skip counts so far (for `read_ahead`); a
    JestflowError ends them as an item of its own, so its message reaches the trainer whole."""

    def __init__(self, items: Iterable, skipped: Counter) -> None:
        self.items, self.skipped = items, skipped

    def __iter__(self) -> Iterator[tuple[Any, dict]]:
        try:
            for item in self.items:
                yield pack(item), dict(self.skipped)
        except JestflowError as error:
            yield error, dict(self.skipped)


def read_ahead(items: Iterable[T], skipped: Counter, depth: int = 2) -> Iterator[T]:
    """The same items, made in a worker process of their own (a DataLoader worker), `depth`
    ahead, so reading tars, decoding samples and making model inputs runs beside training
    instead of holding the trainer's interpreter; `skipped` follows the worker's counts of
    corrupt samples. The worker forks now, from the calling thread (call it before other threads
    start), and stops when the returned iterator is closed or released."""
    loader = torch.utils.data.DataLoader(
        _Counted(items, skipped),
        batch_size=None,
        num_workers=1,
        prefetch_factor=depth,
        collate_fn=_as_is,
        multiprocessing_context="fork",  # the items (open generators) cannot be pickled
        worker_init_fn=_ignore_ctrl_c,
    )
    return _received(iter(loader), skipped)


@contextlib.contextmanager
def cores_beside_reader(read_process: bool) -> Iterator[None]:
    """Within the block (if `read_process`), torch's intra-op threads one fewer than the cores,
    so the reader process (`read_ahead`) has a core of its own: where it decodes images and the
    training threads share every core with it, they wait on each other (2 cores, image-text
    recipe: 45 ms a step instead of 28; uniform 27 instead of 20). An OMP_NUM_THREADS of the
    user's (or torchrun's) is kept."""
    before = torch.get_num_threads()
    if not read_process or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, min(before, (cores or 1) - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_is(item):
    return item


def _ignore_ctrl_c(worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group; the trainer handles it (it stops
    the reader when it exits), the reader must not die of it first: a reader that exits while
    its queue is full never finishes exiting, and the trainer would wait for it forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _received(packed: Iterator, skipped: Counter) -> Iterator:
    for item, counts in packed:
        skipped.update({k: v - skipped[k] for k, v in counts.items()})
        if isinstance(item, JestflowError):
            raise item
        yield unpack(item)
