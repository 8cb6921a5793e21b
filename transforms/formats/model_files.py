"""Model checkpoints: a directory with `config.json` + `model.safetensors`, never pickles.

A jestflow checkpoint's `config.json` names the architecture and its config; a Hugging Face
directory (its `config.json` has a `model_type`) loads through the adapters in `models/hf.py` and
`models/hf_dual.py` (image–text dual encoders).
The fingerprint hashes the config and the weights, so it changes whenever the model does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import tempfile
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ..errors import JestflowError
from ..models.classifier import ClassifierConfig, NgramClassifier
from ..models.lm import CausalLM, LMConfig
from ..models.losses import as_float
from ..models.towers import TwoTower, TwoTowerConfig
from ..paths import filesystem, replacing, writable_directory
from ..vocabulary import MODEL_TASKS, check_choice

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
FORMAT = "jestflow"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    CausalLM.architecture: (CausalLM, LMConfig),
    TwoTower.architecture: (TwoTower, TwoTowerConfig),
    NgramClassifier.architecture: (NgramClassifier, ClassifierConfig),
}
# Beside config.json and the weights, what changes a model's outputs: its tokenizer's files (any
# of them decides how text becomes tokens: vocabularies, merges, sentencepiece models, and the
# tokenizer config's lower-casing and maximum length), its image processor and (t, β).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
EXTRA_FILES = (*TOKENIZER_FILES, "preprocessor_config.json", "jestflow.json")


def build_model(architecture: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised built-in model from its architecture name and config dict."""
    if architecture not in ARCHITECTURES:
        raise JestflowError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    model_cls, config_cls = ARCHITECTURES[architecture]
    try:
        return model_cls(config_cls(**config))
    except TypeError as e:
        raise JestflowError(f"bad {architecture} config: {e}") from e


def save_checkpoint(model: nn.Module, directory: str, *, meta: dict[str, Any] | None = None) -> str:
    """Write a built-in model as config.json + model.safetensors, or a Hugging Face adapter's
    model the Hugging Face way (`_save_huggingface`); returns its fingerprint."""
    if hasattr(model, "save_pretrained"):
        return _save_huggingface(model, directory, meta or {})
    if getattr(model, "architecture", None) not in ARCHITECTURES:
        raise JestflowError(f"cannot save a {type(model).__name__} as a jestflow checkpoint")
    config = {
        "format": FORMAT,
        "architecture": model.architecture,
        "task": model.task,
        "config": dataclasses.asdict(model.config),
        "meta": meta or {},
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fs, root = writable_directory(directory)
    _write(fs, posixpath.join(root, WEIGHTS), save_safetensors(tensors))
    _write(fs, posixpath.join(root, CONFIG), json.dumps(config, indent=2, sort_keys=True).encode())
    return fingerprint(directory)


def _save_huggingface(model: nn.Module, directory: str, meta: dict[str, Any]) -> str:
    """A fine-tuned Hugging Face model: its files as `save_pretrained` writes them (weights in
    safetensors), and `jestflow.json` with a two-tower model's (t, β) and `meta`."""
    with tempfile.TemporaryDirectory(prefix="jestflow-hf-save-") as local:
        model.save_pretrained(local)
        extra = {"meta": meta}
        if model.task == "contrastive":
            extra |= {"scale": as_float(model.scale), "bias": as_float(model.bias)}
            extra |= {"loss": model.pair_loss}
        with open(posixpath.join(local, "jestflow.json"), "w") as f:
            json.dump(extra, f, indent=2, sort_keys=True)
        copy_tree(local, directory)
    return fingerprint(directory)


def _write(fs, path: str, data: bytes) -> None:
    with replacing(fs, path) as f:
        f.write(data)


def read_config(directory: str) -> dict[str, Any]:
    """The checkpoint's config.json, with a clear error for what is not a checkpoint."""
    fs, root = filesystem(directory)
    if not fs.isdir(root):
        raise JestflowError(f"checkpoint directory not found: {directory}")
    path = posixpath.join(root, CONFIG)
    if not fs.exists(path):
        raise JestflowError(f"{directory} is not a checkpoint: it has no {CONFIG}")
    try:
        with fs.open(path, "rb") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise JestflowError(f"{directory}/{CONFIG} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise JestflowError(f"{directory}/{CONFIG} must hold a JSON object")
    return config


def is_huggingface(config: dict[str, Any]) -> bool:
    return config.get("format") != FORMAT and "model_type" in config


def is_causal_lm(config: dict[str, Any]) -> bool:
    """Whether a Hugging Face config is a causal language model's (by its architectures)."""
    architectures = config.get("architectures") or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


def tokens_of(directory: str) -> str:
    """How an lm checkpoint's model cuts text into tokens, without loading its weights: `bytes`
    for the built-in LM, a digest of a Hugging Face model's vocabulary (`hf.tokenizer_id`)."""
    if not is_huggingface(read_config(directory)):
        return "bytes"
    from ..models.hf import load_tokenizer, tokenizer_id

    return tokenizer_id(load_tokenizer(directory))


def checkpoint_task(directory: str) -> str | None:
    """`lm`, `contrastive` or `classifier` for a jestflow checkpoint; `contrastive` for a Hugging
    Face image–text dual encoder, `classifier` for a sequence classifier; None for other Hugging
    Face directories."""
    config = read_config(directory)
    if is_huggingface(config):
        from ..models.hf_classifier import is_sequence_classifier
        from ..models.hf_dual import is_dual_encoder

        if is_sequence_classifier(config):
            return "classifier"
        return "contrastive" if is_dual_encoder(config) else None
    return config.get("task")


def weight_files(directory: str) -> list[str]:
    """The safetensors files of a checkpoint; refuses directories that only hold pickles."""
    fs, root = filesystem(directory)
    names = sorted(posixpath.basename(p) for p in fs.ls(root, detail=False))
    weights = [n for n in names if n.endswith(".safetensors")]
    if not weights:
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise JestflowError(
                f"refusing to load {directory}/{pickles[0]}: pickle checkpoints can run code; "
                "convert the weights to safetensors (model.safetensors)"
            )
        raise JestflowError(f"{directory} has no {WEIGHTS}")
    return weights


def model_files(directory: str) -> list[str]:
    """The files that make the model (and its fingerprint): config.json, the safetensors files,
    and the tokenizer's files, preprocessor_config.json and jestflow.json where present."""
    fs, root = filesystem(directory)
    names = [CONFIG, *weight_files(directory)]
    return names + [n for n in EXTRA_FILES if fs.exists(posixpath.join(root, n))]


def copy_model(source: str, target: str) -> str:
    """Copy a checkpoint's model files byte for byte (the fingerprint stays); returns it."""
    _copy_files(source, target, model_files(source))
    return fingerprint(target)


def copy_tree(source: str, target: str) -> None:
    """Copy every file of a directory (a Hugging Face model's: its tokenizer files too), through
    fsspec, into `target`."""
    fs, root = filesystem(source)
    root = root.rstrip("/")
    _copy_files(source, target, [posixpath.relpath(p, root) for p in sorted(fs.find(root))])


def _copy_files(source: str, target: str, names: list[str]) -> None:
    """Copy the files `names` (relative paths) of `source` into `target`, each written whole."""
    fs, root = filesystem(source)
    target_fs, target_root = writable_directory(target)
    for name in names:
        destination = posixpath.join(target_root, name)
        target_fs.makedirs(posixpath.dirname(destination), exist_ok=True)
        with fs.open(posixpath.join(root, name), "rb") as f:
            _write(target_fs, destination, f.read())


def fingerprint(directory: str) -> str:
    """A 16-hex-digit hash of the model files (`model_files`)."""
    fs, root = filesystem(directory)
    names = model_files(directory)
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        with fs.open(posixpath.join(root, name), "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_model(
    directory: str, *, task: str | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a jestflow or Hugging Face checkpoint for `task` (checked), in eval mode."""
    if task is not None:
        check_choice("task", task, MODEL_TASKS)
    config = read_config(directory)
    weight_files(directory)
    if is_huggingface(config):
        model = _load_huggingface(directory, config, task)
    else:
        model = _load_builtin(directory, config, task)
    return model.to(device).eval()


def _load_builtin(directory: str, config: dict[str, Any], task: str | None) -> nn.Module:
    if config.get("format") != FORMAT:
        raise JestflowError(f"{directory}/{CONFIG} is neither a jestflow nor a Hugging Face config")
    if task is not None and config.get("task") != task:
        raise JestflowError(
            f"{directory} holds a {config.get('task')} model ({config.get('architecture')}), "
            f"not a {task} model"
        )
    model = build_model(config.get("architecture", ""), config.get("config", {}))
    fs, root = filesystem(directory)
    with fs.open(posixpath.join(root, WEIGHTS), "rb") as f:
        tensors = load_safetensors(f.read())
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise JestflowError(f"{directory}: weights do not match its config: {first}") from e
    return model


def _load_huggingface(directory: str, config: dict[str, Any], task: str | None) -> nn.Module:
    """An image–text dual encoder (CLIP, SigLIP, VisionTextDualEncoder) as `HFDualEncoder`, a
    causal LM as `HFCausalLM`, a sequence classifier (or any encoder, for a `classifier` task:
    its head is new) as `HFClassifier`, any other model as `HFTextEncoder` (a text-pair
    encoder)."""
    from ..models.hf import HFCausalLM, HFTextEncoder
    from ..models.hf_classifier import HFClassifier, is_sequence_classifier
    from ..models.hf_dual import HFDualEncoder, is_dual_encoder

    is_lm = is_causal_lm(config)
    dual = is_dual_encoder(config)
    if is_sequence_classifier(config) and task not in (None, "classifier"):
        raise JestflowError(
            f"{directory} holds a Hugging Face sequence classifier, a classifier model, "
            f"not a {task} model"
        )
    if task == "classifier" or is_sequence_classifier(config):
        if is_lm or dual:
            raise JestflowError(
                f"{directory} holds a {'causal LM' if is_lm else 'dual encoder'} "
                f"({config.get('model_type')}); a classifier starts from a text encoder"
            )
        return HFClassifier(_local_copy(directory))
    task = task or ("lm" if is_lm else "contrastive")
    if dual and task != "contrastive":
        raise JestflowError(
            f"{directory} holds an image–text dual encoder ({config.get('model_type')}), "
            f"a contrastive model, not a {task} model"
        )
    if is_lm and task == "contrastive":
        raise JestflowError(
            f"{directory} holds a Hugging Face causal language model "
            f"({config.get('model_type')}), an lm model; a contrastive model is a text encoder "
            "(e.g. MiniLM) or an image–text dual encoder (CLIP, SigLIP)"
        )
    local = _local_copy(directory)
    if task == "lm":
        return HFCausalLM(local)
    encoder = HFDualEncoder if dual else HFTextEncoder
    extra = _jestflow_json(directory)
    model = encoder(local, **{k: float(v) for k, v in extra.items() if k in ("scale", "bias")})
    model.pair_loss = extra.get("loss", "sigmoid")
    return model


def _jestflow_json(directory: str) -> dict[str, Any]:
    """The `jestflow.json` beside a Hugging Face model: (t, β), its pair loss ({} without one)."""
    fs, root = filesystem(directory)
    if not fs.exists(posixpath.join(root, "jestflow.json")):
        return {}
    with fs.open(posixpath.join(root, "jestflow.json"), "rb") as f:
        return json.load(f)


def pair_loss_of(directory: str) -> str:
    """The pair loss a contrastive checkpoint trained on, without loading its weights:
    `sigmoid` (also for checkpoints that predate the choice) or `softmax`."""
    config = read_config(directory)
    if is_huggingface(config):
        return _jestflow_json(directory).get("loss", "sigmoid")
    return config.get("config", {}).get("loss", "sigmoid")


def _local_copy(directory: str) -> str:
    """Hugging Face loads from local paths: copy a remote directory to a temporary one."""
    fs, root = filesystem(directory)
    if "file" in fs.protocol or "local" in fs.protocol:
        return root
    target = tempfile.mkdtemp(prefix="jestflow-hf-")
    fs.get(root.rstrip("/") + "/", target, recursive=True)
    return target
