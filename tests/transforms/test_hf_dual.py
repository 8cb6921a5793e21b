"""Hugging Face image–text dual encoders: a tiny CLIP, SigLIP and ViT + BERT dual encoder, each
built offline from a config (random weights, safetensors) with its tokenizer and image processor."""

from __future__ import annotations

import io
import json
import math
import shutil
import tarfile
from pathlib import Path

import pytest
import tiny_hf
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import lr, write_jsonl
from tiny_hf import EOS, MAX_TEXT, TOWER, VISION, save, text_config, tiny_clip

from jestflow.cli import main
from jestflow.trainer.calibrate import CalibrateConfig, calibrate
from jestflow.trainer.core import evaluate, load_examples
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import checkpoint_task, fingerprint, load_model
from jestflow.transforms.models.hf import HFTextEncoder
from jestflow.transforms.models.hf_dual import HFDualEncoder
from jestflow.transforms.models.losses import as_float
from jestflow.transforms.models.scoring import embed_pairs, pair_inputs, pair_loss_shares
from jestflow.transforms.records import FieldMap, make_example

transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

COLORS = {
    "red": (220, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 220),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "yellow": (230, 220, 30),
}
WORDS = ["a", "an", "the", "small", "big", "square", "on", "photo", "of", *COLORS]
CAPTIONS = [
    "red",
    "a small green square",
    "a photo of a big blue square on a white photo",
    " ".join(["a yellow square"] * 12),  # longer than the text tower: truncated
]


pytestmark = pytest.mark.usefixtures("hf_offline")


def picture(color, background=(128, 128, 128), size: int = 40) -> bytes:
    """A PNG of a coloured square on a background; 40 px, so the processors resize it to 32."""
    img = Image.new("RGB", (size, size), background)
    img.paste(tuple(color), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


IMAGES = [
    picture(COLORS["red"]),
    picture(COLORS["green"], COLORS["white"]),
    picture(COLORS["blue"], COLORS["black"]),
    picture(COLORS["yellow"]),
]


def bpe_tokenizer(template: str):
    """A byte-level BPE tokenizer trained on the captions' words."""
    return tiny_hf.bpe_tokenizer(template, [" ".join(WORDS), *CAPTIONS])


def bert_tokenizer(directory: Path):
    """A word-level BERT tokenizer (transformers 5 takes the vocabulary as `vocab`)."""
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab=str(vocab), model_max_length=MAX_TEXT)
    assert tokenizer.unk_token_id not in tokenizer("a small green square")["input_ids"]
    return tokenizer


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tiny_clip(tmp_path_factory.mktemp("clip"), [" ".join(WORDS), *CAPTIONS])


SIGLIP_SCALE, SIGLIP_BIAS = 7.0, -3.0


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    tokenizer = bpe_tokenizer(f"$A {EOS}")  # SigLIP's captions end in EOS, padded after it
    config = transformers.SiglipConfig(text_config=text_config(tokenizer), vision_config=VISION)
    torch.manual_seed(1)
    model = transformers.SiglipModel(config)
    with torch.no_grad():  # as a trained SigLIP: its own t and β
        model.logit_scale.fill_(math.log(SIGLIP_SCALE))
        model.logit_bias.fill_(SIGLIP_BIAS)
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    return save(tmp_path_factory.mktemp("siglip"), model, tokenizer, processor)


@pytest.fixture(scope="module")
def vit_bert_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("vit-bert")
    tokenizer = bert_tokenizer(directory)
    text = transformers.BertConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_TEXT, **TOWER
    )
    config = transformers.VisionTextDualEncoderConfig.from_vision_text_configs(
        transformers.ViTConfig(**VISION), text, projection_dim=16
    )
    torch.manual_seed(2)
    model = transformers.VisionTextDualEncoderModel(config=config)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    return save(directory, model, tokenizer, processor)


DUALS = ["clip_dir", "siglip_dir", "vit_bert_dir"]


def reference_embeddings(directory: Path, captions, images) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hugging Face model's own normalised text and image features, one caption at a time
    (unpadded), or padded to full length without a mask for SigLIP, as its documentation does."""
    raw = transformers.AutoModel.from_pretrained(directory, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    processor = transformers.AutoImageProcessor.from_pretrained(
        directory, local_files_only=True, backend="pil"
    )
    with torch.no_grad():
        if raw.config.model_type == "siglip":
            ids = tokenizer(
                captions,
                padding="max_length",
                max_length=MAX_TEXT,
                truncation=True,
                return_tensors="pt",
            )["input_ids"]
            text = raw.get_text_features(input_ids=ids).pooler_output
        else:
            text = torch.cat(
                [
                    raw.get_text_features(
                        **tokenizer(c, truncation=True, max_length=MAX_TEXT, return_tensors="pt")
                    ).pooler_output
                    for c in captions
                ]
            )
        rgb = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
        pixels = processor(images=rgb, return_tensors="pt")["pixel_values"]
        image = raw.get_image_features(pixel_values=pixels).pooler_output
    return F.normalize(text, dim=-1), F.normalize(image, dim=-1)


@pytest.mark.parametrize("name", DUALS)
def test_embeddings_are_the_models_own_normalised_features(name, request):
    directory = request.getfixturevalue(name)
    model = load_model(str(directory), task="contrastive")
    assert isinstance(model, HFDualEncoder)
    assert (model.architecture, model.task, model.right_kind) == (
        "hf_dual_encoder",
        "contrastive",
        "image",
    )
    pixels = model.prepare_right(IMAGES)
    assert [tuple(p.shape) for p in pixels] == [(3, 32, 32)] * len(IMAGES)  # resized 40 → 32
    lengths = {len(ids) for ids in model.prepare_left(CAPTIONS)}
    assert max(lengths) == MAX_TEXT  # the long caption is truncated to the positions
    assert (len(lengths) == 1) == (name == "siglip_dir")  # SigLIP: all padded to full length
    emb = embed_pairs(model, CAPTIONS, IMAGES)
    width = 32 if name == "siglip_dir" else 16  # SigLIP's heads keep the width; else projection
    assert emb.left.shape == emb.right.shape == (len(CAPTIONS), width)
    norms = torch.cat([emb.left, emb.right]).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    text, image = reference_embeddings(directory, CAPTIONS, IMAGES)
    torch.testing.assert_close(emb.left, text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.right, image, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        one_by_one = torch.cat([model.embed_left([ids]) for ids in model.prepare_left(CAPTIONS)])
    torch.testing.assert_close(emb.left, one_by_one, atol=1e-5, rtol=1e-5)  # padding changes none


def test_scale_and_bias_come_from_the_model_or_jestflow_json(clip_dir, siglip_dir, tmp_path):
    siglip = load_model(str(siglip_dir), task="contrastive")
    assert as_float(siglip.scale) == pytest.approx(SIGLIP_SCALE)  # exp(logit_scale)
    assert as_float(siglip.bias) == pytest.approx(SIGLIP_BIAS)  # logit_bias
    assert {"log_scale", "logit_bias"} <= {n for n, _ in siglip.named_parameters()}
    clip = load_model(str(clip_dir), task="contrastive")
    expected = math.exp(transformers.CLIPConfig().logit_scale_init_value)
    assert as_float(clip.scale) == pytest.approx(expected)
    assert as_float(clip.bias) == -10.0  # CLIP has no bias
    shutil.copytree(siglip_dir, tmp_path / "siglip")
    (tmp_path / "siglip" / "jestflow.json").write_text(json.dumps({"scale": 5, "bias": -2}))
    model = load_model(str(tmp_path / "siglip"), task="contrastive")
    assert (as_float(model.scale), as_float(model.bias)) == pytest.approx((5.0, -2.0))
    emb = embed_pairs(model, CAPTIONS[:2], IMAGES[:2])
    assert (emb.scale, emb.bias) == pytest.approx((5.0, -2.0))
    expected_losses = F.softplus(-(5.0 * (emb.left * emb.right).sum(-1) - 2.0))
    torch.testing.assert_close(emb.diagonal_losses(), expected_losses)


def test_the_pair_loss_runs_on_image_text_examples_and_trains_scale_and_bias(vit_bert_dir):
    examples = [
        make_example(layout="image_text", text=c, image=i, position=n)
        for n, (c, i) in enumerate(zip(CAPTIONS, IMAGES, strict=True))
    ]
    model = load_model(str(vit_bert_dir), task="contrastive")
    emb = embed_pairs(model, *pair_inputs(examples))
    shares = pair_loss_shares(emb)
    assert shares.shape == (len(examples),) and torch.isfinite(shares).all()
    torch.testing.assert_close(shares.sum(), emb.losses().sum(), rtol=1e-5, atol=1e-5)
    model.train()  # fine-tuning: the loss reaches t, β and both towers
    left, right = pair_inputs(examples)
    loss = model.pair_embeddings(
        model.embed_left(model.prepare_left(left)), model.embed_right(model.prepare_right(right))
    ).batch_loss()
    loss.backward()
    assert model.log_scale.grad.abs() > 0 and model.logit_bias.grad.abs() > 0
    towers = (model.model.text_projection.weight, model.model.visual_projection.weight)
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in towers)


def test_loading_routes_each_hugging_face_model_to_its_adapter(clip_dir, tmp_path):
    assert isinstance(load_model(str(clip_dir)), HFDualEncoder)  # no task given: contrastive
    assert checkpoint_task(str(clip_dir)) == "contrastive"
    with pytest.raises(JestflowError, match=r"dual encoder.*not a lm model"):
        load_model(str(clip_dir), task="lm")
    bert = tmp_path / "bert"  # a text-only encoder stays a text-pair encoder
    bert.mkdir()
    tokenizer = bert_tokenizer(bert)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_TEXT, **TOWER
    )
    transformers.BertModel(config).save_pretrained(bert, safe_serialization=True)
    tokenizer.save_pretrained(bert)
    assert type(load_model(str(bert))) is HFTextEncoder and checkpoint_task(str(bert)) is None


def test_pickle_only_folder_is_refused(siglip_dir, tmp_path):
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json"):
        shutil.copy(siglip_dir / name, tmp_path / name)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(JestflowError, match="pickle"):
        load_model(str(tmp_path), task="contrastive")


def test_fingerprint_covers_the_image_processor(clip_dir, tmp_path):
    shutil.copytree(clip_dir, tmp_path / "m")
    before = fingerprint(str(tmp_path / "m"))
    processor = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    processor["image_mean"] = [0.5, 0.5, 0.5]  # other pixels, other scores: another teacher
    (tmp_path / "m" / "preprocessor_config.json").write_text(json.dumps(processor))
    assert fingerprint(str(tmp_path / "m")) != before


def test_fingerprint_covers_every_tokenizer_file(vit_bert_dir, tmp_path):
    """A BERT tokenizer's vocabulary and its config (lower-casing, maximum length) decide the
    tokens as much as tokenizer.json does: a change of any one is another teacher."""
    before = fingerprint(str(vit_bert_dir))
    for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json"):
        copy = tmp_path / name
        shutil.copytree(vit_bert_dir, copy)
        with (copy / name).open("a") as f:
            f.write("\n")  # the same content for json.loads, another file
        assert fingerprint(str(copy)) != before, name


def write_pairs_tar(path: Path, n: int, seed: int) -> str:
    """A WebDataset tar of `png` + `txt` members: squares of random colours, captions naming the
    colour."""
    g = torch.Generator().manual_seed(seed)
    names = list(COLORS)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(n):
            color, background = (names[k] for k in torch.randint(len(names), (2,), generator=g))
            shade = torch.randint(-10, 10, (1,), generator=g).item()
            rgb = [min(255, max(0, c + shade)) for c in COLORS[color]]
            members = {
                "png": picture(rgb, COLORS[background]),
                "txt": f"a {color} square on {background}".encode(),
            }
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


IMAGE_PAIRS = FieldMap(image="png", caption="txt")


def test_calibrate_fits_a_dual_encoder_on_image_text_tars(siglip_dir, tmp_path):
    reference = write_pairs_tar(tmp_path / "pairs.tar", 80, seed=0)
    config = CalibrateConfig(
        model=str(siglip_dir),
        inputs=(reference,),
        fields=IMAGE_PAIRS,
        output=str(tmp_path / "teacher"),
        batch_size=16,
        device="cpu",
    )
    result = calibrate(config)
    assert (result.fit_examples, result.eval_examples) == (64, 16)
    assert result.after[0] < result.before[0]  # the held-out loss improves
    assert result.after[1] == result.before[1]  # recall@1 does not depend on (t, β)
    assert (result.scale, result.bias) != pytest.approx((SIGLIP_SCALE, SIGLIP_BIAS))
    saved = json.loads((tmp_path / "teacher" / "jestflow.json").read_text())
    assert saved == {"scale": result.scale, "bias": result.bias, "loss": "sigmoid"}
    teacher = load_model(str(tmp_path / "teacher"), task="contrastive")
    assert isinstance(teacher, HFDualEncoder)
    assert (as_float(teacher.scale), as_float(teacher.bias)) == pytest.approx(
        (result.scale, result.bias)
    )
    assert (
        fingerprint(str(tmp_path / "teacher")) == result.fingerprint != fingerprint(str(siglip_dir))
    )


def test_the_calibrate_command_reads_image_fields(clip_dir, tmp_path):
    reference = write_pairs_tar(tmp_path / "pairs.tar", 48, seed=1)
    args = [
        "teacher",
        "calibrate",
        str(clip_dir),
        "--reference",
        reference,
        "--image-field",
        "png",
        "--caption-field",
        "txt",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "teacher")])
    assert result.exit_code == 0, result.output
    assert "fitted on 38 pairs" in result.output  # 48 less a held-out fifth
    assert json.loads((tmp_path / "teacher" / "jestflow.json").read_text()).keys() == {
        "scale",
        "bias",
        "loss",
    }
    text_pairs = write_jsonl(tmp_path / "text.jsonl", [{"q": "a", "d": "b"}] * 20)
    refused = CliRunner().invoke(
        main,
        [
            *args[:3],
            "--reference",
            text_pairs,
            "--query-field",
            "q",
            "--doc-field",
            "d",
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert refused.exit_code == 1 and "pairs text with image" in refused.output


@pytest.mark.parametrize("name", ["siglip_dir", "vit_bert_dir"])
def test_teacher_train_init_fine_tunes_a_dual_encoder(name, request, tmp_path, learned):
    directory = request.getfixturevalue(name)
    pairs = write_pairs_tar(tmp_path / "pairs.tar", 32, seed=2)
    out = tmp_path / "teacher"
    config = TeacherConfig(
        inputs=(pairs,),
        eval_inputs=(pairs,),
        output=str(out),
        task="contrastive",
        fields=IMAGE_PAIRS,
        steps=20,
        batch_size=8,
        lr=lr(1e-3),
        warmup_steps=1,
        device="cpu",
        init=str(directory),
    )
    before = evaluate(load_model(str(directory), task="contrastive"), *load_pairs(pairs), 8)
    result = train_teacher(config)
    teacher = load_model(str(out), task="contrastive")
    assert isinstance(teacher, HFDualEncoder) and result.fingerprint == fingerprint(str(out))
    gain = before[0] - result.eval_loss  # it learned the 32 pairs it was trained on
    learned.expect("held-out loss gained over the initial weights", gain, ">", 0.5)
    assert evaluate(teacher, *load_pairs(pairs), 8)[0] == pytest.approx(result.eval_loss, abs=1e-4)
    saved = json.loads((out / "jestflow.json").read_text())
    assert (saved["scale"], saved["bias"]) == pytest.approx(
        (as_float(teacher.scale), as_float(teacher.bias))
    )
    assert saved["meta"]["init"] == str(directory) and saved["meta"]["lr"] == config.lr
    assert (out / "preprocessor_config.json").exists() and (out / "model.safetensors").exists()


def load_pairs(tar: str):
    examples, _ = load_examples([tar], IMAGE_PAIRS)
    return (examples,)


def test_init_brings_its_own_architecture(siglip_dir, tmp_path):
    with pytest.raises(JestflowError, match="brings its own architecture; drop d_model"):
        TeacherConfig(
            inputs=("x",),
            output=str(tmp_path),
            task="contrastive",
            fields=IMAGE_PAIRS,
            init=str(siglip_dir),
            d_model=64,
        )
    text_pairs = write_jsonl(tmp_path / "text.jsonl", [{"q": "a b", "d": "c d"}] * 8)
    config = TeacherConfig(
        inputs=(text_pairs,),
        output=str(tmp_path / "t"),
        task="contrastive",
        fields=FieldMap(query="q", doc="d"),
        init=str(siglip_dir),
        steps=1,
        batch_size=4,
        device="cpu",
    )
    with pytest.raises(JestflowError, match="pairs text with image, but the data pairs it with"):
        train_teacher(config)
