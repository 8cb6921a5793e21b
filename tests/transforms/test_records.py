"""Records and readers: every input record becomes an example or a rejection with its reason."""

from __future__ import annotations

import gzip
import io
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import zstandard
from helpers import png

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.readers import file_format, input_urls, read_examples, read_file
from jestflow.transforms.records import (
    BAD_IMAGE,
    BAD_JSON,
    BAD_MEMBER,
    BAD_UTF8,
    EMPTY,
    MISSING_FIELD,
    NOT_A_STRING,
    NOT_AN_OBJECT,
    TOO_LONG,
    UNREADABLE_FILE,
    Example,
    FieldMap,
    Rejected,
    content_id,
    parse_json_line,
)

TEXT = FieldMap(text="text")


def jsonl(*records) -> bytes:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    return b"\n".join(lines) + b"\n"


def test_ids_hash_content_only():
    a = parse_json_line(b'{"text": "hello", "x": 1}', TEXT, "a.jsonl", 0)
    b = parse_json_line(b'{"text": "hello"}', TEXT, "b.jsonl", 7)
    c = parse_json_line(b'{"text": "hello!"}', TEXT, "a.jsonl", 0)
    assert isinstance(a, Example) and isinstance(b, Example) and isinstance(c, Example)
    assert a.id == b.id == content_id("text", "hello") and len(a.id) == 32
    assert a.id != c.id
    assert a.key != b.key and "." not in a.key  # each occurrence has its own key
    assert (b.source, b.position) == ("b.jsonl", 7)


def test_pair_ids_are_unambiguous():
    assert content_id("text_pair", "ab", "c") != content_id("text_pair", "a", "bc")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"text": "ok"', BAD_JSON),
        (b'{"text": "\xff\xfe"}', BAD_UTF8),
        (b'{"text": "\\ud800"}', BAD_UTF8),
        (b'["text"]', NOT_AN_OBJECT),
        (b'{"body": "x"}', MISSING_FIELD),
        (b'{"text": null}', MISSING_FIELD),
        (b'{"text": 42}', NOT_A_STRING),
        (b'{"text": "   "}', EMPTY),
        (b'{"text": "' + b"a" * 101 + b'"}', TOO_LONG),
    ],
)
def test_bad_lines_are_rejected_with_reason_and_raw_bytes(line, reason):
    result = parse_json_line(line, FieldMap(text="text", max_chars=100), "f.jsonl", 3)
    assert isinstance(result, Rejected)
    assert (result.reason, result.raw, result.position) == (reason, line, 3)
    assert result.detail


def test_field_map_layouts_and_errors():
    assert FieldMap(text="t").layout == "text"
    assert FieldMap(image="jpg", caption="txt").fields == ("txt", "jpg")
    assert FieldMap(query="q", doc="d").text_fields == ("q", "d")
    with pytest.raises(JestflowError, match="exactly one field layout"):
        FieldMap(text="t", query="q", doc="d")
    with pytest.raises(JestflowError, match="exactly one field layout"):
        FieldMap(image="jpg")


def test_jsonl_plain_gzip_and_zstd_read_the_same(tmp_path):
    data = jsonl({"text": "one"}, {"text": "two", "kind": "clean"}, b"", b"{bad", {"text": ""})
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    fields = FieldMap(text="text", keep=("kind",))
    results = [
        list(read_file(str(tmp_path / n), fields)) for n in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst")
    ]
    for records in results:
        assert [type(r).__name__ for r in records] == ["Example", "Example", "Rejected", "Rejected"]
        assert [r.position for r in records] == [
            0,
            1,
            3,
            4,
        ]  # line numbers; a blank line is no record
        assert records[1].meta == {"kind": "clean"} and records[0].meta == {}
        assert [r.reason for r in records[2:]] == [BAD_JSON, EMPTY]
    assert [r.id for r in results[0]] == [r.id for r in results[1]] == [r.id for r in results[2]]


def test_truncated_zstd_is_not_silently_empty(tmp_path):
    frame = zstandard.ZstdCompressor().compress
    data = frame(jsonl(*({"text": f"line {i} " * 20} for i in range(500))))
    (tmp_path / "cut.jsonl.zst").write_bytes(data[: len(data) // 2])
    (tmp_path / "two.jsonl.zst").write_bytes(data + frame(jsonl({"text": "second frame"})))
    records = list(read_file(str(tmp_path / "cut.jsonl.zst"), TEXT))
    assert records and records[-1].reason == UNREADABLE_FILE
    assert "middle of a frame" in records[-1].detail
    whole = list(read_file(str(tmp_path / "two.jsonl.zst"), TEXT))
    assert len(whole) == 501 and whole[-1].text == "second frame"


def test_truncated_gzip_keeps_what_was_read_and_rejects_the_rest(tmp_path):
    data = gzip.compress(jsonl(*({"text": f"line {i} " * 20} for i in range(200))))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    records = list(read_file(str(path), TEXT))
    assert all(isinstance(r, Example) for r in records[:-1]) and len(records) > 10
    last = records[-1]
    assert isinstance(last, Rejected) and last.reason == UNREADABLE_FILE
    assert last.position == len(records) - 1


def test_parquet_rows_with_missing_column_are_each_rejected(tmp_path):
    table = pa.table({"text": ["a", None, "c"], "kind": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "t.parquet")
    records = list(read_file(str(tmp_path / "t.parquet"), FieldMap(text="text", keep=("kind",))))
    assert [type(r).__name__ for r in records] == ["Example", "Rejected", "Example"]
    assert records[2].meta == {"kind": "z"} and records[2].position == 2
    wrong = list(read_file(str(tmp_path / "t.parquet"), FieldMap(text="body")))
    assert [r.reason for r in wrong] == [MISSING_FIELD] * 3


def test_parquet_image_struct_column(tmp_path):
    table = pa.table(
        {
            "image": [{"bytes": png(), "path": "a.png"}, {"bytes": b"not an image", "path": "b"}],
            "caption": ["red square", "broken"],
        }
    )
    pq.write_table(table, tmp_path / "img.parquet")
    good, bad = read_file(str(tmp_path / "img.parquet"), FieldMap(image="image", caption="caption"))
    assert isinstance(good, Example) and good.layout == "image_text" and good.image == png()
    assert isinstance(bad, Rejected) and bad.reason == BAD_IMAGE


def test_webdataset_tar_samples(tmp_path):
    path = str(tmp_path / "s.tar")
    with wds.TarWriter(path) as sink:
        sink.write({"__key__": "a", "jpg": png(), "txt": "a red square", "json": {"kind": "clean"}})
        sink.write({"__key__": "b", "jpg": b"\x00garbage", "txt": "broken"})
        sink.write({"__key__": "c", "jpg": png((0, 0, 255)), "txt": b"\xff\xfe"})
        sink.write({"__key__": "d", "txt": "no image"})
    fields = FieldMap(image="jpg", caption="txt", keep=("kind",))
    records = list(read_file(path, fields))
    assert [getattr(r, "reason", "ok") for r in records] == [
        "ok",
        BAD_IMAGE,
        BAD_UTF8,
        MISSING_FIELD,
    ]
    assert records[0].text == "a red square" and records[0].meta == {"kind": "clean"}
    assert [r.position for r in records] == [0, 1, 2, 3]


def test_corrupt_tar_is_one_unreadable_record(tmp_path):
    path = tmp_path / "bad.tar"
    path.write_bytes(b"this is not a tar file at all" * 40)
    records = list(read_file(str(path), FieldMap(text="txt")))
    assert len(records) == 1 and records[0].reason == UNREADABLE_FILE


def test_text_pairs_and_memory_filesystem():
    fs = fsspec.filesystem("memory")
    fs.pipe("/pairs/p1.jsonl", jsonl({"q": "add two numbers", "d": "def add(a, b): return a + b"}))
    fs.pipe("/pairs/p2.jsonl", jsonl({"q": "only a query"}))
    urls = input_urls(["memory://pairs/*.jsonl"])
    assert urls == ["memory:///pairs/p1.jsonl", "memory:///pairs/p2.jsonl"]  # fsspec's form
    records = list(read_examples(urls, FieldMap(query="q", doc="d")))
    assert records[0].layout == "text_pair" and records[0].pair.startswith("def add")
    assert records[0].source == urls[0]
    assert isinstance(records[1], Rejected) and records[1].reason == MISSING_FIELD


def test_expand_urls_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(JestflowError, match="no input file matches"):
        input_urls([str(tmp_path / "missing*.jsonl")])
    with pytest.raises(JestflowError, match="unknown input format"):
        input_urls([str(tmp_path / "x.csv")])
    assert file_format("gs://b/x.jsonl.zst") == "jsonl"
    assert file_format("part-0.parquet") == "parquet"


def test_broken_compressed_files_and_extreme_json_are_rejected_not_raised(tmp_path):
    (tmp_path / "bad.jsonl.xz").write_bytes(b"\xfd7zXZ\x00 not really xz" * 10)
    (tmp_path / "bad.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage" * 10)
    for name in ("bad.jsonl.xz", "bad.jsonl.zst"):
        (record,) = read_file(str(tmp_path / name), TEXT)
        assert record.reason == UNREADABLE_FILE
    huge = b'{"text": ' + b"9" * 5000 + b"}"
    deep = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for line in (huge, deep):
        assert parse_json_line(line, TEXT, "f", 0).reason == BAD_JSON


def test_tar_members_that_do_not_form_a_sample_are_dead_letters(tmp_path):
    import tarfile

    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("a.txt", b"fine"),
            ("README", b"no extension"),
            ("b.txt", b"one"),
            ("b.TXT", b"two"),
            ("c.txt", b"also fine"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    records = list(read_file(str(path), FieldMap(text="txt")))
    assert [getattr(r, "reason", "ok") for r in records] == ["ok", BAD_MEMBER, BAD_MEMBER, "ok"]
    assert "no extension" in records[1].detail and ".txt twice" in records[2].detail
    with tarfile.open(fileobj=io.BytesIO(records[2].raw)) as dead:  # the whole sample is kept
        assert sorted(m.name for m in dead.getmembers()) == ["b.TXT", "b.txt"]


def test_compressed_webdataset_tars(tmp_path):
    buffer = io.BytesIO()
    with wds.TarWriter(buffer) as sink:
        for i in range(20):
            sink.write({"__key__": f"s{i}", "txt": f"sample number {i}"})
    data = buffer.getvalue()
    (tmp_path / "s.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    (tmp_path / "s.tar.gz").write_bytes(gzip.compress(data))
    for name in ("s.tar.zst", "s.tar.gz"):
        records = list(read_file(str(tmp_path / name), FieldMap(text="txt")))
        assert [r.text for r in records] == [f"sample number {i}" for i in range(20)]
    cut = gzip.compress(data)
    (tmp_path / "cut.tar.gz").write_bytes(cut[: len(cut) // 2])
    assert list(read_file(str(tmp_path / "cut.tar.gz"), FieldMap(text="txt")))[-1].reason == (
        UNREADABLE_FILE
    )
