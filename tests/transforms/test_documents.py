"""Whole documents under a causal LM, window by window (transforms/models/documents.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import SEED, documents

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.models import new_model
from jestflow.transforms.models.documents import document_losses, windows_of
from jestflow.transforms.models.scoring import lm_losses

TEXT = "The quick brown fox jumps over the lazy dog. " * 9  # 405 bytes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(SEED)
    return new_model("lm", d_model=32, n_layer=1, n_head=2, max_len=64).eval()


@pytest.mark.parametrize("bos", [256, None])
@pytest.mark.parametrize("length", [1, 63, 64, 65, 200])
def test_every_token_is_predicted_once(bos, length):
    ids = list(range(length))
    windows = windows_of(ids, 64, bos)
    predicted = [token for window in windows for token in window[1:]]
    assert predicted == (ids if bos is not None else ids[1:])
    assert all(len(w) <= 65 for w in windows)
    # each later window opens with the token before it
    assert [w[0] for w in windows[1:]] == [ids[start - 1] for start in range(64, length, 64)]


def test_a_short_document_scores_as_the_whole_text(model):
    texts = ["a short line", "another, a little longer line of text"]
    windowed = document_losses(model, texts)
    torch.testing.assert_close(windowed.loss, lm_losses(model, texts))
    assert [len(w) for w in windowed.windows] == [1, 1]
    assert windowed.tokens.tolist() == [len(t.encode()) for t in texts]
    assert not windowed.capped.any()


def test_a_long_document_is_the_token_weighted_mean_of_its_windows(model):
    out = document_losses(model, [TEXT], window=100)  # the model's context (64) bounds it
    ids = list(TEXT.encode())
    windows = windows_of(ids, 64, model.bos)
    assert len(out.windows[0]) == len(windows) == 7  # 6 × 64 + 21 bytes
    expected = model.sequence_nll([torch.tensor(w) for w in windows]).detach()
    torch.testing.assert_close(out.windows[0], expected)
    weights = torch.tensor([len(w) - 1 for w in windows], dtype=torch.float32)
    torch.testing.assert_close(out.loss[0], (expected * weights).sum() / weights.sum())
    assert out.tokens.tolist() == [405]


def test_the_cap_bounds_the_tokens_scored_and_is_counted(model):
    out = document_losses(model, [TEXT, "short"], max_tokens=100, window=32)
    assert out.tokens.tolist() == [100, 5]
    assert out.capped.tolist() == [True, False]
    assert [len(w) for w in out.windows] == [4, 1]  # 32 + 32 + 32 + 4
    exact = document_losses(model, [TEXT], max_tokens=405)
    assert not exact.capped.any()


def test_batches_do_not_change_the_losses(model):
    texts = [TEXT[: 50 * k] for k in range(1, 9)]
    one = document_losses(model, texts, batch_tokens=65, max_batch=1)
    many = document_losses(model, texts, batch_tokens=100_000)
    torch.testing.assert_close(one.loss, many.loss, rtol=1e-5, atol=1e-5)


def test_bad_options_are_errors(model):
    with pytest.raises(JestflowError, match="score-max-tokens"):
        document_losses(model, [TEXT], max_tokens=0)
    with pytest.raises(JestflowError, match="score-window"):
        document_losses(model, [TEXT], window=0)


def test_a_bad_body_behind_a_clean_start_is_seen(noisy, learned):
    """The noisy corpus's teacher reads 64 bytes at a time: scored on its start (the model's
    window) a document with a bad body looks clean; scored window by window it does not."""
    teacher = load_model(str(noisy / "teacher"), task="lm", device=torch.device("cpu"))
    records = documents(40, seed=1)
    clean = [r["text"] for r in records if r["kind"] == "clean"]
    bad = [r["text"] for r in records if r["kind"] == "bad body"]
    gap = document_losses(teacher, bad).loss.mean() - document_losses(teacher, clean).loss.mean()
    learned.expect("windowed loss, bad body − clean", float(gap), ">", 1.0)
    start_gap = lm_losses(teacher, bad).mean() - lm_losses(teacher, clean).mean()
    assert abs(float(start_gap)) < 0.5  # the start alone cannot tell them apart


def test_documents_are_scored_in_groups_with_the_same_result(model, monkeypatch):
    """A chunk's documents are tokenized and windowed a group at a time (memory): the losses do
    not depend on where the groups end."""
    import jestflow.transforms.models.documents as documents

    texts = [TEXT[: 40 * k] for k in range(1, 11)]
    whole = document_losses(model, texts)
    monkeypatch.setattr(documents, "GROUP_TOKENS", 100)
    assert len(documents._groups(texts, 8192)) > 3
    grouped = document_losses(model, texts)
    torch.testing.assert_close(grouped.loss, whole.loss, rtol=1e-5, atol=1e-5)
    assert grouped.tokens.tolist() == whole.tokens.tolist()
    assert [len(w) for w in grouped.windows] == [len(w) for w in whole.windows]
