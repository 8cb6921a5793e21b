"""A Hugging Face sequence classifier as a classifier teacher (extra `hf`): one logit per text,
its log-odds of being reference.

`HFClassifier` wraps `AutoModelForSequenceClassification` with a single label. Fine-tuning starts
from any encoder (`teacher train --task classifier --init MiniLM`: the classification head is new)
or from a saved classifier; it saves itself the Hugging Face way, with
`BertForSequenceClassification`-style architectures in its config, which is how a classifier
folder is recognised (`is_sequence_classifier`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .hf import _Adapter, _load_pretrained
from .layers import pad, to_device


def is_sequence_classifier(config: dict[str, Any]) -> bool:
    """Whether a Hugging Face config is a sequence classifier's (by its architectures)."""
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


class HFClassifier(_Adapter):
    architecture = "hf_sequence_classifier"
    task = "classifier"

    def __init__(self, path: str, *, max_len: int = 512) -> None:
        super().__init__()
        self.tokenizer, self.model = _load_pretrained(
            path, "AutoModelForSequenceClassification", num_labels=1
        )
        limit = getattr(self.model.config, "max_position_embeddings", None) or max_len
        self.max_len = min(max_len, limit)
        self.pad_id = self.tokenizer.pad_token_id or 0

    def prepare(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Token ids of each text's start (at most `max_len` of them)."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_len)["input_ids"]
        return [torch.tensor(ids, dtype=torch.long) for ids in encoded]

    def forward(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        ids, mask = pad(items, self.pad_id, limit=self.max_len)
        ids, mask = to_device(ids, self.device), to_device(mask, self.device)
        return self.model(input_ids=ids, attention_mask=mask.long()).logits[:, 0]
