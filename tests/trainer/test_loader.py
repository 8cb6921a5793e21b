"""Curated shards as a training stream: URL patterns, decoding, corrupt samples, the wrong task,
splitting across loader workers, resampling, and fsspec URLs."""

from __future__ import annotations

import io
import itertools
import os
import random
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds
from helpers import png
from PIL import Image

from jestflow.trainer.loader import cores_beside_reader, read_ahead, train_samples
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.shard_samples import encode
from jestflow.transforms.formats.shards import ShardWriter
from jestflow.transforms.paths import expand_urls
from jestflow.transforms.records import make_example


def write(directory, n_shards=4, per_shard=5, pairs=False):
    """Shards as `jestflow curate` writes them: `txt`, `json` with the teacher loss and tags."""
    with ShardWriter(str(directory), prefix="shard-000000", max_count=per_shard) as writer:
        for i in range(n_shards * per_shard):
            example = make_example(
                layout="text_pair" if pairs else "text",
                text=f"text number {i}",
                pair=f"def f{i}(): pass" if pairs else None,
                source="pool.jsonl",
                position=i,
                meta={"kind": "clean" if i % 2 else "noise"},
            )
            embeddings = np.full((2, 4), i, dtype=np.float32) if pairs else None
            writer.write(encode(example, {"teacher_loss": i / 10, "score": -i / 10}, embeddings))
    return sorted(str(p) for p in directory.iterdir())


def test_brace_ranges_and_globs_expand_and_nothing_matching_is_an_error(tmp_path):
    files = write(tmp_path / "shards")
    assert (
        expand_urls(str(tmp_path / "shards" / "shard-000000-{000000..000003}.tar"), what="shard")
        == files
    )
    assert expand_urls(str(tmp_path / "shards" / "*.tar"), what="shard") == files
    assert expand_urls([files[1], files[0], files[1]], what="shard") == files[:2]
    with pytest.raises(JestflowError, match=r"shard not found: .*shard-000007\.tar"):
        expand_urls(
            str(tmp_path / "shards" / "shard-{000007..000008}.tar"), what="shard"
        )  # never silently
    with pytest.raises(JestflowError, match="no shard matches"):
        expand_urls(str(tmp_path / "shards" / "other-*.tar"), what="shard")


def test_samples_carry_the_payload_teacher_loss_and_tags(tmp_path):
    got = list(train_samples(write(tmp_path / "s"), task="lm"))
    assert [s.text for s in got] == [f"text number {i}" for i in range(20)]
    assert [s.teacher_loss for s in got] == [i / 10 for i in range(20)]
    assert [s.tag for s in got][:2] == ["noise", "clean"] and got[0].embeddings is None
    pairs = list(train_samples(write(tmp_path / "p", pairs=True), task="contrastive"))
    assert pairs[3].pair == "def f3(): pass" and pairs[3].embeddings.shape == (2, 4)
    assert float(pairs[3].embeddings[0, 0]) == 3.0


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    files = write(tmp_path / "s", n_shards=1)
    bad = tmp_path / "s" / "shard-000000-000009.tar"
    with open(bad, "wb") as f, wds.TarWriter(f) as tar:
        tar.write({"__key__": "nojson", "txt": b"text"})
        tar.write({"__key__": "badjson", "txt": b"text", "json": b"{oops"})
        tar.write({"__key__": "badutf8", "txt": b"\xff", "json": b'{"teacher_loss": 1}'})
        tar.write({"__key__": "fine", "txt": b"ok", "json": b'{"teacher_loss": 1}'})
    skipped = Counter()
    got = list(train_samples([*files, str(bad)], task="lm", skipped=skipped))
    assert len(got) == 6 and got[-1].key == "fine"
    assert sum(skipped.values()) == 3 and set(skipped) == {"CorruptSample"}


def test_a_sample_with_a_broken_image_is_skipped_and_counted(tmp_path):
    def sample(key, image):
        example = make_example(
            layout="image_text",
            text=f"a {key} square",
            image=png(),
            source="pool.parquet",
            position=0,
        )
        info = {"teacher_loss": 0.5, "score": -0.5, "teacher_scale": 10.0, "teacher_bias": -10.0}
        written = encode(example, info, np.zeros((2, 4), dtype=np.float32))
        return {**written, "__key__": key, "png": image}

    noise = io.BytesIO()  # a 32×32 PNG of noise: cut after its header, it still opens
    Image.frombytes("RGB", (32, 32), random.Random(0).randbytes(32 * 32 * 3)).save(noise, "PNG")
    good = png((0, 0, 255))
    with open(tmp_path / "shard-000000.tar", "wb") as f, wds.TarWriter(f) as tar:
        tar.write(sample("cut", noise.getvalue()[:2000]))  # its pixel data broken off
        tar.write(sample("garbage", b"\x89PNG\r\n\x1a\n" + b"\0" * 40))
        tar.write(sample("blue", good))
    skipped = Counter()
    got = list(
        train_samples([str(tmp_path / "shard-000000.tar")], task="contrastive", skipped=skipped)
    )
    assert [s.key for s in got] == ["blue"] and got[0].image == good
    assert skipped == {"CorruptSample": 2}


def test_shards_of_the_other_task_are_an_error(tmp_path):
    with pytest.raises(JestflowError, match="holds lm samples, not contrastive"):
        list(train_samples(write(tmp_path / "s"), task="contrastive"))
    with pytest.raises(JestflowError, match=r"holds contrastive .* not lm"):
        list(train_samples(write(tmp_path / "p", pairs=True), task="lm"))


def test_loader_workers_split_the_shards_and_resampling_is_seeded(tmp_path):
    files = write(tmp_path / "s")
    loader = torch.utils.data.DataLoader(
        train_samples(files, task="lm"), batch_size=None, num_workers=2
    )
    keys = [s.key for s in loader]
    assert sorted(keys) == sorted(s.key for s in train_samples(files, task="lm"))  # each once

    def draw(seed):
        return [
            s.key
            for s in itertools.islice(
                train_samples(files, task="lm", resampled=True, seed=seed), 40
            )
        ]

    assert draw(1) == draw(1) and draw(1) != draw(2) and len(set(draw(1))) == 20
    # Shards are in rank order: a resampled stream reads four distinct ones at once, round-robin.
    for seed in range(5):
        drawn = list(
            itertools.islice(train_samples(files, task="lm", resampled=True, seed=seed), 20)
        )
        assert sorted(int(s.text.split()[-1]) // 5 for s in drawn[:4]) == [0, 1, 2, 3]
        assert len({s.key for s in drawn}) == 20  # a round reads each of its shards once
    in_order = [s.key for s in train_samples(files, task="lm")]
    mixed = [s.key for s in train_samples(files, task="lm", shuffle=10, seed=1)]
    assert sorted(mixed) == sorted(in_order) and mixed != in_order  # the same samples, mixed


def test_any_fsspec_url(tmp_path):
    import fsspec

    root = "memory://jestflow-loader/shards"
    files = write(tmp_path / "s", n_shards=2)
    fs = fsspec.filesystem("memory")
    for path in files:
        with open(path, "rb") as src, fs.open(f"{root}/{path.rsplit('/', 1)[1]}", "wb") as dst:
            dst.write(src.read())
    urls = expand_urls(f"{root}/shard-000000-{{000000..000001}}.tar", what="shard")
    assert [u.split("://")[0] for u in urls] == ["memory", "memory"]
    assert [u.rsplit("/", 1)[1] for u in urls] == [p.rsplit("/", 1)[1] for p in files]
    assert len(list(train_samples(urls, task="lm"))) == 10


def test_raw_inputs_stream_every_example_each_pass_and_count_rejections_once(tmp_path):
    from jestflow.trainer.loader import raw_samples
    from jestflow.transforms.records import FieldMap

    for name, start in (("a", 0), ("b", 5)):
        lines = [f'{{"text": "raw {i}", "kind": "k{i % 2}"}}' for i in range(start, start + 5)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join([*lines, "{broken"]) + "\n")
    fields = FieldMap(text="text", keep=("kind",))
    skipped = Counter()
    stream = raw_samples([str(tmp_path / "*.jsonl")], fields, seed=3, skipped=skipped)
    passes = [list(itertools.islice(stream, 10)) for _ in range(3)]
    for drawn in passes:  # each pass is every example once, the files in a seeded order
        assert sorted(s.text for s in drawn) == sorted(f"raw {i}" for i in range(10))
    assert skipped == {"bad_json": 2}  # counted on the first pass only
    assert {s.tag for s in passes[0]} == {"k0", "k1"} and np.isnan(passes[0][0].teacher_loss)
    again = raw_samples([str(tmp_path / "*.jsonl")], fields, seed=3, shuffle=4)
    other = raw_samples([str(tmp_path / "*.jsonl")], fields, seed=4, shuffle=4)
    first = [s.text for s in itertools.islice(again, 30)]
    assert first == [
        s.text
        for s in itertools.islice(
            raw_samples([str(tmp_path / "*.jsonl")], fields, seed=3, shuffle=4), 30
        )
    ]
    assert first != [s.text for s in itertools.islice(other, 30)]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bad.jsonl").write_text("{broken\n")
    with pytest.raises(JestflowError, match=r"no usable examples .*first problem: .*record 0"):
        next(raw_samples([str(tmp_path / "empty" / "bad.jsonl")], fields))
    (tmp_path / "empty" / "none.jsonl").write_text("")
    with pytest.raises(JestflowError, match=r"^no records in .*none.jsonl$"):
        next(raw_samples([str(tmp_path / "empty" / "none.jsonl")], fields))


def test_read_ahead_in_a_worker_process_gives_the_same_stream(tmp_path):
    """The stream read in a worker process: the same samples in the same order, the worker's
    skip counts in the caller's counter, and an error raised with its own message."""
    files = write(tmp_path / "s", n_shards=2)
    bad = tmp_path / "s" / "shard-000000-000009.tar"
    with open(bad, "wb") as f, wds.TarWriter(f) as tar:
        tar.write({"__key__": "badjson", "txt": b"text", "json": b"{oops"})
    urls = [*files, str(bad)]

    def stream(skipped):
        return train_samples(urls, task="lm", resampled=True, seed=5, shuffle=7, skipped=skipped)

    here, there = Counter(), Counter()
    expected = list(itertools.islice(stream(here), 45))
    got = list(itertools.islice(read_ahead(stream(there), there), 45))
    assert [s.key for s in got] == [s.key for s in expected] and len({s.key for s in got}) == 10
    assert [s.text for s in got] == [s.text for s in expected]
    # counted in the worker, seen here (the worker reads ahead: it may have skipped more)
    assert set(there) == {"CorruptSample"} and there["CorruptSample"] >= here["CorruptSample"] > 0
    with pytest.raises(
        JestflowError, match=r"^shard-\d+-\d+\.tar holds lm samples, not contrastive$"
    ):
        wrong = train_samples(files, task="contrastive", resampled=True)
        list(read_ahead(wrong, Counter()))


def test_training_leaves_the_reader_process_a_core(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with cores_beside_reader(True):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 4  # as it was
        with cores_beside_reader(False):
            assert torch.get_num_threads() == 4  # no reader process: every core trains
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        with cores_beside_reader(True):
            assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
        with cores_beside_reader(True):
            assert torch.get_num_threads() == 4  # the user's choice
    finally:
        torch.set_num_threads(before)
