"""WebDataset shards as files: a byte-reproducible shard writer, and the one way shards are read
back (webdataset's tar expander, for the trainer's loader and for tools). What a sample holds is
`shard_samples.py`.

Shards are written under a temporary name and renamed when complete, with a fixed mtime, owner
and mode, so the same samples always give the same bytes. (Raw *input* tars are read by
`transforms/readers.py` instead: they are untrusted, so every member is checked and a bad sample becomes a
dead letter rather than an error.)
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import webdataset as wds
from webdataset.handlers import reraise_exception
from webdataset.tariterators import group_by_keys, tar_file_expander

from ..errors import JestflowError
from ..paths import filesystem, writable_directory
from .shard_samples import decode_payloads

MTIME = 0  # fixed member metadata: the same samples give the same bytes
# Member names are KEY.EXTENSION: a key of these characters, dot-separated lower-case extensions.
# Nothing else is written, so no member name can be absolute or climb out with `..`.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")
SAFE_EXTENSION = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
OWNER = "jestflow"


def check_member_names(sample: Mapping[str, Any]) -> None:
    """Refuse a sample whose key or extensions would make an unsafe tar member name."""
    key = str(sample.get("__key__", ""))
    if not SAFE_NAME.fullmatch(key):
        raise JestflowError(f"unsafe sample key {key!r}: letters, digits, - and _ only")
    for extension in sample:
        if not extension.startswith("__") and not SAFE_EXTENSION.fullmatch(extension):
            raise JestflowError(f"unsafe tar member name {key}.{extension!r}")


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    name: str  # file name under the shard directory
    count: int
    bytes: int


class ShardWriter:
    """Writes samples, in order, into `{prefix}-000000.tar`, `{prefix}-000001.tar`, … under a
    directory, starting a new shard after `max_count` samples or `max_bytes` of payload."""

    def __init__(
        self,
        directory: str,
        *,
        prefix: str = "shard",
        max_count: int = 10_000,
        max_bytes: int = 1 << 30,
    ) -> None:
        if max_count < 1 or max_bytes < 1:
            raise JestflowError("shard limits must be positive")
        if not SAFE_NAME.fullmatch(prefix):
            raise JestflowError(f"bad shard prefix {prefix!r}: letters, digits, - and _ only")
        self.fs, self.root = writable_directory(directory)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.shards: list[ShardInfo] = []
        self._file = self._tar = None
        self._count = self._bytes = 0

    def write(self, sample: Mapping[str, Any]) -> None:
        check_member_names(sample)
        size = sum(len(v) for k, v in sample.items() if not k.startswith("__"))
        if self._tar is not None and (
            self._count >= self.max_count or self._bytes + size > self.max_bytes
        ):
            self._finish()
        if self._tar is None:
            self._start()
        self._tar.write(dict(sample))
        self._count += 1
        self._bytes += size

    def close(self) -> list[ShardInfo]:
        if self._tar is not None:
            self._finish()
        return self.shards

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None:
            self.close()
        elif self._tar is not None:  # leave no partial shard behind, not even a temporary one
            self._tar.close()
            self._file.close()
            self.fs.rm(self._tmp)

    @property
    def _name(self) -> str:
        return f"{self.prefix}-{len(self.shards):06d}.tar"

    def _start(self) -> None:
        self._tmp = posixpath.join(self.root, f".{self._name}.tmp-{os.getpid()}")
        self._file = self.fs.open(self._tmp, "wb")
        self._tar = wds.TarWriter(
            self._file, user=OWNER, group=OWNER, mode=0o444, encoder=False, mtime=MTIME
        )
        self._count = self._bytes = 0

    def _finish(self) -> None:
        self._tar.close()
        self._file.close()
        final = posixpath.join(self.root, self._name)
        self.fs.mv(self._tmp, final)
        self.shards.append(ShardInfo(name=self._name, count=self._count, bytes=self.fs.size(final)))
        self._tar = self._file = None


def write_shards(
    samples: Iterable[Mapping[str, Any]], directory: str, **limits: Any
) -> list[ShardInfo]:
    """Write samples in order into shards under `directory`; returns what was written."""
    with ShardWriter(directory, **limits) as writer:
        for sample in samples:
            writer.write(sample)
    return writer.shards


def open_shards(sources: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """webdataset's source stage over fsspec: each `{"url": …}` with its open `stream`."""
    for source in sources:
        fs, path = filesystem(source["url"])
        with fs.open(path, "rb") as stream:
            yield {**source, "stream": stream}


def tar_samples(
    sources: Iterable[Mapping[str, Any]], handler=reraise_exception
) -> Iterator[dict[str, Any]]:
    """The raw samples (`{"__key__", "__url__", extension: bytes}`) of the shards `sources`
    names, in order; `handler` decides about a broken member (webdataset's convention)."""
    members = tar_file_expander(open_shards(sources), handler=handler)
    return group_by_keys(members, handler=handler)


def read_shard(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard in order, `json` parsed and `npy` loaded (checks and tools)."""
    for sample in tar_samples([{"url": url}]):
        yield decode_payloads(sample)
