"""Tiny Hugging Face models built offline from configs (random weights, safetensors), with their
tokenizers and image processors: what the adapter tests and the docs' quick start load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TEXT = 16  # the text towers' positions
TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}
VISION = TOWER | {"image_size": 32, "patch_size": 8}


def bpe_tokenizer(template: str, texts: Sequence[str], max_length: int = MAX_TEXT):
    """A byte-level BPE tokenizer trained on `texts`; `template` adds its specials."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(BOS, 0), (EOS, 1)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=max_length,
    )


def text_config(tokenizer) -> dict:
    """A text tower of TOWER's size for `tokenizer` (BOS 0, EOS 1, padded with EOS)."""
    return TOWER | {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": MAX_TEXT,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }


def save(directory: Path, model, tokenizer, processor) -> Path:
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def tiny_clip(directory: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A CLIP of one 32-wide layer per tower, 32-px images, its tokenizer trained on `texts`."""
    import torch
    import transformers

    tokenizer = bpe_tokenizer(f"{BOS} $A {EOS}", texts)
    text = text_config(tokenizer)
    config = transformers.CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16)
    torch.manual_seed(seed)
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return save(directory, transformers.CLIPModel(config), tokenizer, processor)
