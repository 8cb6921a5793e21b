"""Ranked WebDataset shards: round trips through webdataset and tarfile, reproducible bytes."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import webdataset as wds
from helpers import png

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.shard_samples import encode
from jestflow.transforms.formats.shards import ShardWriter, read_shard, write_shards
from jestflow.transforms.records import make_example


def samples(n: int, layout: str = "text"):
    for rank in range(n):
        if layout == "text":
            ex = make_example(
                layout="text", text=f"text number {rank}", source="in.jsonl", position=rank
            )
        elif layout == "text_pair":
            ex = make_example(layout="text_pair", text=f"query {rank}", pair=f"def f{rank}(): pass")
        else:
            ex = make_example(layout="image_text", text=f"colour {rank}", image=png((rank, 0, 0)))
        info = {
            "score": -float(rank),
            "rank": rank,
            "teacher_loss": float(rank),
            "super_batch": 0,
            "teacher": "abcd",
        }
        emb = np.full((2, 4), rank, dtype=np.float32) if layout != "text" else None
        yield encode(ex, info, emb)


def test_shards_split_by_count_and_read_back_in_order(tmp_path):
    shards = write_shards(samples(25), str(tmp_path / "shards"), max_count=10)
    assert [(s.name, s.count) for s in shards] == [
        ("shard-000000.tar", 10),
        ("shard-000001.tar", 10),
        ("shard-000002.tar", 5),
    ]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [s.name for s in shards]
    ranks = [
        s["json"]["rank"]
        for name in shards
        for s in read_shard(str(tmp_path / "shards" / name.name))
    ]
    assert ranks == list(range(25))


def test_plain_webdataset_and_tarfile_open_the_shards(tmp_path):
    write_shards(samples(6, "text_pair"), str(tmp_path), max_count=100)
    path = str(tmp_path / "shard-000000.tar")
    loaded = list(wds.WebDataset(path, shardshuffle=False).decode())
    assert [s["txt"] for s in loaded] == [f"query {i}" for i in range(6)]
    assert loaded[2]["doc.txt"] == "def f2(): pass" and loaded[2]["json"]["rank"] == 2
    assert np.array_equal(loaded[3]["npy"], np.full((2, 4), 3, dtype=np.float32))
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert len(members) == 6 * 4 and {m.mtime for m in members} == {0}
    assert {m.uname for m in members} == {"jestflow"} and all("/" not in m.name for m in members)


def test_image_samples_keep_their_format(tmp_path):
    write_shards(samples(3, "image_text"), str(tmp_path))
    (first, *_) = read_shard(str(tmp_path / "shard-000000.tar"))
    assert first["png"] == png((0, 0, 0)) and first["txt"] == b"colour 0"


def test_same_samples_same_bytes(tmp_path):
    write_shards(samples(30), str(tmp_path / "a"), max_count=7)
    write_shards(samples(30), str(tmp_path / "b"), max_count=7)
    for name in ("shard-000000.tar", "shard-000004.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_max_bytes_and_memory_filesystem():
    shards = write_shards(samples(40), "memory://out/shards", max_bytes=600)
    assert len(shards) > 3 and sum(s.count for s in shards) == 40
    assert next(s["json"]["rank"] for s in read_shard("memory://out/shards/shard-000000.tar")) == 0


def test_a_failed_write_leaves_no_shard_behind(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(str(tmp_path), max_count=5) as writer:
        for i, sample in enumerate(samples(8)):
            if i == 7:
                raise RuntimeError("worker died")
            writer.write(sample)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]  # only complete ones


def test_bad_limits():
    with pytest.raises(JestflowError, match="positive"):
        ShardWriter("memory://x", max_count=0)
