"""Bad input, fuzzed: whatever a file holds, every record a reader meets becomes an `Example` or a
`Rejected` with a reason and its raw bytes, reading never raises, and a file that breaks off ends
in one `unreadable_file` after the records read before the break. Tar member names are checked
on read, and the dead-letter tar of a rejected sample never carries an unsafe name.

The generated cases know what each record should become (by construction), so the assertions
are on real outcomes: positions, reasons, texts, ids and raw bytes. Plain regression tests for
what the fuzzing found follow the properties.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from helpers import png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webdataset.tariterators import base_plus_ext

from jestflow.transforms.readers import (
    _Member,
    _tar_bytes,
    dead_letter_name,
    read_file,
    unsafe_member_name,
)
from jestflow.transforms.records import (
    BAD_IMAGE,
    BAD_JSON,
    BAD_MEMBER,
    BAD_UTF8,
    EMPTY,
    MISSING_FIELD,
    NOT_A_STRING,
    NOT_AN_OBJECT,
    REASONS,
    TOO_LONG,
    UNREADABLE_FILE,
    Example,
    FieldMap,
    Rejected,
    content_id,
    image_problem,
    parse_json_line,
)

MAX = 40  # --max-chars in these tests: "huge" texts stay small
FIELDS = FieldMap(text="text", keep=("kind",), max_chars=MAX)
TAR_FIELDS = FieldMap(text="txt", keep=("kind",), max_chars=MAX)
IMAGE_FIELDS = FieldMap(image="jpg", caption="txt", max_chars=MAX)
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # the same cases on every run, so CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
COMPRESS = {
    "": lambda data: data,
    ".gz": lambda data: gzip.compress(data, mtime=0),
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}
ABSENT = object()


@dataclass
class Case:
    """One generated record: the raw line or tar members, and what it must become."""

    raw: bytes = b""
    members: list[tuple[str, bytes, str]] = field(default_factory=list)  # (name, data, type)
    reasons: frozenset[str] | None = None  # a rejection with one of these; None: an example
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # a fragment the rejection's detail must hold
    anything: bool = False  # garbage: any outcome, as long as it is one
    blank: bool = False  # a blank JSONL line: no record


def summary(record: Example | Rejected) -> tuple:
    """What two reads of the same records must agree on."""
    if isinstance(record, Example):
        return ("example", record.position, record.id, dict(record.meta))
    return ("rejected", record.position, record.reason, record.raw)


def check_record(record: Example | Rejected, source: str) -> None:
    """The contract every record meets, whatever the input."""
    assert isinstance(record, (Example, Rejected)) and record.source == source
    if isinstance(record, Rejected):
        assert record.reason in REASONS and record.detail
        assert isinstance(record.raw, bytes)
        record.detail.encode("utf-8")  # the dead letter is written as Parquet text
    else:
        assert record.text.strip() and len(record.text) <= MAX
        record.text.encode("utf-8")
        json.dumps(dict(record.meta), ensure_ascii=False).encode("utf-8")  # the shard's json


def check_breaks_off_once(records: list) -> None:
    """At most one `unreadable_file`, and only as the last record."""
    broken = [i for i, r in enumerate(records) if getattr(r, "reason", None) == UNREADABLE_FILE]
    assert broken in ([], [len(records) - 1])
    if broken:
        last = records[-1]
        assert last.raw == b""
        assert last.position == (records[-2].position + 1 if len(records) > 1 else 0)


def check_prefix_then_break(cut: list, whole: list) -> None:
    """A cut file gives the whole file's first records, then one `unreadable_file` — or, if the
    cut lost nothing but padding, exactly the whole file's records. Never fewer, silently."""
    check_breaks_off_once(cut)
    if cut and getattr(cut[-1], "reason", None) == UNREADABLE_FILE:
        read = [summary(r) for r in cut[:-1]]
        assert read == [summary(r) for r in whole[: len(read)]]
        assert len(read) <= len(whole)
    else:
        assert [summary(r) for r in cut] == [summary(r) for r in whole]


def check_against_cases(records: list, cases: list[Case], positions: list[int]) -> None:
    assert [r.position for r in records] == positions
    for record, case in zip(records, cases, strict=True):
        if case.anything:
            continue
        if case.reasons is None:
            assert isinstance(record, Example), (record, case)
            assert record.text == case.text and record.meta == case.meta
            assert record.id == content_id("text", case.text)
        else:
            assert isinstance(record, Rejected), (record, case)
            assert record.reason in case.reasons, (record, case)
            assert case.detail in record.detail


# --- JSONL ---------------------------------------------------------------------------------

good_text = st.one_of(
    st.text(min_size=1, max_size=MAX),
    st.text("\x00\ufeff\u2028\u0085 \tab€😀\\\"'", min_size=1, max_size=MAX),  # NUL, BOM, odd
).filter(str.strip)
whitespace = st.text(" \t\n\r\x0b\x0c\x1c\x85\u3000\u2028", max_size=8)
long_text = st.text(min_size=MAX, max_size=3 * MAX).map(lambda s: "x" + s)
kind_value = st.one_of(
    st.just(ABSENT),
    st.none(),
    st.text(max_size=5),
    st.integers(),
    st.lists(st.text(max_size=3), max_size=3),
)
not_a_string = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
bad_utf8_bytes = st.sampled_from(
    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xe9t\xe9"]
)
LINE_KINDS = (
    "valid",
    "bom",
    "surrogate",
    "surrogate_meta",
    "missing",
    "null",
    "nonstring",
    "whitespace",
    "long",
    "notobject",
    "truncated",
    "badutf8",
    "control",
    "garbage",
    "deep_meta",
    "blank",
)


def dumps(obj: Any, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")


@st.composite
def jsonl_line(draw) -> Case:
    kind = draw(st.sampled_from(LINE_KINDS))
    ascii_only = draw(st.booleans())
    text, value = draw(good_text), draw(kind_value)
    record = {"text": text} if value is ABSENT else {"text": text, "kind": value}
    meta = {} if value is ABSENT else {"kind": value}
    valid = dumps(record, ascii_only)
    if kind == "valid":
        return Case(raw=valid, text=text, meta=meta)
    if kind == "bom":
        return Case(raw=b"\xef\xbb\xbf" + valid, text=text, meta=meta)
    if kind == "surrogate":  # a lone surrogate through a JSON escape
        lone = draw(st.sampled_from(["\ud800", "\udfff", "\udc80"]))
        return Case(raw=dumps({"text": text + lone}, True), reasons=frozenset({BAD_UTF8}))
    if kind == "surrogate_meta":  # … in a kept field: kept, made valid
        raw = dumps({"text": text, "kind": "a\ud800"}, True)
        return Case(raw=raw, text=text, meta={"kind": "a\ufffd"})
    if kind == "missing":
        other = draw(
            st.dictionaries(
                st.text(max_size=4).filter(lambda k: k != "text"), st.integers(), max_size=3
            )
        )
        return Case(raw=dumps(other, ascii_only), reasons=frozenset({MISSING_FIELD}))
    if kind == "null":
        return Case(raw=dumps({"text": None}, ascii_only), reasons=frozenset({MISSING_FIELD}))
    if kind == "nonstring":
        raw = dumps({"text": draw(not_a_string)}, ascii_only)
        return Case(raw=raw, reasons=frozenset({NOT_A_STRING}))
    if kind == "whitespace":
        raw = dumps({"text": draw(whitespace)}, ascii_only)
        return Case(raw=raw, reasons=frozenset({EMPTY}))
    if kind == "long":
        raw = dumps({"text": draw(long_text)}, ascii_only)
        return Case(raw=raw, reasons=frozenset({TOO_LONG}), detail=f"> {MAX}")
    if kind == "notobject":
        value = draw(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers())))
        return Case(raw=dumps(value, ascii_only), reasons=frozenset({NOT_AN_OBJECT}))
    if kind == "truncated":
        cut = draw(st.integers(1, len(valid) - 1))
        return Case(raw=valid[:cut], reasons=frozenset({BAD_JSON, BAD_UTF8}))
    if kind == "badutf8":
        escaped = json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")[:4]  # no newline
        raw = b'{"text": "' + escaped + draw(bad_utf8_bytes) + b'"}'
        return Case(raw=raw, reasons=frozenset({BAD_UTF8}))
    if kind == "control":  # an unescaped NUL or tab inside a string is not JSON
        raw = b'{"text": "a' + draw(st.sampled_from([b"\x00", b"\x01", b"\t"])) + b'b"}'
        return Case(raw=raw, reasons=frozenset({BAD_JSON}))
    if kind == "garbage":
        raw = draw(
            st.binary(min_size=1, max_size=60).filter(lambda b: b.strip() and b"\n" not in b)
        )
        return Case(raw=raw, anything=True)
    if kind == "deep_meta":  # nested past what pickling between stages survives
        raw = b'{"text": "deep", "kind": ' + b"[" * 70 + b"]" * 70 + b"}"
        return Case(raw=raw, reasons=frozenset({BAD_JSON}), detail="nests deeper")
    assert kind == "blank"
    return Case(raw=draw(st.sampled_from([b"", b" ", b"\t", b"\x0b \x0c"])), blank=True)


@st.composite
def jsonl_file(draw, max_lines: int = 12) -> tuple[bytes, list[Case]]:
    """A JSONL file (LF or CRLF per line, with or without a final newline) and its lines."""
    cases = draw(st.lists(jsonl_line(), max_size=max_lines))
    ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in cases]
    data = b"".join(c.raw + end for c, end in zip(cases, ends, strict=True))
    if cases and draw(st.booleans()):
        data = data[: -len(ends[-1])]
    return data, cases


def compress(draw, data: bytes, suffix: str) -> bytes:
    if suffix == ".zst" and data and draw(st.booleans()):  # two frames
        k = draw(st.integers(0, len(data)))
        return COMPRESS[suffix](data[:k]) + COMPRESS[suffix](data[k:])
    return COMPRESS[suffix](data)


@FUZZ
@given(data=st.data(), file=jsonl_file(), suffix=st.sampled_from(sorted(COMPRESS)))
def test_every_jsonl_line_is_an_example_or_a_rejection(tmp_path, data, file, suffix):
    content, cases = file
    path = tmp_path / f"in.jsonl{suffix}"
    path.write_bytes(compress(data.draw, content, suffix))
    records = list(read_file(str(path), FIELDS))
    for record in records:
        check_record(record, str(path))
    lines = [(i, c) for i, c in enumerate(cases) if not c.blank]
    check_against_cases(records, [c for _, c in lines], [i for i, _ in lines])
    for record, (_, case) in zip(records, lines, strict=True):
        if isinstance(record, Rejected):  # the dead letter holds the line as it was
            assert record.raw == case.raw.rstrip(b"\r")
            assert parse_json_line(record.raw, FIELDS, "", 0).reason == record.reason


@FUZZ
@given(
    data=st.data(),
    file=jsonl_file(max_lines=30),
    suffix=st.sampled_from([".gz", ".bz2", ".xz", ".zst"]),
)
def test_a_cut_compressed_jsonl_keeps_what_was_read_then_breaks_off(tmp_path, data, file, suffix):
    # One zstd frame: a file cut exactly between two frames is a complete, shorter stream.
    whole = COMPRESS[suffix](file[0] or b'{"text": "only"}\n')
    cut = data.draw(st.integers(1, len(whole) - 1), label="cut")
    (tmp_path / f"whole.jsonl{suffix}").write_bytes(whole)
    (tmp_path / f"cut.jsonl{suffix}").write_bytes(whole[:cut])
    full = list(read_file(str(tmp_path / f"whole.jsonl{suffix}"), FIELDS))
    records = list(read_file(str(tmp_path / f"cut.jsonl{suffix}"), FIELDS))
    assert (
        records and getattr(records[-1], "reason", None) == UNREADABLE_FILE
    )  # compressed streams notice
    check_prefix_then_break(records, full)


# --- WebDataset tars -----------------------------------------------------------------------

UNSAFE = (
    "/{k}.txt",
    "../{k}.txt",
    "d/../{k}.txt",
    "{k}\\x.txt",
    "C:\\{k}.txt",
    "{k}\x00x.txt",
    "d{i}/.txt",
    "d{i}/..txt",
    "/d/../../{k}.txt",
)
TAR_KINDS = (
    "ok",
    "ok_dir",
    "ok_upper",
    "ok_odd_name",
    "ok_bad_json",
    "bad_utf8",
    "empty",
    "too_long",
    "missing",
    "double_ext",
    "unsafe",
    "noext",
    "dup",
    "symlink",
    "hardlink",
    "wds_meta",
)


def kind_member(key: str, value: Any) -> list[tuple[str, bytes, str]]:
    if value is ABSENT:
        return []
    return [(f"{key}.json", json.dumps({"kind": value}).encode(), "file")]


@st.composite
def tar_case(draw, i: int) -> Case:
    kind = draw(st.sampled_from(TAR_KINDS))
    key, text, value = f"s{i:03d}", draw(good_text), draw(kind_value)
    meta = {} if value is ABSENT else {"kind": value}
    ok = [(f"{key}.txt", text.encode(), "file"), *kind_member(key, value)]
    if kind == "ok":
        return Case(members=ok, text=text, meta=meta)
    if kind == "ok_dir":  # a directory entry first, and the sample inside it
        d = f"d{i}"
        return Case(
            members=[(d, b"", "dir"), (f"./{d}/{key}.txt", text.encode(), "file")], text=text
        )
    if kind == "ok_upper":
        return Case(members=[(f"{key}.TXT", text.encode(), "file")], text=text)
    if kind == "ok_odd_name":  # a name that is not UTF-8 (read back with surrogates)
        return Case(members=[(f"{key}caf\udce9.txt", text.encode(), "file")], text=text)
    if kind == "ok_bad_json":  # a kept-field member that is not a JSON object is ignored
        junk = draw(st.sampled_from([b"[1, 2", b"[1, 2]", b"\xff", b"null"]))
        return Case(
            members=[(f"{key}.txt", text.encode(), "file"), (f"{key}.json", junk, "file")],
            text=text,
        )
    if kind == "bad_utf8":
        data = text.encode()[:3] + draw(bad_utf8_bytes)
        return Case(members=[(f"{key}.txt", data, "file")], reasons=frozenset({BAD_UTF8}))
    if kind == "empty":
        data = draw(whitespace).encode()
        return Case(members=[(f"{key}.txt", data, "file")], reasons=frozenset({EMPTY}))
    if kind == "too_long":
        data = draw(long_text).encode()
        return Case(members=[(f"{key}.txt", data, "file")], reasons=frozenset({TOO_LONG}))
    if kind == "missing":
        name = draw(st.sampled_from([f"{key}.json", f"{key}.dat", f"{key}.t\udcffxt"]))
        return Case(members=[(name, b"{}", "file")], reasons=frozenset({MISSING_FIELD}))
    if kind == "double_ext":  # `.txt.txt` is the field `txt.txt`, not `txt`
        return Case(
            members=[(f"{key}.txt.txt", text.encode(), "file")], reasons=frozenset({MISSING_FIELD})
        )
    if kind == "unsafe":
        name = draw(st.sampled_from(UNSAFE)).format(k=key, i=i)
        return Case(
            members=[(name, text.encode(), "file")],
            reasons=frozenset({BAD_MEMBER}),
            detail="unsafe tar member name",
        )
    if kind == "noext":
        return Case(
            members=[(f"d{i}/README", b"x", "file")],
            reasons=frozenset({BAD_MEMBER}),
            detail="no extension",
        )
    if kind == "dup":
        members = [(f"{key}.txt", b"one", "file"), (f"{key}.TXT", b"two", "file")]
        return Case(members=members, reasons=frozenset({BAD_MEMBER}), detail="twice")
    if kind in ("symlink", "hardlink"):
        members = [(f"{key}.txt", b"", kind)]
        link = "symbolic link" if kind == "symlink" else "hard link"
        return Case(members=members, reasons=frozenset({BAD_MEMBER}), detail=link)
    assert kind == "wds_meta"  # WebDataset's own metadata is not a sample
    return Case(members=[("__index__", b"{}", "file"), *ok], text=text, meta=meta)


def write_tar(cases: list[Case]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for case in cases:
            for name, data, kind in case.members:
                info = tarfile.TarInfo(name)
                info.pax_headers = {"path": name}  # keeps a NUL the ustar field would cut
                if kind == "file":
                    info.size = len(data)
                elif kind == "dir":
                    info.type = tarfile.DIRTYPE
                else:
                    info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                    info.linkname = "/etc/passwd"
                tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return out.getvalue()


def expected_samples(cases: list[Case]) -> list[Case]:
    """Cases as the reader sees them: members group by key (webdataset's `base_plus_ext`), so
    neighbours whose names have no key at all (no dot) run together into one sample."""
    groups: list[tuple[Any, Case]] = []
    for case in cases:
        names = [n for n, _, kind in case.members if kind != "dir" and not n.startswith("__")]
        prefix = base_plus_ext(names[0])[0]
        if groups and prefix is None and groups[-1][0] is None:
            groups[-1][1].members.extend(case.members)
        else:
            members = list(case.members)
            groups.append((prefix, Case(**{**case.__dict__, "members": members})))
    return [case for _, case in groups]


def dead_letter_members(raw: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert all(m.isreg() for m in members)
        return [(m.name, tar.extractfile(m).read()) for m in members]


def check_dead_letter(record: Rejected, case: Case | None = None) -> None:
    """A rejected sample's raw bytes are a tar of its members, under safe base names."""
    members = dead_letter_members(record.raw)
    for name, _ in members:
        assert unsafe_member_name(name) is None and "/" not in name, name
    if case is not None:
        kept = [(n, d) for n, d, kind in case.members if kind != "dir" and not n.startswith("__")]
        assert members == [(dead_letter_name(n), d) for n, d in kept]


@st.composite
def tar_file(draw, max_samples: int = 8) -> list[Case]:
    n = draw(st.integers(0, max_samples))
    return [draw(tar_case(i)) for i in range(n)]


@FUZZ
@given(cases=tar_file(), suffix=st.sampled_from(sorted(COMPRESS)))
def test_every_tar_sample_is_an_example_or_a_rejection(tmp_path, cases, suffix):
    path = tmp_path / f"in.tar{suffix}"
    path.write_bytes(COMPRESS[suffix](write_tar(cases)))
    records = list(read_file(str(path), TAR_FIELDS))
    samples = expected_samples(cases)
    for record in records:
        check_record(record, str(path))
    check_against_cases(records, samples, list(range(len(samples))))
    for record, case in zip(records, samples, strict=True):
        if isinstance(record, Rejected):
            check_dead_letter(record, case)


@FUZZ
@given(data=st.data(), cases=tar_file(), suffix=st.sampled_from(sorted(COMPRESS)))
def test_a_cut_or_corrupt_tar_never_loses_records_silently(tmp_path, data, cases, suffix):
    whole = COMPRESS[suffix](write_tar(cases))
    (tmp_path / f"whole.tar{suffix}").write_bytes(whole)
    full = list(read_file(str(tmp_path / f"whole.tar{suffix}"), TAR_FIELDS))
    broken = bytearray(whole)
    if data.draw(st.booleans(), label="cut"):
        broken = broken[: data.draw(st.integers(0, len(whole) - 1), label="at")]
    else:  # corrupt bytes: headers, member data, compression
        for _ in range(data.draw(st.integers(1, 6), label="flips")):
            broken[data.draw(st.integers(0, len(whole) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / f"broken.tar{suffix}"
    path.write_bytes(bytes(broken))
    records = list(read_file(str(path), TAR_FIELDS))
    for record in records:
        check_record(record, str(path))
        if isinstance(record, Rejected) and record.reason != UNREADABLE_FILE:
            check_dead_letter(record)
    check_breaks_off_once(records)
    assert [r.position for r in records] == list(range(len(records)))
    if len(broken) < len(whole):
        check_prefix_then_break(records, full)


image_bytes = st.one_of(
    st.just(png()),
    st.builds(lambda c: png(c, 5), st.tuples(*[st.integers(0, 255)] * 3)),
    st.binary(max_size=40),  # not an image
    st.just(b""),
    st.integers(1, len(png()) - 1).map(lambda n: png()[:n]),  # cut
    st.integers(8, len(png()) - 1).map(lambda n: png()[:n] + b"\x00" * 10),  # corrupt
)


@FUZZ
@given(images=st.lists(st.tuples(image_bytes, good_text, st.booleans()), max_size=6))
def test_images_that_do_not_decode_are_rejected(tmp_path, images):
    cases = []
    for i, (image, caption, with_image) in enumerate(images):
        members = [(f"s{i}.txt", caption.encode(), "file")]
        if with_image:
            members.insert(0, (f"s{i}.jpg", image, "file"))
        cases.append(Case(members=members))
    path = tmp_path / "images.tar"
    path.write_bytes(write_tar(cases))
    records = list(read_file(str(path), IMAGE_FIELDS))
    assert [r.position for r in records] == list(range(len(images)))
    for record, (image, caption, with_image) in zip(records, images, strict=True):
        if not with_image:
            assert record.reason == MISSING_FIELD
        elif image_problem(image) is None:
            assert isinstance(record, Example) and record.layout == "image_text"
            assert (record.image, record.text) == (image, caption)
            assert record.id == content_id("image_text", caption, image=image)
        else:
            assert record.reason == BAD_IMAGE and "0x" not in record.detail
            assert dead_letter_members(record.raw)[0][1] == image
    assert image_problem(png()) is None and image_problem(b"") is not None


# --- Parquet -------------------------------------------------------------------------------

COLUMN_TYPES = (
    "string",
    "large_string",
    "dictionary",
    "binary",
    "int64",
    "float64",
    "list",
    "struct",
    "null",
    "missing",
)
text_value = st.one_of(st.none(), good_text, whitespace, long_text)


@st.composite
def parquet_column(draw) -> tuple[str, list]:
    kind = draw(st.sampled_from(COLUMN_TYPES))
    n = draw(st.integers(0, 8))
    values = {
        "string": text_value,
        "large_string": text_value,
        "dictionary": text_value,
        "missing": text_value,
        "binary": st.one_of(st.none(), st.binary(max_size=8), good_text.map(str.encode)),
        "int64": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "float64": st.one_of(st.none(), st.floats()),
        "list": st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=3)),
        "struct": st.one_of(st.none(), st.fixed_dictionaries({"a": st.text(max_size=3)})),
        "null": st.none(),
    }[kind]
    return kind, [draw(values) for _ in range(n)]


def column(kind: str, values: list) -> pa.Array:
    types = {
        "string": pa.string(),
        "large_string": pa.large_string(),
        "binary": pa.binary(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "list": pa.list_(pa.string()),
        "struct": pa.struct([("a", pa.string())]),
        "null": pa.null(),
        "missing": pa.string(),
    }
    if kind == "dictionary":
        return pa.array(values, pa.string()).dictionary_encode()
    return pa.array(values, types[kind])


def parquet_expectation(kind: str, value: Any) -> Case:
    if kind == "missing" or value is None:
        return Case(reasons=frozenset({MISSING_FIELD}))
    if kind == "binary":
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return Case(reasons=frozenset({BAD_UTF8}))
    if not isinstance(value, str):
        return Case(reasons=frozenset({NOT_A_STRING}))
    if not value.strip():
        return Case(reasons=frozenset({EMPTY}))
    if len(value) > MAX:
        return Case(reasons=frozenset({TOO_LONG}))
    return Case(text=value)


@FUZZ
@given(text=parquet_column(), kind=parquet_column(), data=st.data())
def test_parquet_with_a_wrong_schema_rejects_row_by_row(tmp_path, text, kind, data):
    (text_kind, values), (kind_kind, kinds) = text, kind
    n = len(values)
    kinds = (kinds + [None] * n)[:n]
    table = pa.table(
        {
            "body" if text_kind == "missing" else "text": column(text_kind, values),
            "kind": column("string" if kind_kind == "missing" else kind_kind, kinds),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    records = list(read_file(str(path), FIELDS))
    assert [r.position for r in records] == list(range(n))
    for record, value, meta in zip(records, values, table.column("kind").to_pylist(), strict=True):
        check_record(record, str(path))
        case = parquet_expectation(text_kind, value)
        if case.reasons is None:
            assert isinstance(record, Example) and record.text == case.text
            if isinstance(meta, bytes):
                meta = meta.decode("utf-8", "replace")
            assert json.dumps(dict(record.meta)) == json.dumps({"kind": meta})  # NaN == NaN
        else:
            assert isinstance(record, Rejected) and record.reason in case.reasons
            row = json.loads(record.raw)  # the dead letter is the row, as JSON
            if text_kind in ("string", "large_string", "dictionary"):
                assert row["text"] == value
    whole = path.read_bytes()
    cut = data.draw(st.integers(0, len(whole) - 1), label="cut")
    path.write_bytes(whole[:cut])
    (broken,) = read_file(str(path), FIELDS)  # the footer is at the end: nothing is readable
    assert (broken.reason, broken.position, broken.raw) == (UNREADABLE_FILE, 0, b"")
    corrupt = bytearray(whole)  # pages, their headers, the footer: whatever is hit
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        corrupt[data.draw(st.integers(0, len(whole) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(corrupt))
    records = list(read_file(str(path), FIELDS))
    for record in records:
        check_record(record, str(path))
    check_breaks_off_once(records)
    assert [r.position for r in records] == list(range(len(records)))


# --- any bytes, any format -----------------------------------------------------------------


@FUZZ
@given(
    content=st.one_of(st.binary(max_size=300), st.just(b"")),
    name=st.sampled_from(
        [
            "x.jsonl",
            "x.json",
            "x.tar",
            "x.parquet",
            "x.jsonl.gz",
            "x.tar.gz",
            "x.jsonl.zst",
            "x.tar.xz",
            "x.jsonl.bz2",
        ]
    ),
)
def test_any_bytes_in_any_format_read_without_raising(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    fields = TAR_FIELDS if ".tar" in name else FIELDS
    records = list(read_file(str(path), fields))
    for record in records:
        check_record(record, str(path))
    check_breaks_off_once(records)


@FUZZ
@given(
    names=st.lists(
        st.one_of(
            st.text(max_size=12),
            st.text("./\\\x00a", max_size=8),
            st.sampled_from(["..", ".", "", "/", "../../etc/passwd", "a/..", ".txt", "C:\\x.txt"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_dead_letter_tars_never_carry_an_unsafe_name(names):
    members = [_Member(name, name.encode("utf-8", "surrogatepass")) for name in names]
    raw = _tar_bytes(members)
    got = dead_letter_members(raw)
    assert [data for _, data in got] == [m.data for m in members]
    for (name, _), original in zip(got, names, strict=True):
        assert unsafe_member_name(name) is None and "/" not in name
        assert name == dead_letter_name(original)
        if "/" not in original and unsafe_member_name(original) is None:
            assert name == original  # a safe base name is kept as it is


# --- plain regression tests: what the fuzzing found --------------------------------------


def tar_with(members: list[tuple[str, bytes, str]]) -> bytes:
    return write_tar([Case(members=members)])


def test_unsafe_tar_member_names_are_bad_members(tmp_path):
    names = [
        "/etc/cron.d/x.txt",
        "../up.txt",
        "a/../../b.txt",
        "win\\evil.txt",
        "nul\x00.txt",
        "d/.txt",
        "..txt",
    ]
    members = [("ok.txt", b"fine", "file")]
    members += [(name, b"payload", "file") for name in names]
    members += [("./d/fine.txt", b"also fine", "file")]
    path = tmp_path / "unsafe.tar"
    path.write_bytes(tar_with(members))
    records = list(read_file(str(path), FieldMap(text="txt")))
    assert [getattr(r, "reason", "ok") for r in records] == ["ok", *[BAD_MEMBER] * 7, "ok"]
    assert [r.text for r in (records[0], records[-1])] == ["fine", "also fine"]
    for record, name in zip(records[1:-1], names, strict=True):
        assert record.detail.startswith(f"unsafe tar member name {name!r}: ")
        ((dead_name, data),) = dead_letter_members(record.raw)
        assert data == b"payload" and unsafe_member_name(dead_name) is None
    assert [
        unsafe_member_name(n) for n in ["/a.txt", "a/../b.txt", "a\\b.txt", "a\x00.txt", ".txt"]
    ] == [
        "an absolute path",
        "a '..' component",
        "a backslash",
        "a NUL character",
        "an empty base name",
    ]
    assert unsafe_member_name("./d/a.b.txt") is None and unsafe_member_name("..a/x.txt") is None


def test_links_in_a_tar_are_bad_members_not_dropped(tmp_path):
    path = tmp_path / "links.tar"
    path.write_bytes(
        tar_with(
            [("a.txt", b"", "symlink"), ("b.txt", b"", "hardlink"), ("c.txt", b"kept", "file")]
        )
    )
    records = list(read_file(str(path), FieldMap(text="txt")))
    assert [getattr(r, "reason", "ok") for r in records] == [BAD_MEMBER, BAD_MEMBER, "ok"]
    assert "symbolic link to '/etc/passwd'" in records[0].detail
    assert "hard link" in records[1].detail
    assert dead_letter_members(records[0].raw) == [("a.txt", b"")]  # a plain file, no link


def test_a_tar_cut_at_a_header_or_with_a_corrupt_header_breaks_off(tmp_path):
    """tarfile itself stops quietly at a cut or corrupt header after the first member: the
    samples behind it vanished without a trace before."""
    data = tar_with([(f"s{i}.txt", f"sample {i}".encode(), "file") for i in range(6)])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    offsets = [m.offset for m in members]  # each member's (PAX) header
    end = members[-1].offset_data + 512  # the last member's data, padded; then zero blocks
    cases = {
        "at_header": data[: offsets[3]],
        "in_header": data[: offsets[3] + 100],
        "no_end_block": data[:end],
        "bad_checksum": data[: offsets[3]] + b"\xff" * 512 + data[offsets[3] + 512 :],
    }
    for name, broken in cases.items():
        (tmp_path / f"{name}.tar").write_bytes(broken)
        records = list(read_file(str(tmp_path / f"{name}.tar"), FieldMap(text="txt")))
        assert records[-1].reason == UNREADABLE_FILE, name
        assert "breaks off" in records[-1].detail or "unexpected end" in records[-1].detail
        assert [r.text for r in records[:-1]] == [f"sample {i}" for i in range(len(records) - 1)]
    zst = zstandard.ZstdCompressor().compress(data)  # fsspec's zstd ends quietly when cut
    (tmp_path / "cut.tar.zst").write_bytes(zst[: len(zst) // 2])
    assert list(read_file(str(tmp_path / "cut.tar.zst"), FieldMap(text="txt")))[-1].reason == (
        UNREADABLE_FILE
    )
    empty = tar_with([])  # a real empty archive: no records, no error
    (tmp_path / "empty.tar").write_bytes(empty)
    assert list(read_file(str(tmp_path / "empty.tar"), FieldMap(text="txt"))) == []


def test_lone_surrogates_in_kept_fields_and_field_names_stay_writable():
    """A kept value `"\\ud800"` crashed the shard writer (UTF-8 cannot carry it); a field name
    with one crashed the dead-letter Parquet writer through the `missing_field` detail."""
    example = parse_json_line(
        b'{"text": "hi", "kind": ["a\\udfff", {"b": "\\ud800"}]}', FIELDS, "f", 0
    )
    assert example.meta == {"kind": ["a\ufffd", {"b": "\ufffd"}]}
    json.dumps(dict(example.meta), ensure_ascii=False).encode("utf-8")
    rejected = parse_json_line(b'{"\\ud800": 1}', FIELDS, "f", 0)
    assert rejected.reason == MISSING_FIELD and "\ufffd" in rejected.detail
    pa.table({"detail": [rejected.detail]})  # raised UnicodeEncodeError before


def test_deeply_nested_kept_fields_are_rejected_not_crashing_the_job():
    """A kept value nested ~900 deep parsed, then overflowed the stack when Beam pickled it."""
    deep = b'{"text": "t", "kind": ' + b"[" * 900 + b"]" * 900 + b"}"
    result = parse_json_line(deep, FIELDS, "f", 0)
    assert (result.reason, result.raw) == (BAD_JSON, deep) and "nests deeper" in result.detail
    ok = (
        b'{"text": "t", "kind": '
        + b"[" * 64
        + b"]" * 64
        + b', "other": '
        + b"[" * 500
        + b"]" * 500
        + b"}"
    )
    assert isinstance(parse_json_line(ok, FIELDS, "f", 0), Example)  # only kept fields count


def test_a_byte_order_mark_is_not_bad_json(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "first"}\r\n{"text": "second"}\r\n')
    first, second = read_file(str(path), FIELDS)
    assert (first.text, second.text) == ("first", "second")
    assert first.id == content_id("text", "first")


def test_image_rejections_are_the_same_every_time():
    """PIL's message named the BytesIO's memory address, so dead letters differed run to run."""
    details = {image_problem(b"not an image") for _ in range(3)}
    assert len(details) == 1 and "0x" not in details.pop()


@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.jsonl.zst", "e.tar", "e.parquet"])
def test_empty_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    records = list(read_file(str(path), FIELDS))
    if ".jsonl" in name:  # no lines, no records
        assert records == []
    else:  # not a tar or Parquet file at all
        assert [(r.reason, r.position) for r in records] == [(UNREADABLE_FILE, 0)]


def test_a_huge_text_is_too_long_with_its_raw_bytes(tmp_path):
    line = json.dumps({"text": "word " * 40_000}).encode()  # 200,000 characters
    path = tmp_path / "huge.jsonl"
    path.write_bytes(line + b"\n" + b'{"text": "small"}\n')
    huge, small = read_file(str(path), FieldMap(text="text"))  # the default --max-chars
    assert (huge.reason, huge.raw, small.text) == (TOO_LONG, line, "small")


def bad_utf8_strings(*values: bytes) -> pa.Array:
    """A string column holding bytes that are not UTF-8 (Parquet files do not check)."""
    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    buffers = [
        None,
        pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]),
        pa.py_buffer(b"".join(values)),
    ]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def test_parquet_values_without_a_python_form_are_read_row_by_row(tmp_path):
    """A string that is not UTF-8 (a damaged or hand-made file), a time in nanoseconds and a
    date out of Python's range made `to_pylist` raise out of the reader: the job died."""
    table = pa.table(
        {
            "text": bad_utf8_strings(b"fine", b"caf\xe9", b"also fine"),
            "when": pa.array([1, 2_000, 3], pa.timestamp("ns")),
            "day": pa.array([0, 1, 2**31 - 1], pa.date32()),
        }
    )
    pq.write_table(table, tmp_path / "odd.parquet")
    fields = FieldMap(text="text", keep=("when", "day"))
    records = list(read_file(str(tmp_path / "odd.parquet"), fields))
    assert [getattr(r, "reason", "ok") for r in records] == ["ok", BAD_UTF8, "ok"]
    assert records[0].meta == {"when": "1970-01-01 00:00:00.000000001", "day": "1970-01-01"}
    assert records[2].meta["day"] == "<value out of range: 2147483647>"
    assert "caf" in json.loads(records[1].raw)["text"]  # the row, as JSON, with its bytes
    for record in records:
        json.dumps(dict(getattr(record, "meta", {})), ensure_ascii=False).encode("utf-8")
    as_text = list(read_file(str(tmp_path / "odd.parquet"), FieldMap(text="when")))
    assert [r.reason for r in as_text] == [NOT_A_STRING] * 3


def test_parquet_rows_missing_from_a_damaged_column_break_the_file_off(tmp_path, monkeypatch):
    """A damaged page header can make a column shorter than the file says: `iter_batches`
    does not check, so rows vanished without a trace."""
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(5)]}), tmp_path / "t.parquet")
    iter_batches = pq.ParquetFile.iter_batches

    def short(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            yield batch.slice(0, 3)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", short)
    records = list(read_file(str(tmp_path / "t.parquet"), FieldMap(text="text")))
    assert [r.text if isinstance(r, Example) else r.reason for r in records] == [
        "row 0",
        "row 1",
        "row 2",
        UNREADABLE_FILE,
    ]
    assert records[-1].position == 3 and "3 of the 5 rows" in records[-1].detail


def test_a_parquet_footer_with_names_that_are_not_utf8_is_unreadable(tmp_path):
    pq.write_table(pa.table({"text_\u00e9": ["a"]}), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    name = "text_\u00e9".encode()
    (tmp_path / "t.parquet").write_bytes(data.replace(name, name[:-2] + b"\xff\xfe"))
    (record,) = read_file(str(tmp_path / "t.parquet"), FieldMap(text="text"))
    assert record.reason == UNREADABLE_FILE and "not UTF-8" in record.detail


# --- regressions found in review ------------------------------------------------------------


def plain_tar(texts: list[str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, text in enumerate(texts):
            info = tarfile.TarInfo(f"s{i}.txt")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return out.getvalue()


TAR_TEXT = FieldMap(text="txt")


def test_tars_run_together_or_zero_filled_break_off_instead_of_ending_early(tmp_path):
    first, second = plain_tar(["one", "two"]), plain_tar(["three"])
    (tmp_path / "joined.tar").write_bytes(first + second)  # `cat a.tar b.tar`
    records = list(read_file(str(tmp_path / "joined.tar"), TAR_TEXT))
    # The sample still being gathered when the reader notices ("two") goes with the break.
    assert [r.text for r in records if isinstance(r, Example)] == ["one"]
    assert [r.reason for r in records if isinstance(r, Rejected)] == [UNREADABLE_FILE]
    assert "data after its end" in records[-1].detail
    # A download preallocated with zeros and cut short: one block of zeros, then data again.
    whole = plain_tar(["alpha", "beta", "gamma"])
    holed = whole[:1024] + b"\0" * 512 + whole[1536:]
    (tmp_path / "holed.tar").write_bytes(holed)
    records = list(read_file(str(tmp_path / "holed.tar"), TAR_TEXT))
    assert records[-1].reason == UNREADABLE_FILE
    # Only zeros after the end (tar's own padding, record blocks) is a clean end.
    (tmp_path / "padded.tar").write_bytes(whole + b"\0" * 20480)
    assert [r.text for r in read_file(str(tmp_path / "padded.tar"), TAR_TEXT)] == [
        "alpha",
        "beta",
        "gamma",
    ]


def test_a_time_zone_python_cannot_hold_is_kept_as_text(tmp_path):
    times = pa.array([0, 1], pa.timestamp("s", tz="+99:00"))
    table = pa.table({"text": ["first", "second"], "kind": times})
    pq.write_table(table, tmp_path / "tz.parquet")
    records = list(read_file(str(tmp_path / "tz.parquet"), FIELDS))
    assert [r.text for r in records] == ["first", "second"]
    assert all(isinstance(r, Example) and isinstance(r.meta["kind"], str) for r in records)


def test_an_input_file_name_that_is_not_utf8_is_refused(tmp_path):
    import os

    from jestflow.transforms.errors import JestflowError
    from jestflow.transforms.readers import input_urls

    name = os.fsdecode(b"x\xff.jsonl")
    (tmp_path / name).write_text('{"text": "a"}\n')
    with pytest.raises(JestflowError, match="is not valid UTF-8"):
        input_urls([str(tmp_path / "*.jsonl")])
