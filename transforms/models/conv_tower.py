"""The built-in image tower: a small convolutional network.

Four 3×3 convolutions, each halving the image (stride 2), with GELU between them, then the
final feature map flattened (so where things are in the image still counts) and projected. It
learns far more from a few thousand pairs than a ViT of the same width (the results page:
teachers, from bench/teachers.py).

Any image side that is a multiple of 16 goes through: a map of another size than the trained
one's is average-pooled (or repeated) to it, so the student can score at a lower resolution, a
cheaper pass (Flexi-JEST); at the trained size the map is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .images import decode_image
from .layers import to_device

STAGES = 4  # stride-2 convolutions: a 64-pixel image ends as a 4×4 map


class ConvTower(nn.Module):
    def __init__(self, config, embed_dim: int) -> None:
        super().__init__()
        side = config.image_size >> STAGES
        if side < 1 or config.image_size % (1 << STAGES):
            raise ValueError(f"image_size must be a multiple of {1 << STAGES}")
        self.config, self.side = config, side
        widths = [3] + [max(config.d_model >> (STAGES - 1 - i), 8) for i in range(STAGES)]
        layers: list[nn.Module] = []
        for i in range(STAGES):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), nn.GELU()]
        self.features = nn.Sequential(*layers)
        self.ln = nn.LayerNorm(widths[-1] * side * side)
        self.head = nn.Linear(widths[-1] * side * side, embed_dim)

    def prepare(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        return [decode_image(data, self.config.image_size) for data in images]

    def forward(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.features(to_device(torch.stack(list(items)), self.head.weight.device))
        if x.shape[-1] != self.side or x.shape[-2] != self.side:
            x = F.adaptive_avg_pool2d(x, self.side)
        return self.head(self.ln(x.flatten(1)))
