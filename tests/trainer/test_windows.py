"""Training on windows of documents curated whole (trainer/windows.py): the student scores and
trains on one window of each drawn document, against the teacher's loss on that same window."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from corpora import TEXT, TINY, curate
from corpora import samples as shard_samples
from helpers import SEED, documents, lr, sentences, write_jsonl

from jestflow.trainer.loop import TrainConfig, train
from jestflow.trainer.online_selection import select_online
from jestflow.trainer.windows import draw_windows, step_windows
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.formats.shard_samples import TrainSample
from jestflow.transforms.models import new_model
from jestflow.transforms.models.documents import document_losses, windows_of
from jestflow.transforms.selection.jest import generator_for


@pytest.fixture(scope="module")
def curated_documents(noisy, tmp_path_factory):
    """Shards of ~600-byte documents curated whole by the noisy corpus's 64-byte teacher."""
    root = tmp_path_factory.mktemp("documents")
    pool = write_jsonl(root / "pool.jsonl", documents(80, seed=3))
    write_jsonl(root / "eval.jsonl", ({"text": " ".join(sentences(12, k))} for k in range(16)))
    curate(noisy, root / "curated", inputs=(pool,), super_batch=80)
    return root


def student(max_len: int = 64):
    torch.manual_seed(SEED)
    return new_model("lm", **{**TINY, "max_len": max_len}).eval()


def made(n: int, windows: int, width: int = 64) -> list[TrainSample]:
    text = "The quick brown fox jumps over the lazy dog. " * 20  # 900 bytes
    info = {"teacher_windows": [float(k) for k in range(windows)], "teacher_window": width}
    return [TrainSample(key=f"k{i}", text=text[i:], info=info) for i in range(n)]


def test_a_window_is_drawn_per_document_as_curation_cut_it():
    model, batch = student(), made(8, windows=14)
    drawn = draw_windows(model, batch, generator_for(SEED, "windows-0"))
    again = draw_windows(model, batch, generator_for(SEED, "windows-0"))
    assert drawn.picks == again.picks and len(set(drawn.picks)) > 1
    for sample, pick, sequence, teacher in zip(
        batch, drawn.picks, drawn.sequences, drawn.teacher.tolist(), strict=True
    ):
        expected = windows_of(list(sample.text.encode()), 64, model.bos)[pick]
        assert sequence.tolist() == expected and teacher == float(pick)


def test_raw_documents_are_read_window_by_window_too():
    """`train --data` (no teacher values): a window of the student's context of each document,
    drawn among all of its windows, so a baseline on raw data reads whole documents too."""
    model = student()
    batch = [TrainSample(key=f"k{i}", text=s.text) for i, s in enumerate(made(32, windows=1))]
    drawn = step_windows(model, batch, SEED, 0, raw=True)
    assert len(set(drawn.picks)) > 5 and max(drawn.picks) <= 14  # 900 bytes: 15 windows of 64
    for sample, pick, sequence in zip(batch, drawn.picks, drawn.sequences, strict=True):
        assert sequence.tolist() == windows_of(list(sample.text.encode()), 64, model.bos)[pick]
    assert drawn.teacher.isnan().all()
    assert step_windows(model, batch, SEED, 0) is None  # shards without windows: their start


def test_the_student_scores_the_windows_the_teacher_scored():
    model, batch = student(), made(8, windows=14)
    drawn = draw_windows(model, batch, generator_for(SEED, "windows-0"))
    chosen = select_online(model, batch, 4, windows=drawn, generator=generator_for(SEED, 0))
    own = model.sequence_nll(drawn.sequences).detach()
    expected = (own - drawn.teacher)[chosen.indices].mean()
    assert chosen.learnability == pytest.approx(float(expected), abs=1e-5)


def test_windows_wider_than_the_student_or_tokenized_otherwise_are_errors():
    with pytest.raises(JestflowError, match="more than the student's context"):
        draw_windows(student(32), made(2, windows=14), generator_for(SEED, 0))
    with pytest.raises(JestflowError, match="tokenizes text otherwise"):
        draw_windows(student(), made(2, windows=400), generator_for(SEED, 0))
    other = [
        dataclasses.replace(s, info={**s.info, "teacher_tokens": "vocab-0123456789abcdef"})
        for s in made(2, windows=14)
    ]
    with pytest.raises(JestflowError, match="tokenizes as the teacher does"):
        draw_windows(student(), other, generator_for(SEED, 0))
    mixed = [*made(2, windows=14), TrainSample(key="old", text="one loss", teacher_loss=2.0)]
    with pytest.raises(JestflowError, match="hold one teacher loss each"):
        draw_windows(student(), mixed, generator_for(SEED, 0))


def test_a_student_trains_on_documents_curated_whole(curated_documents, tmp_path):
    root = curated_documents
    shards = sorted(str(p) for p in (root / "curated" / "shards").iterdir())
    config = TrainConfig(
        shards=tuple(shards),
        task="lm",
        output=str(tmp_path / "run"),
        batch_size=8,
        super_batch_ratio=4,
        steps=6,
        lr=lr(3e-3),
        warmup_steps=1,
        eval_inputs=(str(root / "eval.jsonl"),),
        fields=TEXT,
        eval_every=3,
        seed=SEED,
        device="cpu",
        **TINY,
    )
    train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "learnability" in r]
    assert len(steps) == 6 and all(r["learnability"] is not None for r in steps)
    # held out, the run is judged on whole documents too, as its shards were
    final = load_model(str(tmp_path / "run"), task="lm", device=torch.device("cpu"))
    texts = [json.loads(line)["text"] for line in (root / "eval.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in log if "eval_loss" in r]
    assert evals[-1] == pytest.approx(document_losses(final, texts).loss.mean().item(), abs=1e-4)
    infos = [s["json"] for shard in shards for s in shard_samples(shard)]
    assert all(i["teacher_tokens"] == "bytes" for i in infos)  # the built-in teacher's
    assert infos and all(i["teacher_window"] == 64 and len(i["teacher_windows"]) > 4 for i in infos)
