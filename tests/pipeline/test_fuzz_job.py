"""The whole curation job on fuzzed bad input (FnApiRunner, one worker, a tiny teacher): it
finishes, and it accounts for every record. The readers, fuzzed on their own in
tests/transforms/test_fuzz_readers.py, say what each file holds; the job's manifest must have
exactly those records (inputs = selected + not selected + rejected), `rejected/` every rejected
one with its reason and raw bytes, and the shards the selected examples.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from corpora import fit, samples
from helpers import sentences, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.job import run_curation
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.manifest import STATUSES, read_manifest, status_counts
from jestflow.transforms.readers import read_file, unsafe_member_name
from jestflow.transforms.records import REASONS, Example, FieldMap, Rejected
from jestflow.transforms.selection.offline import SelectionConfig

FIELDS = FieldMap(text="text", keep=("kind",), max_chars=40)  # tar members: KEY.text, KEY.json
SETTINGS = {
    "deadline": None,
    "derandomize": True,  # the same cases on every run, so CI is reproducible
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
RUNS = itertools.count()  # each example's job gets its own output folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A teacher that only has to run, not to be good: two steps."""
    root = tmp_path_factory.mktemp("fuzz-teacher")
    reference = write_jsonl(root / "ref.jsonl", ({"text": t} for t in sentences(40, 11)))
    return fit(reference, root / "teacher", "lm", FieldMap(text="text"), steps=2)


# --- inputs ----------------------------------------------------------------------------------

text = st.one_of(
    st.text(min_size=1, max_size=30), st.sampled_from(["\x00", "\ufeffhi", "a\u2028b"])
)
kind = st.one_of(st.none(), st.text(max_size=4), st.integers(), st.just("\ud800"))
line = st.one_of(
    st.builds(lambda t, k: json.dumps({"text": t, "kind": k}).encode(), text, kind),
    st.builds(lambda t: b"\xef\xbb\xbf" + json.dumps({"text": t}).encode(), text),
    st.sampled_from(
        [
            b'{"text": "\\ud800"}',  # lone surrogate
            b'{"text": null}',
            b'{"\\udc00": 1}',  # a field name UTF-8 cannot carry, in the missing_field detail
            b'{"text": 7}',
            b'{"text": {"nested": ["x"]}}',
            b'{"text": "   "}',
            b'{"text": "' + b"y" * 60 + b'"}',  # too long
            b'{"text": "caf\xe9"}',  # latin-1
            b'{"text": "cut',
            b"[1, 2]",
            b'{"text": "deep", "kind": ' + b"[" * 80 + b"]" * 80 + b"}",
            b"\x00\xff garbage",
            b"",  # blank: no record
        ]
    ),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
)
member_name = st.one_of(
    st.just("{k}.text"),
    st.sampled_from(
        [
            "/{k}.text",
            "../{k}.text",
            "d/../{k}.text",
            "{k}\\x.text",
            "{k}\x00.text",
            "d{k}/.text",
            "{k}",
            "{k}.text.text",
            "{k}.TEXT",
        ]
    ),
)


@st.composite
def jsonl_input(draw) -> bytes:
    lines = draw(st.lists(line, max_size=10))
    return b"".join(x + draw(st.sampled_from([b"\n", b"\r\n"])) for x in lines)


@st.composite
def tar_input(draw) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(draw(st.integers(0, 6))):
            name = draw(member_name).format(k=f"s{i}")
            members = [(name, draw(st.one_of(text.map(str.encode), st.binary(max_size=8))))]
            if draw(st.booleans()):
                members.append((f"s{i}.json", json.dumps({"kind": draw(kind)}).encode()))
            for member, data in members:
                info = tarfile.TarInfo(member)
                info.pax_headers = {"path": member}  # keeps a NUL
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@st.composite
def parquet_input(draw) -> bytes:
    n = draw(st.integers(0, 6))
    column = draw(
        st.sampled_from(
            [
                pa.array(
                    draw(st.lists(st.one_of(st.none(), text), min_size=n, max_size=n)), pa.string()
                ),
                pa.array(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), pa.int64()),
                pa.array([[f"x{i}"] for i in range(n)], pa.list_(pa.string())),
                pa.array([b"\xff" * i for i in range(n)], pa.binary()),
                pa.array([None] * n, pa.null()),
            ]
        )
    )
    name = draw(st.sampled_from(["text", "body"]))  # "body": the text column is missing
    table = pa.table({name: column, "kind": pa.array(range(n), pa.timestamp("ns"))})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def damaged(draw, data: bytes) -> bytes:
    """The file as it is, cut at a random offset, or with a few bytes changed."""
    how = draw(st.sampled_from(["whole", "whole", "cut", "flip"]))
    if how == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    return data


@st.composite
def job_inputs(draw) -> dict[str, bytes]:
    """One to three input files: JSONL (plain, .gz or .zst), a tar, a Parquet file."""
    files = {}
    if draw(st.booleans()):
        suffix = draw(st.sampled_from(["", ".gz", ".zst"]))
        data = draw(jsonl_input())
        compressed = {"": data, ".gz": gzip.compress(data, mtime=0)}.get(suffix)
        if compressed is None:
            compressed = zstandard.ZstdCompressor().compress(data)
        files[f"a.jsonl{suffix}"] = damaged(draw, compressed)
    if draw(st.booleans()):
        files["b.tar"] = damaged(draw, draw(tar_input()))
    if draw(st.booleans()) or not files:
        files["c.parquet"] = damaged(draw, draw(parquet_input()))
    return files


# --- the job -----------------------------------------------------------------------------------


def run_job(root, files: dict[str, bytes], teacher: str, keep: float = 0.5):
    folder = root / f"run-{next(RUNS)}"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    urls = [str(folder / name) for name in sorted(files)]
    config = CurateConfig(
        inputs=tuple(urls),
        output=str(folder / "out"),
        teacher=teacher,
        task="lm",
        fields=FIELDS,
        selection=SelectionConfig(keep=keep, seed=1),
        super_batch=4,
        shard_max_count=4,
        device="cpu",
        workers=1,
    )
    records = [r for url in urls for r in read_file(url, FIELDS)]
    if all(isinstance(r, Rejected) for r in records):
        # A run in which no record parses (or none is there) fails with the reason, its dead
        # letters kept.
        why = r"none of the .* records could be used" if records else "no records in"
        with pytest.raises(JestflowError, match=why):
            run_curation(config)
        assert not (folder / "out" / "_SUCCESS").exists()
        return folder / "out", json.loads((folder / "out" / "stats.json").read_text()), records
    return folder / "out", run_curation(config), records


def check_accounts(out, stats, records: list[Example | Rejected]) -> dict[str, int]:
    """The job's outputs hold exactly the records the readers found."""
    table = read_manifest(str(out / "manifest"))  # an empty part when there were no records
    manifest, counts = table.to_pylist(), status_counts(table)
    examples = [r for r in records if isinstance(r, Example)]
    rejected = [r for r in records if isinstance(r, Rejected)]
    assert counts["inputs"] == len(records) == len(manifest)
    assert counts["inputs"] == sum(counts[status] for status in STATUSES)
    assert counts["rejected"] == len(rejected)
    assert counts["selected"] + counts["not_selected"] + counts["duplicate"] == len(examples)
    assert stats["counts"] == counts
    assert stats["rejected"] == {
        reason: n for reason in REASONS if (n := sum(r.reason == reason for r in rejected))
    }
    by_place = {(row["source"], row["position"]): row for row in manifest}
    assert len(by_place) == len(manifest)  # one row per record
    for record in records:
        row = by_place[(record.source, record.position)]
        if isinstance(record, Rejected):
            assert (row["status"], row["reason"]) == ("rejected", record.reason)
        else:
            assert row["status"] in ("selected", "not_selected", "duplicate")
            assert row["id"] == record.id
    # A removed copy names a kept one, which comes before it in input order and was scored.
    by_key = {row["key"]: row for row in manifest if row["key"]}
    order = {url: i for i, url in enumerate(sorted({r.source for r in records}))}
    for row in manifest:
        if row["status"] == "duplicate":
            kept = by_key[row["duplicate_of"]]
            assert kept["status"] in ("selected", "not_selected") and row["reason"] in (
                "exact",
                "near",
            )
            assert (order[kept["source"]], kept["position"]) < (
                order[row["source"]],
                row["position"],
            )

    letters = [] if not (out / "rejected").exists() else pq.read_table(out / "rejected").to_pylist()
    assert sorted((r["source"], r["position"], r["reason"], r["raw"]) for r in letters) == sorted(
        (r.source, r.position, r.reason, r.raw) for r in rejected
    )  # every dead letter, with its reason and raw bytes
    for letter in letters:
        assert letter["reason"] in REASONS and letter["detail"]
        if letter["source"].endswith(".tar") and letter["raw"]:  # a rejected tar sample
            with tarfile.open(fileobj=io.BytesIO(letter["raw"])) as tar:
                assert all(unsafe_member_name(m.name) is None for m in tar.getmembers())

    shards = sorted((out / "shards").glob("*.tar")) if (out / "shards").exists() else []
    written = [s for shard in shards for s in samples(shard)]
    assert len(written) == counts["selected"] == stats["shards"]["samples"]
    texts = {r.key: r.text for r in examples}
    for sample in written:
        assert sample["txt"] == texts[sample["__key__"]]
    # Complete unless no record parsed, none read included (then the run failed: run_job).
    assert (out / "_SUCCESS").exists() == bool(examples)
    return counts


def test_a_job_on_the_inputs_that_crashed_it_finishes_and_accounts(teacher, tmp_path):
    """Every example is kept (keep 1.0), so each reaches the shard writer: a kept value with a
    lone surrogate crashed it, a deep one crashed pickling between stages, a field name with a
    lone surrogate crashed the dead-letter writer, a Parquet time in nanoseconds the reader."""
    jsonl = b"\n".join(
        [
            b'{"text": "fine one", "kind": "\\ud800"}',
            b'{"text": "fine two", "kind": ' + b"[" * 900 + b"]" * 900 + b"}",
            b'{"\\udc00": "no text"}',
            b'\xef\xbb\xbf{"text": "after a BOM"}',
        ]
    )
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in [
            ("ok.text", b"a sample"),
            ("../evil.text", b"escape"),
            ("/etc/x.text", b"absolute"),
            ("d.text", b"last"),
            ("e.text", b"cut"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        # Cut at e.text's header (tarfile stopped there silently): the sample being gathered
        # (d, which might have had more members) and the rest are the unreadable_file.
        cut = archive.offset - 1024
    parquet = io.BytesIO()
    pq.write_table(
        pa.table({"text": ["row one", "row two"], "kind": pa.array([1, 2], pa.timestamp("ns"))}),
        parquet,
    )
    files = {"a.jsonl": jsonl, "b.tar": tar.getvalue()[:cut], "c.parquet": parquet.getvalue()}
    out, stats, records = run_job(tmp_path, files, teacher, keep=1.0)
    counts = check_accounts(out, stats, records)
    assert counts == {"selected": 5, "not_selected": 0, "duplicate": 0, "rejected": 5, "inputs": 10}
    assert stats["rejected"] == {
        "bad_json": 1,
        "missing_field": 1,
        "bad_member": 2,
        "unreadable_file": 1,
    }
    dead = {r["reason"]: r for r in pq.read_table(out / "rejected").to_pylist()}
    assert "\ufffd" in dead["missing_field"]["detail"]
    written = [s for shard in (out / "shards").glob("*.tar") for s in samples(shard)]
    metas = [s["json"]["meta"] for s in written if "meta" in s["json"]]
    assert {"kind": "\ufffd"} in metas and {"kind": "1970-01-01 00:00:00.000000001"} in metas


@settings(max_examples=15, **SETTINGS)
@given(files=job_inputs())
def test_the_job_finishes_and_accounts_for_every_record(teacher, tmp_path, files):
    out, stats, records = run_job(tmp_path, files, teacher)
    check_accounts(out, stats, records)


@pytest.mark.slow
@settings(max_examples=80, **SETTINGS)
@given(files=job_inputs())
def test_the_job_finishes_and_accounts_for_every_record_at_length(teacher, tmp_path, files):
    out, stats, records = run_job(tmp_path, files, teacher)
    check_accounts(out, stats, records)
