"""Packing a step's candidates for the trip from the reader process: every list of tensors as
one buffer, pairs as their columns, dataclasses field by field; unpacked, equal to what was
packed."""

from __future__ import annotations

import io
import pickle

import torch

from jestflow.trainer.packing import pack, unpack
from jestflow.trainer.prefetch import Candidates
from jestflow.trainer.windows import Windows
from jestflow.transforms.formats.shard_samples import TrainSample


def tensors_in(value) -> int:
    """How many tensors pickling `value` hands over (each its own shared-memory segment)."""
    found = []

    class Counting(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.Tensor):
                found.append(obj)
            return NotImplemented

    Counting(io.BytesIO()).dump(value)
    return len(found)


def candidates(n: int = 6) -> Candidates:
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, 100, (3 + i,), generator=gen) for i in range(n)]  # ragged
    images = [torch.rand(4, 3, 5, generator=gen).permute(1, 2, 0) for _ in range(n)]  # strided
    small = [torch.rand(3, 2, 2, generator=gen) for _ in range(n)]
    return Candidates(
        step=7,
        samples=[TrainSample(key=f"k{i}", text=f"text {i}") for i in range(n)],
        windows=Windows(sequences=tokens, teacher=torch.rand(n, generator=gen), picks=[0] * n),
        scored=list(zip(tokens, small, strict=True)),
        inputs=list(zip(tokens, images, strict=True)),
        seconds=0.5,
    )


def test_packed_candidates_unpack_equal_and_travel_in_a_few_tensors():
    given = candidates()
    packed = pickle.loads(pickle.dumps(pack(given)))
    got = unpack(packed)
    assert isinstance(got, Candidates) and isinstance(got.windows, Windows)
    assert (got.step, got.seconds) == (7, 0.5)
    assert [(s.key, s.text) for s in got.samples] == [(s.key, s.text) for s in given.samples]
    assert got.windows.picks == given.windows.picks
    assert torch.equal(got.windows.teacher, given.windows.teacher)
    for name in ("scored", "inputs"):
        pairs, expected = getattr(got, name), getattr(given, name)
        assert len(pairs) == len(expected) and all(isinstance(p, tuple) for p in pairs)
        for (a, b), (x, y) in zip(pairs, expected, strict=True):
            assert torch.equal(a, x) and torch.equal(b, y) and b.shape == y.shape
    sequences = zip(got.windows.sequences, given.windows.sequences, strict=True)
    assert all(torch.equal(a, x) for a, x in sequences)
    # 6 × (tokens, small and full images) + the teacher tensor unpacked; packed: a tensor per list
    assert tensors_in(given) == 19
    assert tensors_in(pack(given)) == 6


def test_lists_that_are_not_all_tensors_of_one_dtype_stay_as_they_are():
    mixed = [torch.zeros(2), torch.zeros(2, dtype=torch.int64)]
    assert pack(mixed) is mixed
    other = [torch.zeros(2), "text"]
    assert pack(other) is other
    assert pack([]) == [] and unpack(pack(3)) == 3
