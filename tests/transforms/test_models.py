"""Built-in models, checkpoints and scoring."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import SEED, lr, png

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import fingerprint, load_model, save_checkpoint
from jestflow.transforms.models.layers import pad, padded_length
from jestflow.transforms.models.lm import CausalLM, LMConfig
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.models.scoring import (
    embed_pairs,
    length_batches,
    lm_losses,
    pair_loss_shares,
)
from jestflow.transforms.models.towers import TowerConfig, TwoTower, TwoTowerConfig

TEXTS = ["def f(x): return x", "a", "Return the sum of a and b." * 5, "héllo wörld", "zz"]


def tiny_lm(seed=0, max_len=64) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(LMConfig(max_len=max_len, d_model=32, n_layer=2, n_head=2)).eval()


def tiny_towers(right="text", seed=0) -> TwoTower:
    torch.manual_seed(seed)
    tower = {
        "d_model": 32,
        "n_layer": 1,
        "n_head": 2,
        "max_len": 32,
        "image_size": 16,
        "patch_size": 8,
    }
    config = TwoTowerConfig(
        left=TowerConfig(**tower), right=TowerConfig(**tower, kind=right), embed_dim=16
    )
    return TwoTower(config).eval()


def test_lm_is_causal():
    model = tiny_lm()
    a = torch.tensor([[256, 10, 20, 30, 40]])
    b = torch.tensor([[256, 10, 20, 99, 41]])
    with torch.no_grad():
        torch.testing.assert_close(model(a)[:, :3], model(b)[:, :3])
        assert not torch.allclose(model(a)[:, 3:], model(b)[:, 3:])


def test_lm_losses_mask_padding_and_keep_input_order():
    model = tiny_lm()
    batched = lm_losses(model, TEXTS, max_tokens=10_000)
    with torch.no_grad():
        one_by_one = torch.cat([model.sequence_nll(model.tokenize([t])) for t in TEXTS])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-5)
    assert lm_losses(model, TEXTS, max_tokens=30).tolist() == pytest.approx(
        batched.tolist(), abs=1e-5
    )
    fresh = batched.mean().item()
    assert (
        abs(fresh - torch.log(torch.tensor(257.0)).item()) < 0.5
    )  # untrained ≈ uniform over bytes


def test_lm_truncates_to_max_len():
    model = tiny_lm(max_len=16)
    long_text = "abcdefghij" * 10
    assert len(model.tokenize([long_text])[0]) == 17  # BOS + 16 bytes
    short = lm_losses(model, [long_text], max_len=4)
    assert short.item() == pytest.approx(lm_losses(model, ["abcd"]).item(), abs=1e-6)


def test_length_batches_cover_every_index_within_budget():
    lengths = [5, 1, 9, 9, 3, 7, 2, 8, 8, 8]
    batches = length_batches(lengths, max_tokens=20, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(10))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 20


def test_checkpoint_round_trip_and_fingerprint(tmp_path):
    model = tiny_lm()
    fp = save_checkpoint(model, str(tmp_path / "a"), meta={"steps": 3})
    assert len(fp) == 16 and fp == fingerprint(str(tmp_path / "a"))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_model(str(tmp_path / "a"), task="lm")
    torch.testing.assert_close(lm_losses(loaded, TEXTS), lm_losses(model, TEXTS))
    assert save_checkpoint(model, str(tmp_path / "b"), meta={"steps": 3}) == fp  # same bytes
    assert save_checkpoint(tiny_lm(seed=1), str(tmp_path / "c"), meta={"steps": 3}) != fp


def test_two_tower_checkpoint_round_trip_in_memory_filesystem():
    model = tiny_towers()
    save_checkpoint(model, "memory://ckpt/towers")
    loaded = load_model("memory://ckpt/towers", task="contrastive")
    a = embed_pairs(model, ["q one", "q two"], ["doc one", "doc two"])
    b = embed_pairs(loaded, ["q one", "q two"], ["doc one", "doc two"])
    torch.testing.assert_close(a.left, b.left)
    assert (a.scale, a.bias) == (b.scale, b.bias) == pytest.approx((10.0, -10.0))


def test_checkpoint_errors(tmp_path):
    save_checkpoint(tiny_lm(), str(tmp_path / "lm"))
    with pytest.raises(JestflowError, match=r"holds a lm model .* not a contrastive model"):
        load_model(str(tmp_path / "lm"), task="contrastive")
    with pytest.raises(JestflowError, match="not found"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps({"format": "jestflow"}))
    (tmp_path / "pickled" / "model.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(JestflowError, match=r"refusing to load .*model.pt: pickle"):
        load_model(str(tmp_path / "pickled"))
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    config["config"]["d_model"] = 64
    (tmp_path / "lm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(JestflowError, match="weights do not match its config"):
        load_model(str(tmp_path / "lm"))
    (tmp_path / "lm" / "config.json").write_text("{not json")
    with pytest.raises(JestflowError, match="not valid JSON"):
        load_model(str(tmp_path / "lm"))


def test_text_tower_embeddings_do_not_depend_on_batch_padding():
    model = tiny_towers()
    queries = ["short", "a much longer query about sorting lists", "mid length"]
    docs = ["sorted(x)", "def sort(items): return sorted(items)", "x"]
    together = embed_pairs(model, queries, docs)
    alone = [embed_pairs(model, [q], [d]) for q, d in zip(queries, docs, strict=True)]
    torch.testing.assert_close(
        together.left, torch.cat([e.left for e in alone]), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        together.right, torch.cat([e.right for e in alone]), atol=1e-5, rtol=1e-4
    )
    assert torch.allclose(together.left.norm(dim=1), torch.ones(3))


def test_scores_do_not_depend_on_the_number_of_threads():
    """Local curation workers score with cores ÷ workers threads each; the same outputs with any
    worker count rest on torch giving every example the same bits whatever the thread count."""
    texts = [t * (1 + i % 7) for i, t in enumerate(TEXTS * 40)]
    lm, towers = tiny_lm(), tiny_towers()
    images = [png((i, 255 - i, 3 * i % 256), size=20) for i in range(0, 200, 10)]
    image_towers = tiny_towers(right="image")
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            pairs = embed_pairs(towers, texts, texts[::-1])
            pictures = embed_pairs(image_towers, texts[: len(images)], images)
            results.append([lm_losses(lm, texts), pairs.left, pairs.right, pictures.right])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


def test_image_tower_embeds_decoded_images():
    model = tiny_towers(right="image")
    emb = embed_pairs(model, ["red", "blue"], [png((255, 0, 0)), png((0, 0, 255))])
    assert emb.right.shape == (2, 16)
    assert not torch.allclose(emb.right[0], emb.right[1])


def test_pair_loss_shares_sum_to_the_batch_loss():
    gen = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(37, 8, generator=gen), dim=1)
    v = torch.nn.functional.normalize(torch.randn(37, 8, generator=gen), dim=1)
    emb = PairEmbeddings(u, v, 5.0, -3.0)
    dense = emb.losses()
    expected = dense.diagonal() + 0.5 * (dense.sum(1) + dense.sum(0) - 2 * dense.diagonal())
    shares = pair_loss_shares(emb, block_size=8)
    torch.testing.assert_close(shares, expected, rtol=1e-5, atol=1e-5)
    assert shares.sum().item() == pytest.approx(dense.sum().item(), rel=1e-5)


def test_training_steps_lower_the_lm_loss(learned):
    model = tiny_lm(seed=SEED).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr(3e-3))
    batch = model.tokenize(TEXTS)
    before = model.sequence_nll(batch).mean().item()
    for _ in range(30):
        loss = model.sequence_nll(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    drop = before - model.sequence_nll(batch).mean().item()
    learned.expect("training loss below the untrained model's", drop, ">", 1.0)


def test_ngram_ids_see_words_not_case_or_spacing():
    from jestflow.transforms.models.ngram_tower import ngram_ids

    ids = ngram_ids("Hello  World", 512, range(2, 6), 8192)
    assert ids.tolist() == ngram_ids("hello world", 512, range(2, 6), 8192).tolist()
    form = " hello world "  # 13 characters: 12 + 11 + 10 + 9 n-grams of 2…5
    assert len(ids) == sum(len(form) - n + 1 for n in range(2, 6)) == 42
    assert ids.min() >= 0 and ids.max() < 8192
    assert len(set(ids.tolist())) > 35  # few collisions in 8,192 buckets
    assert (
        ngram_ids("", 512, range(2, 6), 8192).tolist()
        == ngram_ids("   ", 512, range(2, 6), 8192).tolist()
    )
    assert len(ngram_ids("x" * 1000, 100, range(2, 3), 8192)) == 101  # 100 characters + 2 spaces


def test_default_towers_and_checkpoints_saved_before_them():
    from jestflow.transforms.models import new_model

    model = new_model("contrastive", right_kind="image")
    assert (model.config.left.encoder, model.config.right.encoder) == ("ngram", "conv")
    assert model.config.left.d_model == 256 and model.config.left.max_len == 512
    legacy = {
        "kind": "text",
        "d_model": 32,
        "n_layer": 1,
        "n_head": 2,
        "max_len": 32,
        "image_size": 16,
        "patch_size": 8,
    }
    config = TwoTowerConfig(left=legacy, right={**legacy, "kind": "image"}, embed_dim=16)
    assert (config.left.encoder, config.right.encoder) == ("transformer", "vit")
    old = TwoTower(config)
    assert type(old.left).__name__ == "TextTower" and type(old.right).__name__ == "ImageTower"
    with pytest.raises(JestflowError, match="unknown image encoder 'ngram'"):
        new_model("contrastive", right_kind="image", image_encoder="ngram")


@pytest.mark.parametrize("encoders", [("ngram", "conv"), ("transformer", "vit")])
def test_each_tower_round_trips_through_a_checkpoint(tmp_path, encoders):
    from jestflow.transforms.models import new_model

    torch.manual_seed(0)
    text, image = encoders
    model = new_model(
        "contrastive",
        right_kind="image",
        text_encoder=text,
        image_encoder=image,
        d_model=32,
        n_layer=1,
        n_head=2,
    ).eval()
    save_checkpoint(model, str(tmp_path / "m"))
    loaded = load_model(str(tmp_path / "m"), task="contrastive")
    captions, images = ["a red square", "two blue circles"], [png((200, 0, 0)), png((0, 0, 200))]
    first, second = embed_pairs(model, captions, images), embed_pairs(loaded, captions, images)
    torch.testing.assert_close(first.left, second.left)
    torch.testing.assert_close(first.right, second.right)
    assert loaded.config.left.encoder == text and loaded.config.right.encoder == image


def test_batches_are_padded_to_a_few_lengths_and_score_as_unpadded():
    """Every batch length from 1 to 1,024 pads to one of a few lengths (the allocator then reuses
    its blocks), at most a quarter (or 7) longer, never beyond the model's limit; the padding
    changes no score."""
    widths = {padded_length(t) for t in range(1, 1025)}
    assert len(widths) <= 36
    assert all(t <= padded_length(t) <= max(t + 7, 1.25 * t) for t in range(1, 1025))
    assert padded_length(257, limit=257) == 257 and padded_length(200, limit=210) == 210
    ids, mask = pad([torch.tensor([5, 6, 7]), torch.tensor([1] * 9)], pad_id=0)
    assert ids.shape == (2, 16) and mask.sum(1).tolist() == [3, 9]
    assert ids[0, :3].tolist() == [5, 6, 7] and not ids[0, 3:].any()
    torch.manual_seed(SEED)
    model = CausalLM(LMConfig(d_model=32, n_layer=1, n_head=2, max_len=64))
    texts = ["a short one", "a somewhat longer text than the first, " * 3]
    together = lm_losses(model, texts)
    alone = torch.cat([lm_losses(model, [t]) for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)


def test_palette_images_with_transparency_decode_quietly_to_the_same_pixels():
    """Icon sets: palette PNGs whose transparency is a bytes table. PIL warns when they go to RGB
    directly; through RGBA they give the same colours, without the warning."""
    import io
    import warnings

    from PIL import Image

    from jestflow.transforms.models.images import decode_image

    icon = Image.new("P", (16, 16))
    icon.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] * 64)
    icon.putdata([(x + y) % 4 for y in range(16) for x in range(16)])
    buffer = io.BytesIO()
    icon.save(buffer, format="PNG", transparency=bytes([0, 128, 255, 255]))
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "P" and isinstance(img.info["transparency"], bytes)
        with warnings.catch_warnings(record=True) as direct:
            warnings.simplefilter("always")
            expected = img.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)
    assert any("Palette images with Transparency" in str(w.message) for w in direct)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        pixels = decode_image(data, 8)
    want = torch.frombuffer(bytearray(expected.tobytes()), dtype=torch.uint8)
    assert torch.equal(pixels, want.view(8, 8, 3).permute(2, 0, 1).float().div(127.5).sub(1.0))
