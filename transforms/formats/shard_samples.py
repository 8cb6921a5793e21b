"""The shard sample format: what one WebDataset sample of a curated shard holds, written by
`encode` and read back by `decode`, side by side (tests/transforms/test_shard_samples.py checks
one against the other).

A sample holds
    __key__   the example's key (dot-free, unique per occurrence)
    txt       the text (lm), caption or query (contrastive), UTF-8
    doc.txt   a text pair's document
    jpg/png/… an image-text pair's encoded image (the extension from its format)
    json      id, source, position, meta (kept fields), and what curation adds: the teacher's
              loss, the score, tier, rank, super-batch, the soft weight (mean 1 over the
              kept of a super-batch: for a trainer that weights its loss), the models'
              fingerprints, and for
              contrastive tasks the teacher's temperature and bias (teacher_scale, teacher_bias);
              lm documents scored whole, each window's teacher loss (teacher_windows, float16
              values) and the tokens a window predicts (teacher_window)
    npy       contrastive only: the teacher's [2, d] (left, right) embeddings, float32
"""

from __future__ import annotations

import io
import json
import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..errors import JestflowError
from ..records import Example
from ..selection.offline import Decision

TEXT, DOC, INFO, EMBEDDINGS = "txt", "doc.txt", "json", "npy"
IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
IMAGE_KEYS = (*IMAGE_EXTENSIONS.values(), "img")  # `img`: a format PIL names but we do not


class CorruptSample(ValueError):
    """A sample that cannot be used; readers skip and count it, never fatal."""


@dataclass(frozen=True, kw_only=True)
class TrainSample:
    """A sample to train on: decoded from a curated shard, or a raw input's example (no teacher
    values) for the baselines."""

    key: str
    text: str  # the text (lm), caption or query (contrastive)
    pair: str | None = None  # a text pair's document
    image: bytes | None = None  # an image-text pair's encoded image
    teacher_loss: float = math.nan  # nan for raw inputs, which have no teacher values
    embeddings: np.ndarray | None = None  # the teacher's [2, d] (left, right), contrastive only
    teacher_scale: float | None = None  # the teacher's t and β, contrastive only
    teacher_bias: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the sample's json

    @property
    def right(self) -> str | bytes | None:
        """A two-tower model's right input: the image, or the document."""
        return self.image if self.image is not None else self.pair

    @property
    def weight(self) -> float | None:
        """The soft weight curation gave the sample (None: raw inputs, or shards curated before
        jestflow wrote weights)."""
        value = self.info.get("weight")
        return None if value is None else float(value)

    @property
    def tag(self) -> str | None:
        """The `kind` kept from the input (`--keep-field kind`), for breaking results down."""
        return self.info.get("meta", {}).get("kind")


def encode(
    example: Example, info: Mapping[str, Any], embeddings: np.ndarray | None = None
) -> dict[str, Any]:
    """The WebDataset sample of one example (`info` is added to its `json`)."""
    sample: dict[str, Any] = {"__key__": example.key, TEXT: example.text.encode("utf-8")}
    if example.pair is not None:
        sample[DOC] = example.pair.encode("utf-8")
    if example.image is not None:
        sample[image_extension(example.image)] = example.image
    meta = {"id": example.id, "source": example.source, "position": example.position}
    if example.meta:
        meta["meta"] = dict(example.meta)
    sample[INFO] = json.dumps({**meta, **info}, sort_keys=True, ensure_ascii=False).encode()
    if embeddings is not None:
        out = io.BytesIO()
        np.save(out, np.ascontiguousarray(embeddings, dtype=np.float32), allow_pickle=False)
        sample[EMBEDDINGS] = out.getvalue()
    return sample


def encode_selected(
    d: Decision, *, tier: int, rank: int, models: Mapping[str, str]
) -> dict[str, Any]:
    """The sample of a selected example: its teacher values, score, tier and rank; `models`
    (role → fingerprint) names the models that scored it."""
    info = {
        **models,
        "teacher_loss": d.teacher_loss,
        "score": d.score,
        "tier": tier,
        "rank": rank,
        "super_batch": d.super_batch,
        "weight": d.weight,
    }
    if d.scale is not None and d.bias is not None:
        info |= {"teacher_scale": d.scale, "teacher_bias": d.bias}
    if d.windows is not None:
        info |= {"teacher_windows": list(d.windows), "teacher_window": d.window}
    return encode(d.example, info, d.embeddings)


def image_extension(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        return IMAGE_EXTENSIONS.get(img.format or "", "img")


def decode_payloads(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The sample with its `json` parsed and its `npy` loaded (other members stay bytes)."""
    decoded = dict(sample)
    decoded[INFO] = json.loads(sample[INFO])
    if EMBEDDINGS in sample:
        decoded[EMBEDDINGS] = np.load(io.BytesIO(sample[EMBEDDINGS]), allow_pickle=False)
    return decoded


def decode(sample: Mapping[str, Any], task: str) -> TrainSample:
    """A WebDataset sample (as webdataset reads it) → TrainSample; CorruptSample if unusable,
    JestflowError if it was curated for the other task."""
    url = sample.get("__url__", "?")
    where = f"{url} sample {sample.get('__key__')!r}"
    try:
        decoded = decode_payloads(sample)
        info, embeddings = decoded[INFO], decoded.get(EMBEDDINGS)
        text = sample[TEXT].decode("utf-8")
        loss = float(info["teacher_loss"])
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise CorruptSample(f"{where}: {e!r}") from e
    contrastive = embeddings is not None
    if not contrastive and "teacher_scale" in info:
        raise CorruptSample(f"{where}: no teacher embeddings")
    if contrastive != (task == "contrastive"):
        held = "contrastive (teacher embeddings)" if contrastive else "lm"
        raise JestflowError(f"{posixpath.basename(url)} holds {held} samples, not {task}")
    if contrastive and (embeddings.ndim != 2 or embeddings.shape[0] != 2):
        raise CorruptSample(f"{where}: embeddings {embeddings.shape}")
    pair = sample[DOC].decode("utf-8") if DOC in sample else None
    image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if contrastive and pair is None and image is None:
        raise CorruptSample(f"{where}: no document or image")
    if image is not None:
        _verify_image(image, where)
    scale, bias = info.get("teacher_scale"), info.get("teacher_bias")
    return TrainSample(
        key=sample["__key__"],
        text=text,
        pair=pair,
        image=image,
        teacher_loss=loss,
        embeddings=embeddings,
        teacher_scale=None if scale is None else float(scale),
        teacher_bias=None if bias is None else float(bias),
        info=info,
    )


def _verify_image(image: bytes, where: str) -> None:
    try:
        with Image.open(io.BytesIO(image)) as img:
            img.verify()
    except Exception as e:  # PIL raises many kinds for a broken image
        raise CorruptSample(f"{where}: bad image: {e}") from e
