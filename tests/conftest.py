"""Shared fixtures: small corpora made in the test, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpora import make_images, make_noisy, make_pairs
from helpers import Learned, sentences, write_jsonl

# Modules whose asserted results hang on the last bits of torch's CPU kernels: they train, or
# compare a model's scores across batchings, processes, workers or runs. `make test-kernels`
# reruns them (and every `learned` test) under other kernels than this machine picks.
KERNEL_MODULES = {
    "pipeline/test_classifier_job.py",
    "pipeline/test_contrastive.py",
    "pipeline/test_curate.py",
    "pipeline/test_handlers.py",
    "pipeline/test_reliability.py",
    "pipeline/test_reliability_copies.py",
    "pipeline/test_softmax_job.py",
    "trainer/test_calibrate.py",
    "trainer/test_cheap_scoring.py",
    "trainer/test_fit.py",
    "trainer/test_fit_classifier.py",
    "trainer/test_loop.py",
    "trainer/test_online_selection.py",
    "trainer/test_weighted.py",
    "trainer/test_windows.py",
    "transforms/test_documents.py",
    "transforms/test_hf.py",
    "transforms/test_hf_dual.py",
    "transforms/test_models.py",
    "transforms/test_scoring_batches.py",
}
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items):
    """Tests asserting what a trained model reaches (they use `learned`) are marked `learned`;
    they and the tests of KERNEL_MODULES are marked `kernels`."""
    for item in items:
        learned = "learned" in getattr(item, "fixturenames", ())
        if learned:
            item.add_marker(pytest.mark.learned)
        module = Path(item.path).relative_to(TESTS).as_posix()
        if learned or module in KERNEL_MODULES:
            item.add_marker(pytest.mark.kernels)


@pytest.fixture(scope="module")
def hf_offline():
    """Hugging Face libraries never reach for the hub (a module's tests: `usefixtures`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture
def learned(request) -> Learned:
    return Learned(request.node.nodeid)


@pytest.fixture
def text_corpus(tmp_path) -> tuple[str, str]:
    """(reference, eval) JSONL files of clean sentences."""
    train = write_jsonl(tmp_path / "ref.jsonl", ({"text": t} for t in sentences(300, 0)))
    held_out = write_jsonl(tmp_path / "eval.jsonl", ({"text": t} for t in sentences(60, 1)))
    return train, held_out


@pytest.fixture
def pair_corpus(tmp_path) -> tuple[str, str]:
    """(reference, eval) JSONL files of query/doc pairs: the doc spells out the query's words."""

    def pairs(n, seed):
        for s in sentences(n, seed):
            words = s.rstrip(".").split()[2:]
            yield {"query": " ".join(words), "doc": "def f():  # " + "_".join(reversed(words))}

    return (
        write_jsonl(tmp_path / "pairs_ref.jsonl", pairs(400, 2)),
        write_jsonl(tmp_path / "pairs_eval.jsonl", pairs(64, 3)),
    )


# The pipeline tests' corpora and tiny models (tests/corpora.py), made once per session.
@pytest.fixture(scope="session")
def noisy(tmp_path_factory):
    return make_noisy(tmp_path_factory.mktemp("noisy"))


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    return make_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(autouse=True)
def _empty_memory_filesystem():
    """fsspec's memory:// filesystem is one per process: each test leaves it empty, so no test
    reads what another wrote there."""
    yield
    from fsspec.implementations.memory import MemoryFileSystem

    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]
