"""Promises the README makes about the curation job's outputs, each checked on a real (small) run:
only summaries cross Beam (How the job streams), an interrupted run's score-cache parts are
reused (Score cache), `--shard-max-bytes` splits a shard group's files (Output: Shards), ranks
count within each tier of a shard group (Output: the manifest's rank), and `__key__` is unique per
occurrence (Output: A sample), even for exact copies curated with `--dedup none`."""

from __future__ import annotations

import sys
import tarfile
from collections import Counter

import pyarrow.parquet as pq
from apache_beam.runners.portability.fn_api_runner import execution
from corpora import config_for, curate, samples
from helpers import kept_by_budget, run_until_killed, sentences, write_jsonl

from jestflow.pipeline.job import run_curation
from jestflow.transforms.dedup.copies import DedupConfig
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import fingerprint
from jestflow.transforms.models.documents import DEFAULT_SCORE_MAX_TOKENS
from jestflow.transforms.selection.offline import SelectionConfig

# Where FnApiRunner keeps what crosses from one fused stage to the next (a grouping step's
# input, a side input, a stage's output): encoded elements, held in the runner's memory.
BUFFERS = (execution.ListBuffer, execution.GroupingBuffer, execution.WindowGroupingBuffer)


def crossing_bytes(monkeypatch) -> Counter:
    """Count the encoded bytes every FnApiRunner buffer receives from now on, by buffer kind."""
    crossed: Counter = Counter()
    for kind in BUFFERS:

        def append(self, data, original=kind.append, name=kind.__name__):
            crossed[name] += len(data)
            return original(self, data)

        monkeypatch.setattr(kind, "append", append)
    return crossed


def test_only_summaries_cross_beam_whatever_the_payload_size(noisy, tmp_path, monkeypatch):
    """The same pool with each text 10× longer: the payloads grow by ~10×, what crosses Beam's
    stages (what the local runner holds in memory) does not grow with them."""
    texts = sentences(80, 31)
    crossed, pool_bytes = {}, {}
    for times in (1, 10):
        pool = write_jsonl(
            tmp_path / f"x{times}.jsonl", ({"text": " ".join([t] * times)} for t in texts)
        )
        pool_bytes[times] = sum(len(t.encode()) for t in texts) * times
        counter = crossing_bytes(monkeypatch)
        out, stats = curate(noisy, tmp_path / f"out{times}", inputs=(pool,), super_batch=40)
        monkeypatch.undo()
        kept = kept_by_budget(out, 0.25)  # 2 super-batches of about 40
        assert stats["counts"]["inputs"] == 80 and stats["counts"]["selected"] == kept
        shards = sum(len(samples(s)) for s in (out / "shards").iterdir())
        assert shards == kept  # the payloads did go through the job, into the shards
        crossed[times] = sum(counter.values())
    assert crossed[1] > 0, "no element crossed a FnApiRunner buffer: the probe saw nothing"
    grown = crossed[10] - crossed[1]
    assert grown < 0.1 * (pool_bytes[10] - pool_bytes[1]), (
        f"what crosses Beam grew by {grown} bytes ({crossed[1]} → {crossed[10]}) when the "
        f"payloads grew by {pool_bytes[10] - pool_bytes[1]}: examples travel through Beam"
    )


def cache_folder(cache, teacher: str):
    """The cache folder of an lm teacher's losses on whole documents (the default)."""
    return cache / f"{fingerprint(teacher)}-doc{DEFAULT_SCORE_MAX_TOKENS}"


def test_cache_parts_written_before_an_interruption_are_reused(noisy, tmp_path):
    """A run killed after its first scoring chunk wrote its cache part; the run redone scores
    only the other chunks: the part written before the kill serves it, untouched."""
    inputs = [
        write_jsonl(tmp_path / f"pool-{i}.jsonl", ({"text": t} for t in sentences(40, 50 + i)))
        for i in range(3)
    ]  # an input file is at least one scoring unit: three chunks
    out, cache, teacher = tmp_path / "out", tmp_path / "cache", str(noisy / "teacher")
    command = [sys.executable, "-m", "jestflow.cli", "curate", *inputs, "-o", str(out)]
    command += ["--teacher", teacher, "--task", "lm", "--keep", "0.25", "--super-batch", "40"]
    command += ["--workers", "1", "--device", "cpu", "--seed", "1", "--cache", str(cache)]
    run_until_killed([*command, "--quiet"], "jestflow.pipeline.score_step:spill_scores:1")
    assert not (out / "_SUCCESS").exists()
    folder = cache_folder(cache, teacher)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert len(before) == 1, f"one chunk's part before the kill, not {sorted(before)}"
    (part,) = before
    cached_ids = set(pq.read_table(folder / part).column("id").to_pylist())
    assert len(cached_ids) == 40

    config = config_for(
        noisy,
        out,
        inputs=tuple(inputs),
        cache=str(cache),
        selection=SelectionConfig(keep=0.25, seed=1),
    )
    stats = run_curation(config)  # redoes the interrupted run (no --overwrite needed)
    assert stats["scoring"]["teacher"] == {"scored": 80, "cached": 40}, stats["scoring"]
    assert (folder / part).stat().st_mtime_ns == before[part][0], "the part was rewritten"
    assert (folder / part).read_bytes() == before[part][1]
    assert len(list(folder.iterdir())) == 3  # the two chunks scored now wrote theirs
    rows = read_manifest(str(out / "manifest")).to_pylist()
    assert len(rows) == 120 and {r["id"] for r in rows} >= cached_ids


def payload_sizes(shard) -> list[tuple[str, int]]:
    """(key, payload bytes: its members' sizes) of each sample in a shard, in order."""
    sizes: dict[str, int] = {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            key = member.name.split(".", 1)[0]
            sizes[key] = sizes.get(key, 0) + member.size
    return list(sizes.items())


def test_shard_max_bytes_splits_a_group_into_more_files_of_the_same_samples(noisy, tmp_path):
    """With --shard-max-bytes a shard group's ranking goes on into more files, each at most the
    limit of payload bytes (a sample larger than it alone in its file), the same samples in the
    same order as without the limit."""
    plain, plain_stats = curate(noisy, tmp_path / "plain", shard_max_count=100)
    limit = 1500
    split, split_stats = curate(
        noisy, tmp_path / "split", shard_max_count=100, shard_max_bytes=limit
    )

    def by_group(out):
        groups: dict[str, list] = {}
        for shard in sorted((out / "shards").iterdir()):
            groups.setdefault(shard.name.rsplit("-", 1)[0], []).append(shard)
        return groups

    plain_groups, split_groups = by_group(plain), by_group(split)
    assert sorted(plain_groups) == sorted(split_groups)  # the limit splits within a group
    assert all(len(files) == 1 for files in plain_groups.values())
    assert sum(map(len, split_groups.values())) > 2 * len(split_groups), "the limit split nothing"
    for group, files in split_groups.items():
        for shard in files:
            sizes = payload_sizes(shard)
            total = sum(size for _, size in sizes)
            assert total <= limit or len(sizes) == 1, f"{shard.name}: {total} > {limit} bytes"
        (only,) = plain_groups[group]
        ordered = [s for shard in files for s in samples(shard)]
        assert [s["__key__"] for s in ordered] == [s["__key__"] for s in samples(only)], group
        assert [s["json"] for s in ordered] == [s["json"] for s in samples(only)], group
    assert split_stats["shards"]["files"] == sum(map(len, split_groups.values()))
    assert split_stats["counts"] == plain_stats["counts"]
    where = {}
    for files in split_groups.values():
        for shard in files:
            where |= {key: shard.name for key, _ in payload_sizes(shard)}
    rows = [r for r in read_manifest(str(split / "manifest")).to_pylist() if r["shard"]]
    assert {r["key"]: r["shard"] for r in rows} == where  # the manifest names each sample's file


def test_ranks_count_within_each_tier_of_a_shard_group(noisy, tmp_path):
    """rank is the place among the shard group's examples of its tier (0 = best); a selected
    score with m of n selected scores strictly above it is in tier ⌊K·m/n⌋ (tier_thresholds' rule,
    counted here from the manifest); stats, report, manifest and samples agree."""
    tiers = 3
    out, stats = curate(noisy, tmp_path / "tiers", tiers=tiers, shard_max_count=4)
    rows = [
        r for r in read_manifest(str(out / "manifest")).to_pylist() if r["status"] == "selected"
    ]
    n = kept_by_budget(out, 0.25)
    assert len(rows) == n
    grids = [round(r["score"] / 1e-4) for r in rows]
    expected = [min(tiers - 1, tiers * sum(h > g for h in grids) // n) for g in grids]
    assert [r["tier"] for r in rows] == expected, "tiers are not the global score quantiles"
    counts = Counter(r["tier"] for r in rows)
    assert stats["tiers"]["counts"] == [counts[t] for t in range(tiers)]
    report = (out / "report.html").read_text()
    for t in range(tiers):
        assert f"<td>{t}</td><td>{counts[t]}</td>" in report, f"tier {t} in report.html"

    places: dict[tuple[str, int], list[dict]] = {}
    for r in rows:  # group and tier from the shard's name: tier-TT-shard-GGGGGG-NNNNNN.tar
        assert r["shard"].startswith(f"tier-{r['tier']:02d}-shard-"), r["shard"]
        places.setdefault((r["shard"].split("-")[3], r["tier"]), []).append(r)
    groups = {group for group, _ in places}
    assert len(groups) > 1 and len(places) > len(groups)  # several groups, several tiers each
    for (group, tier), members in places.items():
        members.sort(key=lambda r: r["rank"])
        assert [r["rank"] for r in members] == list(range(len(members))), (group, tier)
        scores = [r["score"] for r in members]
        assert scores == sorted(scores, reverse=True), f"group {group} tier {tier}: 0 is the best"
    by_key = {r["key"]: r for r in rows}
    for shard in (out / "shards").iterdir():
        for s in samples(shard):
            row = by_key[s["__key__"]]
            assert (s["json"]["tier"], s["json"]["rank"]) == (row["tier"], row["rank"]), shard.name


def test_keys_are_unique_per_occurrence_under_dedup_none(noisy, tmp_path):
    """Exact copies (in one file and across files) curated with --dedup none: each copy is its own
    manifest row and sample, with a `__key__` of its own; copies share only their content id."""
    texts = sentences(20, 41)
    a = write_jsonl(tmp_path / "a.jsonl", ({"text": t} for t in texts * 3))
    b = write_jsonl(tmp_path / "b.jsonl", ({"text": t} for t in texts[:10]))
    out, stats = curate(
        noisy,
        tmp_path / "none",
        inputs=(a, b),
        dedup=DedupConfig(method="none"),
        selection=SelectionConfig(keep=1.0, seed=1),
        super_batch=35,
    )
    assert stats["counts"]["inputs"] == 70 and stats["counts"]["duplicate"] == 0
    rows = read_manifest(str(out / "manifest")).to_pylist()
    assert len(rows) == 70 and {r["status"] for r in rows} == {"selected"}
    assert len({(r["source"], r["position"]) for r in rows}) == 70  # a row per occurrence
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == 70, f"{70 - len(set(keys))} manifest keys shared by copies"
    by_id = Counter(r["id"] for r in rows)
    assert sorted(by_id.values()) == [3] * 10 + [4] * 10  # copies share their content id
    got = [s for shard in sorted((out / "shards").iterdir()) for s in samples(shard)]
    assert len(got) == 70
    assert len({s["__key__"] for s in got}) == 70, "copies share a __key__ in the shards"
    assert {s["__key__"] for s in got} == set(keys)
    for s in got:
        row = next(r for r in rows if r["key"] == s["__key__"])
        assert (s["json"]["source"], s["json"]["position"]) == (row["source"], row["position"])
    texts_by_key = Counter(s["txt"] for s in got)
    assert sorted(texts_by_key.values()) == [3] * 10 + [4] * 10  # identical texts, all kept
