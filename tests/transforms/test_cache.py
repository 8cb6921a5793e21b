"""The score cache's lookup: every output a part holds is found by id and precision, the first
part by name wins, and what is not there is not found."""

from __future__ import annotations

import numpy as np

from jestflow.transforms.formats.score_cache import (
    CachedOutputs,
    ModelOutput,
    cache_parts,
    part_name,
    write_cache_part,
)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(start, start + n)]


def test_losses_are_found_by_id_and_precision_and_the_first_part_wins(tmp_path):
    cache = str(tmp_path)
    first = {i: ModelOutput(loss=float(np.float32(k / 7))) for k, i in enumerate(ids(50))}
    later = {i: ModelOutput(loss=99.0) for i in ids(60, 25)}  # ids 25–84: 25 of them in both
    write_cache_part(cache, "fp", first)
    write_cache_part(cache, "fp", later)
    write_cache_part(cache, "fp", {i: ModelOutput(loss=-1.0, precision="bf16") for i in ids(3)})
    index = CachedOutputs(cache_parts(cache, "fp"))
    assert len(index) == 85 + 3
    # Held by both parts: the part whose name sorts first wins.
    named = [(part_name(list(first), "fp32"), first), (part_name(list(later), "fp32"), later)]
    winner = min(named, key=lambda pair: pair[0])[1]
    for i in ids(85):
        expected = winner[i] if i in first and i in later else first.get(i) or later.get(i)
        assert index.get(i, "fp32") == expected, i
    assert index.get(ids(1)[0], "bf16").loss == -1.0
    assert index.get(ids(1, 500)[0], "fp32") is None
    assert index.get(ids(1, 10)[0], "bf16") is None
    assert len(CachedOutputs([])) == 0 and CachedOutputs([]).get(ids(1)[0], "fp32") is None


def test_embeddings_come_back_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    outputs = {
        i: ModelOutput(
            embeddings=rng.standard_normal((2, 8)).astype(np.float32), scale=10.0, bias=-10.0
        )
        for i in ids(20)
    }
    write_cache_part(str(tmp_path), "fp", outputs)
    index = CachedOutputs(cache_parts(str(tmp_path), "fp"))
    for i, out in outputs.items():
        got = index.get(i, "fp32")
        assert np.array_equal(got.embeddings, out.embeddings) and got.embeddings.dtype == np.float32
        assert (got.scale, got.bias, got.loss) == (10.0, -10.0, None)


def test_window_losses_come_back_as_written(tmp_path):
    """Whole documents: each window's loss (float16 values) and the window's width; a part
    written before windows existed reads as none."""
    windows = {
        i: tuple(float(np.float16(k + w / 8)) for w in range(k % 4 + 1))
        for k, i in enumerate(ids(10))
    }
    outputs = {i: ModelOutput(loss=1.5, windows=w, window=256) for i, w in windows.items()}
    write_cache_part(str(tmp_path), "fp", outputs)
    index = CachedOutputs(cache_parts(str(tmp_path), "fp"))
    for i, out in outputs.items():
        assert index.get(i, "fp32") == out
    write_cache_part(str(tmp_path), "old", {i: ModelOutput(loss=2.0) for i in ids(2)})
    old = CachedOutputs(cache_parts(str(tmp_path), "old")).get(ids(1)[0], "fp32")
    assert (old.windows, old.window, old.loss) == (None, None, 2.0)
