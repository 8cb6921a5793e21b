"""Images as model inputs."""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """Encoded image → RGB float tensor [3, size, size] in [-1, 1]."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.mode == "P" and "transparency" in img.info:
            # A palette with transparency (icon sets): through RGBA, the same colours as a direct
            # conversion, without PIL's warning that such images should be converted to RGBA.
            img = img.convert("RGBA")
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.view(size, size, 3).permute(2, 0, 1).float().div(127.5).sub(1.0)


def resize_images(images: Sequence[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Image tensors [3, H, W] (as `decode_image` makes them) at size × size, in one batched,
    antialiased bilinear resize: a lower resolution for a cheaper scoring pass."""
    if not images:
        return []
    batch = torch.stack(list(images))
    if batch.shape[-2:] == (size, size):
        return list(images)
    resized = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True)
    return list(resized.unbind(0))
