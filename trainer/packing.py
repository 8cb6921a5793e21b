"""A step's candidates packed to cross from the reader process to the trainer in a few buffers.

A DataLoader worker hands each tensor over in a shared-memory segment of its own: a step's
r·b token and image tensors (and the lower-resolution copies it scores) are hundreds of them, and
the trainer spent longer receiving them than the worker spent making them. Packed, every list of
tensors travels as one flat tensor with the shapes to cut it back into views; lists of
(left, right) pairs travel as their two columns; dataclasses (`Candidates`, `Windows`) field by
field. Unpacking gives equal tensors (contiguous), so a run trains the same either way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class _Tensors:
    flat: torch.Tensor
    shapes: list[tuple[int, ...]]

    def unpack(self) -> list[torch.Tensor]:
        parts = self.flat.split([math.prod(shape) for shape in self.shapes])
        return [part.view(shape) for part, shape in zip(parts, self.shapes, strict=True)]


@dataclasses.dataclass(frozen=True)
class _Columns:
    columns: list[Any]

    def unpack(self) -> list[tuple]:
        return list(zip(*(unpack(column) for column in self.columns), strict=True))


@dataclasses.dataclass(frozen=True)
class _Fields:
    cls: type
    values: dict[str, Any]

    def unpack(self) -> Any:
        return self.cls(**{name: unpack(value) for name, value in self.values.items()})


def pack(value: Any) -> Any:
    """`value` with its lists of tensors (of one dtype) packed, also inside lists of equal-length
    tuples and inside dataclasses; anything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return _Fields(type(value), {f.name: pack(getattr(value, f.name)) for f in fields})
    if not isinstance(value, list) or not value:
        return value
    if all(isinstance(v, torch.Tensor) for v in value) and len({v.dtype for v in value}) == 1:
        flat = torch.cat([v.detach().reshape(-1) for v in value])
        return _Tensors(flat, [tuple(v.shape) for v in value])
    if all(isinstance(v, tuple) for v in value) and len({len(v) for v in value}) == 1:
        return _Columns([pack(list(column)) for column in zip(*value, strict=True)])
    return value


def unpack(value: Any) -> Any:
    """What `pack` was given (tensors as contiguous views of the packed buffer)."""
    return value.unpack() if isinstance(value, _Tensors | _Columns | _Fields) else value
