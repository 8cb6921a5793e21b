"""Reliability of the curation job: a SIGKILL in the middle of writing shards, bundles that fail
once and are retried, the same bytes with 1, 2 and 4 workers and run to run, and outputs that
cannot leave their folder."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from corpora import config_for, curate, digest, pairs_config
from helpers import run_until_killed, sentences, write_jsonl

import jestflow.pipeline.dedup_step as dedup_step
import jestflow.pipeline.graph as graph_module
import jestflow.pipeline.read_step as read_step
import jestflow.pipeline.score_step as score_step
import jestflow.pipeline.select_step as select_step
import jestflow.pipeline.write_step as write_step
from jestflow.pipeline.job import run_curation
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.manifest import read_manifest, status_counts
from jestflow.transforms.formats.score_cache import model_folder
from jestflow.transforms.formats.shards import ShardWriter
from jestflow.transforms.paths import child

FOLDERS = ("shards", "manifest", "rejected")


def curate_command(pool: str, teacher: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jestflow.cli",
        "curate",
        pool,
        "-o",
        str(out),
        "--teacher",
        teacher,
        "--task",
        "lm",
        "--keep",
        "0.25",
        "--super-batch",
        "40",
        "--shard-max-count",
        "6",
        "--workers",
        "2",
        "--device",
        "cpu",
        "--seed",
        "3",
        *extra,
    ]


def jestflow_curate(pool: str, teacher: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        curate_command(pool, teacher, out, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def visible_shards(out: Path) -> list[Path]:
    folder = out / "shards"
    return (
        sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []
    )


@pytest.fixture(scope="module")
def big_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    rng = random.Random(5)
    texts = sentences(1500, 21) + [
        "".join(rng.choice("qzxj#@!0") for _ in range(60)) for _ in range(1500)
    ]
    rng.shuffle(texts)
    pool = write_jsonl(root / "pool.jsonl", ({"text": t} for t in texts))
    with open(pool, "ab") as f:
        f.write(b'{"broken\n{"text": ""}\n')  # two dead letters
    return pool


KILL_POINTS = {
    # as soon as a worker has renamed its first shard into place
    "first shard": "jestflow.transforms.formats.shards:ShardWriter._finish:1",
    # mid-way: the input read and spilled, its first chunk scored and spilled, nothing selected
    "scoring": "jestflow.pipeline.score_step:spill_scores:1",
}


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_run_shows_no_partial_shard_and_its_rerun_matches_an_uninterrupted_one(
    noisy, big_pool, tmp_path, point
):
    teacher = str(noisy / "teacher")
    reference = jestflow_curate(big_pool, teacher, tmp_path / "reference", "--quiet")
    assert reference.returncode == 0, reference.stdout
    expected = len(visible_shards(tmp_path / "reference"))
    assert not (tmp_path / "reference" / "_temporary").exists()  # spills gone after _SUCCESS
    out = tmp_path / "killed"
    # The job and its two workers die (SIGKILL) at the kill point.
    run_until_killed(curate_command(big_pool, teacher, out, "--quiet"), KILL_POINTS[point])
    assert not (out / "_SUCCESS").exists() and (out / "_STARTED").exists()
    assert any((out / "_temporary").rglob("*.arrow"))  # the spills of the killed run are there
    seen = visible_shards(out)
    assert 0 < len(seen) < expected if point == "first shard" else not seen
    for shard in seen:  # every visible shard is whole: a tar with a json for every sample
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            assert members and all(tar.extractfile(m).read() is not None for m in members)
            jsons = [
                json.loads(tar.extractfile(m).read()) for m in members if m.name.endswith(".json")
            ]
            assert len(jsons) == len(members) // 2 and all("score" in j for j in jsons)

    rerun = jestflow_curate(big_pool, teacher, out)  # no --overwrite: it was interrupted
    assert rerun.returncode == 0, rerun.stdout
    assert "holds an interrupted run (no _SUCCESS): redoing it" in rerun.stdout
    assert not (out / "_temporary").exists()
    for name in FOLDERS:
        assert digest(out / name) == digest(tmp_path / "reference" / name), name
    counts = status_counts(read_manifest(str(out / "manifest")))
    written = 0
    for shard in visible_shards(out):
        with tarfile.open(shard) as tar:
            written += sum(m.name.endswith(".json") for m in tar.getmembers())
    assert counts["inputs"] == 3002 and counts["rejected"] == 2 and counts["selected"] == written


def fails_once(function, markers: Path):
    """`function`, but its first call raises after doing its work (a worker lost mid-bundle)."""
    marker = markers / function.__name__

    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        if not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError(f"injected failure after {function.__name__}")
        return result

    return wrapper


def test_bundles_that_fail_once_are_retried_without_duplicates(noisy, tmp_path, monkeypatch):
    """Beam re-runs a failed bundle; every write the job makes names its files from the data,
    so the second attempt replaces the first one's files instead of adding to them."""
    runner = {"beam_args": ("--runner=BundleBasedDirectRunner",)}  # retries bundles, in-process
    clean, _ = curate(noisy, tmp_path / "clean", cache=str(tmp_path / "cache-clean"), **runner)
    markers = tmp_path / "markers"
    markers.mkdir()
    writes = [
        (write_step, "write_shard_group"),
        (graph_module, "spill_scores"),
        (select_step, "write_not_selected"),
        (read_step, "write_rejected"),
        (score_step, "write_cache_part"),
        (dedup_step, "link_group"),
        (dedup_step, "spill_signatures"),
        (dedup_step, "near_edges"),
        (dedup_step, "cluster_edges"),
    ]
    for module, name in writes:
        monkeypatch.setattr(module, name, fails_once(getattr(module, name), markers))
    retried, stats = curate(noisy, tmp_path / "retried", cache=str(tmp_path / "cache"), **runner)
    assert sorted(p.name for p in markers.iterdir()) == sorted(name for _, name in writes)
    # each failed once, then succeeded
    for name in FOLDERS:
        assert digest(retried / name) == digest(clean / name), name
    (model,) = (tmp_path / "cache").iterdir()
    assert digest(model) == digest(tmp_path / "cache-clean" / model.name)
    places = [
        (r["source"], r["position"]) for r in read_manifest(str(retried / "manifest")).to_pylist()
    ]
    assert len(places) == len(set(places)) == stats["counts"]["inputs"] == 246  # each input once


@pytest.mark.parametrize(
    ("corpus", "make_config"), [("noisy", config_for), ("pairs", pairs_config)]
)
def test_the_same_bytes_with_1_2_and_4_workers_and_run_to_run(
    corpus, make_config, request, tmp_path
):
    """Whatever the worker count (so the threads each worker scores with): shards (with the
    teacher's embeddings as npy, for pairs), manifest, dead letters and stats are the same."""
    root = request.getfixturevalue(corpus)
    runs = {}
    for name, workers in (("one", 1), ("two", 2), ("four", 4), ("two-again", 2)):
        out = tmp_path / name
        stats = run_curation(make_config(root, out, workers=workers, tiers=2, shard_max_count=6))
        runs[name] = {f: digest(out / f) for f in FOLDERS if (out / f).exists()}
        runs[name]["stats"] = {
            k: stats[k] for k in ("counts", "rejected", "scores", "tiers", "shards")
        }
    assert len(runs["one"]["shards"]) > 5
    for name in ("two", "four", "two-again"):
        assert runs[name] == runs["one"], name


def test_output_paths_cannot_leave_their_folder(tmp_path):
    from jestflow.pipeline.sinks import write_manifest_part

    for name in ("..", "../x", "/etc/passwd", "a/../../b", "", "x\0"):
        with pytest.raises(JestflowError, match="unsafe path component"):
            child(str(tmp_path), "manifest", name)
    with pytest.raises(JestflowError, match="unsafe path component"):
        write_manifest_part([], str(tmp_path / "out"), "../../escaped")
    with pytest.raises(JestflowError, match="unsafe path component"):
        model_folder(str(tmp_path / "cache"), "../elsewhere")
    with pytest.raises(JestflowError, match="bad shard prefix"):
        ShardWriter(str(tmp_path / "shards"), prefix="../up")
    with ShardWriter(str(tmp_path / "shards")) as writer:
        for sample in (
            {"__key__": "../../etc/x", "txt": b"a"},
            {"__key__": "/abs", "txt": b"a"},
            {"__key__": "k", "../txt": b"a"},
            {"__key__": "k", "TXT/x": b"a"},
        ):
            with pytest.raises(JestflowError, match="unsafe"):
                writer.write(sample)
        writer.write({"__key__": "k", "txt": b"fine", "doc.txt": b"also fine"})
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as tar:
        assert sorted(tar.getnames()) == ["k.doc.txt", "k.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_no_configuration_is_evaluated_as_code(tmp_path):
    """Checkpoints and options are data: no eval/exec/pickle anywhere in the package, torch.load
    only with weights_only, Hugging Face never runs a model folder's code, and an architecture
    name in a config is looked up, not imported."""
    root = Path(graph_module.__file__).parents[1]
    sources = [
        p
        for folder in ("transforms", "pipeline", "trainer", "cli", "demo", "deploy")
        for p in (root / folder).rglob("*.py")
    ]
    assert len(sources) > 30
    for path in sources:
        text = path.read_text()
        for banned in (
            "eval(",
            "exec(",
            "pickle.load",
            "yaml.load(",
            "trust_remote_code=True",
            "allow_pickle=True",
            "__import__(",
            "importlib.import_module(",
        ):
            assert banned not in text.replace(".eval()", ""), f"{banned} in {path}"
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
    from jestflow.transforms.formats.model_files import load_model

    (tmp_path / "evil").mkdir()
    config = {
        "format": "jestflow",
        "task": "lm",
        "architecture": "__import__('os').system",
        "config": {},
    }
    (tmp_path / "evil" / "config.json").write_text(json.dumps(config))
    (tmp_path / "evil" / "model.safetensors").write_bytes(b"")
    with pytest.raises(JestflowError, match="unknown architecture"):
        load_model(str(tmp_path / "evil"))
