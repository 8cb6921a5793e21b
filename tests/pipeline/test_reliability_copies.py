"""Reliability of the curation job on a pool with exact and near copies (dedup on, the default):
bundles that fail once and are retried, a Read that fails after closing its spill files, a
SIGKILL and its rerun, with and without the score cache, and a model shared across processes
(`large_model`, `model_copies`). Each writes the bytes of an uninterrupted run, keeps every
duplicate row, and accounts for every input once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from corpora import config_for, digest
from helpers import run_until_killed, sentences, write_jsonl

import jestflow.pipeline.dedup_step as dedup_step
import jestflow.pipeline.finish_step as finish_step
import jestflow.pipeline.graph as graph_module
import jestflow.pipeline.read_step as read_step
import jestflow.pipeline.score_step as score_step
import jestflow.pipeline.select_step as select_step
import jestflow.pipeline.write_step as write_step
from jestflow.pipeline.handlers import ScoringHandler
from jestflow.pipeline.job import run_curation
from jestflow.transforms.formats import run_folder
from jestflow.transforms.formats.manifest import read_manifest, status_counts
from jestflow.transforms.formats.score_cache import read_cache_part

FOLDERS = ("shards", "manifest", "rejected")
RETRYING = ("--runner=BundleBasedDirectRunner",)  # retries a failed bundle, in this process
PARAGRAPHS = [" ".join(sentences(6, 100 + seed)) for seed in range(30)]
INPUTS, REJECTED, KEPT = 304, 5, 280  # records; dead letters; examples left after dedup
EXACT, NEAR = 9, 10  # copies removed


def near_copy(text: str, word: str = "altered") -> str:
    """The text with one word replaced and its first full stop a comma: a near copy (its 5-gram
    shingles well above the 0.8 Jaccard threshold), not an exact one."""
    words = text.split()
    words[3] = word
    return " ".join(words).replace(".", ",", 1)


@pytest.fixture(scope="module")
def pool(noisy, tmp_path_factory):
    """Three input files, and where each copy's kept original is: {(file, position) of a copy:
    ((file, position) of the copy kept, exact or near)}.

    a.jsonl: the noisy corpus's pool (240 records, 5 dead letters). b.jsonl: 30 paragraphs and an
    exact copy of its first. c.jsonl: 10 new sentences, exact copies (other whitespace) of 8 of
    a's records, near copies of 8 paragraphs, two near copies of one more paragraph (equal to each
    other: a cluster of three)."""
    root = tmp_path_factory.mktemp("copies")
    lines = (noisy / "pool.jsonl").read_bytes().splitlines()
    (root / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    a = str(root / "a.jsonl")
    records = [json.loads(line) for line in lines[:240]]
    b = write_jsonl(
        root / "b.jsonl", [{"text": t, "kind": "original"} for t in [*PARAGRAPHS, PARAGRAPHS[0]]]
    )
    c_records = [{"text": t, "kind": "fresh"} for t in sentences(10, 77)]
    copied = [p for p, r in enumerate(records) if r["kind"] == "clean"][:8]
    c_records += [
        {"text": " " + records[p]["text"].replace(" ", "\t "), "kind": "exact"} for p in copied
    ]
    c_records += [{"text": near_copy(t), "kind": "near"} for t in PARAGRAPHS[1:9]]
    c_records += [{"text": near_copy(PARAGRAPHS[9], "other"), "kind": "near"} for _ in range(2)]
    c = write_jsonl(root / "c.jsonl", c_records)
    kept = {(1, 30): ((1, 0), "exact")}
    kept |= {(2, 10 + i): ((0, p), "exact") for i, p in enumerate(copied)}
    kept |= {(2, 18 + i): ((1, 1 + i), "near") for i in range(8)}
    kept |= {(2, 26): ((1, 9), "near"), (2, 27): ((1, 9), "near")}
    return (a, b, c), kept


def accounted(out, pool) -> dict[str, int]:
    """Asserts that every input has one manifest row and every copy its duplicate row pointing at
    the copy kept; returns the manifest's status counts."""
    urls, kept = pool
    rows = read_manifest(str(out / "manifest")).to_pylist()
    places = {(urls.index(r["source"]), r["position"]): r for r in rows}
    assert len(places) == len(rows) == INPUTS, f"{len(rows)} rows for {INPUTS} inputs"
    by_key = {r["key"]: r for r in rows}
    duplicates = {place: r for place, r in places.items() if r["status"] == "duplicate"}
    assert set(duplicates) == set(kept), "not the copies the pool holds"
    for place, row in duplicates.items():
        original, reason = kept[place]
        assert row["reason"] == reason, f"{place}: {row['reason']}, not {reason}"
        assert by_key[row["duplicate_of"]] is places[original], f"{place} keeps another copy"
        assert places[original]["status"] in ("selected", "not_selected"), place
    counts = status_counts(read_manifest(str(out / "manifest")))
    assert counts["rejected"] == REJECTED and counts["duplicate"] == EXACT + NEAR, counts
    assert counts["selected"] + counts["not_selected"] == KEPT, counts
    return counts


def pool_config(noisy, pool, out, **changes):
    return config_for(noisy, out, inputs=pool[0], **changes)


def spills_at_close(monkeypatch, listing: Path) -> None:
    """Writes the files under the run's `_temporary/` to `listing` just before the run folder is
    closed (which deletes them): the spills a run left, orphans of a failed attempt included."""

    def close(output, *args, **kwargs):
        root = Path(output) / "_temporary"
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        listing.write_text("\n".join(files) + "\n")
        return run_folder.close(output, *args, **kwargs)

    monkeypatch.setattr(finish_step, "close", close)


@pytest.fixture(scope="module")
def clean(noisy, pool, tmp_path_factory):
    """An uninterrupted run with a score cache: (output folder, stats.json, cache folder, the
    spill files it left in `_temporary/`)."""
    root = tmp_path_factory.mktemp("clean")
    config = pool_config(noisy, pool, root / "out", cache=str(root / "cache"), beam_args=RETRYING)
    with pytest.MonkeyPatch.context() as monkeypatch:
        spills_at_close(monkeypatch, root / "spills")
        stats = run_curation(config)
    assert stats["dedup"]["exact"] == EXACT and stats["dedup"]["near"] == NEAR, stats["dedup"]
    assert stats["scoring"]["teacher"] == {"scored": KEPT, "cached": 0}
    accounted(root / "out", pool)
    spills = (root / "spills").read_text().split()
    assert {"payload/file-000002-0000.arrow", "removed/copies-0000.arrow"} <= set(spills), spills
    return root / "out", stats, root / "cache", spills


def fails_once(function, markers):
    """`function`, but its first call raises after doing its work (a worker lost mid-bundle)."""
    marker = markers / function.__name__

    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        if not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError(f"injected failure after {function.__name__}")
        return result

    return wrapper


def same_run(out, clean) -> None:
    for name in FOLDERS:
        assert digest(out / name) == digest(clean[0] / name), name


def test_bundles_that_fail_once_on_a_pool_with_copies_are_retried_to_the_same_bytes(
    noisy, pool, clean, tmp_path, monkeypatch
):
    """Every step that writes — dedup's spills and clusters, the duplicates' manifest part, the
    scores and the cache, selection, the shards — fails once after its work and is retried: the
    same bytes, the same copies kept, the same cache."""
    markers = tmp_path / "markers"
    markers.mkdir()
    writes = [
        (read_step, "write_rejected"),
        (dedup_step, "link_group"),
        (dedup_step, "spill_signatures"),
        (dedup_step, "near_edges"),
        (dedup_step, "cluster_edges"),
        (score_step, "duplicate_row"),  # Cut chunks, as it spills a copy's manifest row
        (score_step, "write_duplicates"),
        (graph_module, "spill_scores"),
        (score_step, "write_cache_part"),
        (select_step, "write_not_selected"),
        (write_step, "write_shard_group"),
    ]
    for module, name in writes:
        monkeypatch.setattr(module, name, fails_once(getattr(module, name), markers))
    spills_at_close(monkeypatch, tmp_path / "spills")
    config = pool_config(
        noisy, pool, tmp_path / "out", cache=str(tmp_path / "cache"), beam_args=RETRYING
    )
    stats = run_curation(config)
    failed = sorted(p.name for p in markers.iterdir())
    assert failed == sorted(name for _, name in writes), failed
    assert (tmp_path / "spills").read_text().split() == clean[3], "other spill files"
    same_run(tmp_path / "out", clean)
    assert accounted(tmp_path / "out", pool) == clean[1]["counts"]
    assert stats["dedup"] == clean[1]["dedup"]
    (model,) = (tmp_path / "cache").iterdir()
    assert digest(model) == digest(clean[2] / model.name)


def test_a_read_that_fails_after_closing_its_spill_files_is_redone_to_the_same_bytes(
    noisy, pool, clean, tmp_path, monkeypatch
):
    """Read fails once after its payload and dedup member spills are closed (and its dead letters
    written): the retry writes them again under the same names, and nothing is lost or doubled."""
    markers = tmp_path / "markers"
    markers.mkdir()
    calls = markers / "calls"  # a file: Beam runs a pickled copy of the function

    def read_and_spill(element, settings):
        spill = read_step.read_and_spill(element, settings)
        closed = all(Path(url).is_file() for url in spill.payloads + spill.members)
        with calls.open("a") as f:
            f.write(f"{element[0]} {len(spill.payloads)} {len(spill.members)} {closed}\n")
        return spill

    monkeypatch.setattr(graph_module, "read_and_spill", fails_once(read_and_spill, markers))
    spills_at_close(monkeypatch, tmp_path / "spills")
    config = pool_config(noisy, pool, tmp_path / "out", beam_args=RETRYING)
    stats = run_curation(config)
    # the retry wrote its spills over the failed attempt's: no orphan, none missing
    assert (tmp_path / "spills").read_text().split() == clean[3], "other spill files"
    reads = [line.split() for line in calls.read_text().splitlines()]
    assert (markers / "read_and_spill").exists() and len(reads) > len(pool[0]), reads
    assert all(n != "0" for _, *ns, _ in reads for n in ns), f"a Read spilled nothing: {reads}"
    assert all(closed == "True" for *_, closed in reads), f"spills not closed: {reads}"
    same_run(tmp_path / "out", clean)
    assert accounted(tmp_path / "out", pool) == clean[1]["counts"]
    assert stats["dedup"] == clean[1]["dedup"]


@pytest.mark.parametrize(
    "setting", [{"large_model": True}, {"model_copies": 2}], ids=["large_model", "model_copies"]
)
def test_a_model_shared_across_processes_scores_the_same_bytes(
    noisy, pool, clean, tmp_path, monkeypatch, setting
):
    """`large_model` and `model_copies` reach RunInference's handler, so Beam serves the teacher
    from one worker process to both (MultiProcessShared: an address file per model copy in the
    workers' temporary folder) and they score through a proxy: the same bytes as one worker with
    a model of its own."""
    config = pool_config(noisy, pool, tmp_path / "out", workers=2, **setting)
    handler = score_step.score_with_models(config)._model_handler
    assert isinstance(handler, ScoringHandler)
    assert handler.share_model_across_processes() and handler.model_copies() == setting.get(
        "model_copies", 1
    )
    shared = tmp_path / "tmp"
    shared.mkdir()
    monkeypatch.setenv("TMPDIR", str(shared))  # the workers' tempfile.gettempdir()
    stats = run_curation(config)
    # Beam's files: `<tag><copy>.address` for each model copy, `<tag>_model_status.address`
    names = [p.name for p in shared.glob("*.address")]
    copies = sorted(
        int(m[1]) for name in names if (m := re.fullmatch(r"[0-9a-f]{32}(\d+)\.address", name))
    )
    assert copies == list(range(setting.get("model_copies", 1))), names
    same_run(tmp_path / "out", clean)
    assert stats["counts"] == clean[1]["counts"]


def curate_command(pool, noisy, out, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jestflow.cli",
        "curate",
        *pool[0],
        "-o",
        str(out),
        "--teacher",
        str(noisy / "teacher"),
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
        "--max-chars",
        "5000",  # as the tests' FieldMap: the 6000-character record is a dead letter
        *extra,
    ]


def jestflow_curate(pool, noisy, out, *extra: str) -> subprocess.CompletedProcess:
    command = curate_command(pool, noisy, out, *extra)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def reference(noisy, pool, tmp_path_factory):
    """`jestflow curate` on the pool, uninterrupted and without a cache: its output folder."""
    out = tmp_path_factory.mktemp("reference") / "out"
    jestflow_curate(pool, noisy, out)
    accounted(out, pool)
    return out


def cached_ids(cache) -> list[str]:
    """The example ids of every row the score cache holds (each part's rows)."""
    parts = sorted(cache.glob("*/part-*.parquet"))
    return [example_id for part in parts for example_id, _ in read_cache_part(str(part))]


KILLS = {
    # Read has closed the spill files of its first input file (its payloads, dedup members)
    "read": ("jestflow.pipeline.read_step:read_and_spill:1", False),
    # a first chunk scored, spilled and its outputs cached; the others not (three input files)
    "scoring": ("jestflow.pipeline.score_step:spill_scores:1", True),
    # every example scored and cached, the first shard renamed into place
    "first shard": ("jestflow.transforms.formats.shards:ShardWriter._finish:1", True),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", KILLS)
def test_a_killed_run_on_a_pool_with_copies_reruns_to_the_same_bytes(
    noisy, pool, reference, tmp_path, point
):
    """SIGKILL of the job and its workers, then the same command again: the bytes of an
    uninterrupted run, every duplicate row, every input once; with --cache the rerun scores only
    what the killed run did not cache."""
    spec, with_cache = KILLS[point]
    out, cache = tmp_path / "out", tmp_path / "cache"
    extra = ("--cache", str(cache)) if with_cache else ()
    run_until_killed(curate_command(pool, noisy, out, *extra), spec)
    assert not (out / "_SUCCESS").exists() and (out / "_STARTED").exists()
    spilled = {p.parent.name for p in (out / "_temporary").rglob("*.arrow")}
    assert {"payload", "members"} <= spilled, spilled
    shards = list((out / "shards").glob("*.tar")) if (out / "shards").exists() else []
    assert bool(shards) == (point == "first shard"), shards
    before = cached_ids(cache)
    assert len(before) == len(set(before)), "an example cached twice"
    if point == "scoring":
        assert "scored" in spilled and 0 < len(before) < KEPT, len(before)
    else:
        assert len(before) == (KEPT if point == "first shard" else 0), len(before)

    rerun = jestflow_curate(pool, noisy, out, *extra)
    assert "holds an interrupted run (no _SUCCESS): redoing it" in rerun.stdout + rerun.stderr
    assert not (out / "_temporary").exists()
    for name in FOLDERS:
        assert digest(out / name) == digest(reference / name), name
    counts = accounted(out, pool)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"] == counts == json.loads((reference / "stats.json").read_text())["counts"]
    if with_cache:  # scored: only what the killed run had not cached; nothing scored twice
        assert stats["scoring"]["teacher"] == {"scored": KEPT - len(before), "cached": len(before)}
        after = cached_ids(cache)
        assert len(after) == len(set(after)) == KEPT and set(before) <= set(after)
