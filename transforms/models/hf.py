"""Adapters that give Hugging Face models the built-in models' scoring interface (extra `hf`).

`HFCausalLM` wraps `AutoModelForCausalLM` for per-example LM loss; `HFTextEncoder` wraps an
`AutoModel` text encoder with mean pooling for text-text contrastive scoring (one shared encoder
for queries and documents, as sentence encoders are used). Weights load from safetensors only.
Image–text dual encoders (CLIP, SigLIP, VisionTextDualEncoder) have their adapter in `hf_dual.py`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import missing_extra
from .layers import pad, to_device
from .losses import PairEmbeddings, token_nll


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise missing_extra("hf", "transformers") from e
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


# Every `from_pretrained`: a local folder only, never code from it (`auto_map`).
LOCAL_ONLY = {"local_files_only": True, "trust_remote_code": False}


def _load_pretrained(path: str, auto_class: str, **options: Any):
    """(tokenizer, model in eval mode) from a local directory, weights from safetensors only;
    `options` go to `from_pretrained` (a classifier's `num_labels`)."""
    tf = _transformers()
    tokenizer = load_tokenizer(path)
    # Never pickled weights.
    model = getattr(tf, auto_class).from_pretrained(
        path, use_safetensors=True, **LOCAL_ONLY, **options
    )
    return tokenizer, model.eval()


def tokenizer_id(tokenizer) -> str:
    """A name for how a tokenizer cuts text: a digest of its vocabulary (token → id). Two models
    with the same one give the same tokens for a text, so windows cut by one fit the other."""
    vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return "vocab-" + hashlib.blake2b(vocabulary.encode(), digest_size=8).hexdigest()


def load_tokenizer(path: str):
    return _transformers().AutoTokenizer.from_pretrained(path, **LOCAL_ONLY)


class _Adapter(nn.Module):
    """What the adapters share: the wrapped model's device, and saving it the Hugging Face way
    (`checkpoint.save_checkpoint` calls `save_pretrained` for a fine-tuned one)."""

    model: nn.Module
    tokenizer: Any

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def save_pretrained(self, directory: str) -> None:
        """The model (safetensors), its tokenizer and its image processor, into a local folder."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        processor = getattr(self, "processor", None)
        if processor is not None:
            processor.save_pretrained(directory)


class PairAdapter(_Adapter):
    """A two-tower adapter's temperature t and sigmoid-loss bias β: trainable parameters (log t
    and β), set from the model or `jestflow.json`, and written back there when saved, with the
    pair loss it trains on (`pair_loss`)."""

    task = "contrastive"
    pair_loss = "sigmoid"

    def init_scale_bias(self, scale: float, bias: float) -> None:
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(bias)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @scale.setter
    def scale(self, value: float) -> None:
        with torch.no_grad():
            self.log_scale.fill_(math.log(float(value)))

    @property
    def bias(self) -> torch.Tensor:
        return self.logit_bias

    @bias.setter
    def bias(self, value: float) -> None:
        with torch.no_grad():
            self.logit_bias.fill_(float(value))

    def pair_embeddings(self, left: torch.Tensor, right: torch.Tensor) -> PairEmbeddings:
        """Embeddings plus this model's (t, β) and loss, with gradients (training)."""
        return PairEmbeddings(left, right, self.scale, self.bias, self.pair_loss)


class HFCausalLM(_Adapter):
    architecture = "hf_causal_lm"
    task = "lm"

    def __init__(self, path: str, *, max_len: int = 512) -> None:
        super().__init__()
        self.tokenizer, self.model = _load_pretrained(path, "AutoModelForCausalLM")
        # A leading BOS makes the first real token scored too; EOS stands in where there is none.
        self.bos = self.tokenizer.bos_token_id
        if self.bos is None:
            self.bos = self.tokenizer.eos_token_id
        limit = getattr(self.model.config, "max_position_embeddings", None) or (max_len + 1)
        self.max_len = min(max_len, limit - (self.bos is not None))  # BOS takes a position too
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0

    def tokenize(self, texts: Sequence[str], max_len: int | None = None) -> list[torch.Tensor]:
        """Token ids with a leading BOS (so the first token is scored too), truncated."""
        limit = min(max_len or self.max_len, self.max_len)
        encoded = self.tokenizer(
            list(texts), add_special_tokens=False, truncation=True, max_length=limit
        )["input_ids"]
        head = [] if self.bos is None else [self.bos]
        return [torch.tensor((head + ids)[: limit + 1], dtype=torch.long) for ids in encoded]

    @property
    def context(self) -> int:
        """The tokens one scored sequence predicts at most (after BOS)."""
        return self.max_len

    @functools.cached_property
    def token_kind(self) -> str:
        """How this model cuts text into tokens (`tokenizer_id`)."""
        return tokenizer_id(self.tokenizer)

    def token_ids(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        """Each text's token ids, at most `limit` of them, without BOS."""
        encoded = self.tokenizer(
            list(texts), add_special_tokens=False, truncation=True, max_length=limit
        )["input_ids"]
        return [list(ids) for ids in encoded]

    def sequence_nll(self, sequences: Sequence[torch.Tensor]) -> torch.Tensor:
        ids, mask = pad(sequences, self.pad_id, limit=self.max_len + 1)
        ids, mask = to_device(ids, self.device), to_device(mask, self.device)
        logits = self.model(input_ids=ids, attention_mask=mask.long()).logits
        return token_nll(logits[:, :-1], ids[:, 1:], mask[:, 1:])


class HFTextEncoder(PairAdapter):
    """Mean-pooled, L2-normalised sentence embeddings from a Hugging Face encoder.

    A pretrained encoder has no sigmoid-loss temperature and bias of its own: (t, β) default to
    (20, −10) and can be set by a `jestflow.json` beside the model ({"scale": t, "bias": β}).
    """

    architecture = "hf_text_encoder"
    right_kind = "text"

    def __init__(
        self, path: str, *, scale: float = 20.0, bias: float = -10.0, max_len: int = 256
    ) -> None:
        super().__init__()
        self.tokenizer, self.model = _load_pretrained(path, "AutoModel")
        limit = getattr(self.model.config, "max_position_embeddings", None) or max_len
        self.max_len = min(max_len, limit)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.init_scale_bias(scale, bias)

    def prepare_left(self, texts: Sequence[str]) -> list[torch.Tensor]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_len)["input_ids"]
        return [torch.tensor(ids, dtype=torch.long) for ids in encoded]

    prepare_right = prepare_left

    def embed_left(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        ids, mask = pad(items, self.pad_id, limit=self.max_len)
        ids, mask = to_device(ids, self.device), to_device(mask, self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return F.normalize(pooled.float(), dim=-1)

    embed_right = embed_left
