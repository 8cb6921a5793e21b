"""Teacher scoring with RunInference on chunks of examples (FnApiRunner, tiny teachers)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import torch
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from helpers import sentences

from jestflow.pipeline.handlers import Chunk, ScoringHandler, scored_batch
from jestflow.transforms.formats.model_files import load_model, save_checkpoint
from jestflow.transforms.formats.score_cache import Candidate
from jestflow.transforms.models import new_model
from jestflow.transforms.models.documents import document_losses
from jestflow.transforms.models.scoring import embed_pairs
from jestflow.transforms.records import make_example

TINY = {"d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 64}


def teacher(tmp_path, task):
    torch.manual_seed(0)
    path = str(tmp_path / task)
    save_checkpoint(new_model(task, **TINY), path)
    return path


def close_to(expected: dict[str, float]):
    def check(actual):
        got = dict(actual)
        if got.keys() != expected.keys():
            raise BeamAssertException(f"scored {len(got)} examples, expected {len(expected)}")
        worst = max(abs(got[k] - expected[k]) for k in expected)
        if worst > 1e-4:
            raise BeamAssertException(f"scores differ by {worst}")

    return check


def chunks(examples, size):
    """The examples as chunks of `size`, each with no cached outputs."""
    return [
        Chunk(0, i // size, [Candidate(example=ex) for ex in examples[i : i + size]])
        for i in range(0, len(examples), size)
    ]


def check_lm_losses(path, handler, examples, size, options):
    """Scoring through RunInference gives each example the loss direct scoring gives it (whole
    documents, window by window: the default)."""
    texts = [ex.text for ex in examples]
    losses = document_losses(load_model(path), texts).loss.tolist()
    expected = dict(zip([ex.key for ex in examples], losses, strict=True))
    with TestPipeline(runner=FnApiRunner(), options=options) as p:
        pairs = (
            p
            | beam.Create(chunks(examples, size), reshuffle=False)
            | RunInference(handler)
            | beam.FlatMap(
                lambda s: zip(
                    [ex.key for ex in s.examples],
                    [out.loss for out in s.outputs["teacher"]],
                    strict=True,
                )
            )
        )
        assert_that(pairs, close_to(expected))


def test_lm_teacher_losses_match_direct_scoring(tmp_path):
    path = teacher(tmp_path, "lm")
    examples = [
        make_example(layout="text", text=t, position=i) for i, t in enumerate(sentences(50, 0))
    ]
    for workers in (1, 2):
        options = PipelineOptions(
            direct_num_workers=workers, direct_running_mode="multi_processing"
        )
        check_lm_losses(
            path, ScoringHandler({"teacher": path}, task="lm", device="cpu"), examples, 16, options
        )


def test_contrastive_teacher_outputs_embeddings_and_loss_shares(tmp_path):
    path = teacher(tmp_path, "contrastive")
    examples = [
        make_example(layout="text_pair", text=t, pair="def f(): # " + t, position=i)
        for i, t in enumerate(sentences(40, 1))
    ]

    def check(chunk):
        assert chunk.outputs.keys() == {"teacher"}
        scored = scored_batch(0, chunk.examples, chunk.outputs["teacher"], task="contrastive")
        n = len(scored.examples)
        assert scored.embeddings.shape == (n, 2, 128)  # [n, (left, right), embed_dim]
        assert scored.scale == 10.0 and scored.bias == -10.0
        model = load_model(path)
        emb = embed_pairs(
            model, [e.text for e in scored.examples], [e.pair for e in scored.examples]
        )
        dense = emb.losses().sum().item()
        assert abs(float(scored.loss.sum()) - dense) < 1e-3 * max(1.0, dense)
        assert np.allclose(scored.embeddings[:, 0], emb.left.numpy(), atol=1e-5)
        return [n]

    options = PipelineOptions(direct_num_workers=1)
    with TestPipeline(runner=FnApiRunner(), options=options) as p:
        sizes = (
            p
            | beam.Create(chunks(examples, 16), reshuffle=False)
            | RunInference(ScoringHandler({"teacher": path}, task="contrastive", device="cpu"))
            | beam.FlatMap(check)
        )
        assert_that(sizes, equal_to([16, 16, 8]))


def test_student_is_scored_beside_the_teacher(tmp_path):
    path = teacher(tmp_path, "lm")
    torch.manual_seed(1)
    other = new_model("lm", **TINY).eval()
    save_checkpoint(other, str(tmp_path / "student"))
    examples = [
        make_example(layout="text", text=t, position=i) for i, t in enumerate(sentences(20, 2))
    ]

    def check(chunk):
        texts = [ex.text for ex in chunk.examples]
        losses = {role: [out.loss for out in outs] for role, outs in chunk.outputs.items()}
        teacher = document_losses(load_model(path), texts).loss.numpy()
        assert np.allclose(losses["teacher"], teacher, atol=1e-6)
        assert np.allclose(losses["student"], document_losses(other, texts).loss.numpy(), atol=1e-5)
        assert not np.allclose(losses["student"], losses["teacher"])
        return [len(texts)]

    models = {"teacher": path, "student": str(tmp_path / "student")}
    handler = ScoringHandler(models, task="lm", device="cpu")
    with TestPipeline(runner=FnApiRunner(), options=PipelineOptions(direct_num_workers=1)) as p:
        sizes = (
            p
            | beam.Create(chunks(examples, 8), reshuffle=False)
            | RunInference(handler)
            | beam.FlatMap(check)
        )
        assert_that(sizes, equal_to([8, 8, 4]))


def test_a_model_shared_across_processes_scores_the_same(tmp_path):
    """`large_model` / `model_copies`: Beam serves the model from one process through a proxy."""
    path = teacher(tmp_path, "lm")
    examples = [
        make_example(layout="text", text=t, position=i) for i, t in enumerate(sentences(20, 3))
    ]
    handler = ScoringHandler({"teacher": path}, task="lm", device="cpu", model_copies=1)
    check_lm_losses(path, handler, examples, 8, PipelineOptions(direct_num_workers=1))
