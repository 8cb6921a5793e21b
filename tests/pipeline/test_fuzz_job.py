"""The whole curation job on fuzzed bad input (FnApiRunner, one worker, a tiny teacher): it
finishes, and it accounts for every record (inputs = selected + not selected + duplicate +
rejected), `rejected/` holding every rejected one with its reason and raw bytes, the shards the
selected examples.

What each file holds is decided here, never by jestflow's readers or parsers: an oracle reads
the bytes by the README's rules (Inputs) with `json.loads` per line, Python's `gzip` and
`tarfile`, `zstandard` and pyarrow, so a reader that skips, drops or mangles a record is caught
even when it does so consistently. Files are cut or have bytes changed; where that leaves a
record ambiguous (a changed byte inside a JSON string, a zstd literal or a Parquet value), the
oracle's reading decides. A compressed stream that fails may have handed over only part of what
it decodes (its buffers decide), so there the job must have a prefix of the oracle's records,
then the break. On an intact file the oracle must say what the test built: the oracle is
checked in turn. An example's id is `content_id` of the oracle's text."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import posixpath
import re
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from corpora import fit, samples
from helpers import sentences, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webdataset.tariterators import base_plus_ext

from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.job import run_curation
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.manifest import STATUSES, read_manifest, status_counts
from jestflow.transforms.records import FieldMap, content_id
from jestflow.transforms.selection.offline import SelectionConfig

MAX = 40  # --max-chars
FIELDS = FieldMap(text="text", keep=("kind",), max_chars=MAX)  # tar members: KEY.text, KEY.json
MAX_DEPTH = 64  # kept fields may nest at most this deep (README, Inputs)
SETTINGS = {
    "deadline": None,
    "derandomize": True,  # the same cases on every run, so CI is reproducible
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
RUNS = itertools.count()  # each example's job gets its own output folder
BOM = b"\xef\xbb\xbf"
EXAMPLE_STATUSES = ("selected", "not_selected", "duplicate")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A teacher that only has to run, not to be good: two steps."""
    root = tmp_path_factory.mktemp("fuzz-teacher")
    reference = write_jsonl(root / "ref.jsonl", ({"text": t} for t in sentences(40, 11)))
    return fit(reference, root / "teacher", "lm", FieldMap(text="text"), steps=2)


# --- the oracle: what each file holds, read without jestflow ----------------------------------


@dataclass(frozen=True)
class Want:
    """What one input record must become: an example with `text`, or a rejection for `reason`."""

    position: int
    text: str | None = None
    reason: str | None = None
    raw: bytes | None = None  # the dead letter's raw bytes, where they are the input's (JSONL)
    members: tuple[bytes, ...] | None = None  # a tar sample's member data, in order

    @property
    def outcome(self) -> tuple:
        return ("text", self.text) if self.reason is None else ("rejected", self.reason)


@dataclass(frozen=True)
class FileWant:
    records: tuple[Want, ...]
    broken: bool = False  # the file breaks off: one unreadable_file after the records read
    # False: a decoder may hand over only some of `records` before it fails (how much depends on
    # its buffers), so the job must have a prefix of them; True: all of them.
    exact: bool = True


def text_outcome(value) -> tuple[str | None, str | None]:
    """A text field's value as (text, None), or (None, the reason it is rejected)."""
    if value is None:
        return None, "missing_field"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "bad_utf8"
    if not isinstance(value, str):
        return None, "not_a_string"
    if any("\ud800" <= c <= "\udfff" for c in value):  # a lone surrogate from a JSON escape
        return None, "bad_utf8"
    if not value.strip():
        return None, "empty"
    if len(value) > MAX:
        return None, "too_long"
    return value, None


def nesting(value) -> int:
    """How deep lists and objects nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level + 1)
            stack.extend((item, level + 1) for item in value)
    return deepest


def object_outcome(record: dict) -> tuple[str | None, str | None]:
    """A decoded object's outcome: its text, then its kept field (too deep is bad JSON)."""
    text, reason = text_outcome(record.get("text"))
    if reason is None and nesting(record.get("kind")) > MAX_DEPTH:
        return None, "bad_json"
    return text, reason


def line_want(position: int, raw: bytes) -> Want:
    """One JSONL line (a BOM may lead it): UTF-8, then JSON, then an object."""
    try:
        line = (raw[len(BOM) :] if raw.startswith(BOM) else raw).decode("utf-8")
    except UnicodeDecodeError:
        return Want(position, reason="bad_utf8", raw=raw)
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return Want(position, reason="bad_json", raw=raw)
    if not isinstance(obj, dict):
        return Want(position, reason="not_an_object", raw=raw)
    text, reason = object_outcome(obj)
    return Want(position, text, reason, raw=raw)


def jsonl_wants(content: bytes, broken: bool, exact: bool) -> FileWant:
    """Lines are records, numbered from 0; blank ones (ASCII whitespace) are none. If the stream
    broke off, its unterminated last line was never read whole."""
    pieces = content.split(b"\n")
    if broken:
        pieces.pop()
    lines = (line_want(n, p.rstrip(b"\r")) for n, p in enumerate(pieces) if p.strip())
    return FileWant(tuple(lines), broken, exact)


class Trickle(io.BytesIO):
    """A file that hands over at most two bytes a read (gzip reads its magic number in one), so a
    decoder yields all it can before it fails."""

    def read(self, size=-1):
        return super().read(2 if size < 0 else min(size, 2))


def gunzip(data: bytes) -> tuple[bytes, bool]:
    """What a gzip stream decodes to before it fails, and whether it fails."""
    out = []
    try:
        with gzip.GzipFile(fileobj=Trickle(data)) as f:
            while chunk := f.read1(1 << 16):
                out.append(chunk)
    except (OSError, EOFError, zlib.error):
        return b"".join(out), True
    return b"".join(out), False


def unzstd(data: bytes) -> tuple[bytes, bool]:
    """What a zstd stream (frames one after another) decodes to, and whether it breaks off:
    fails, ends inside a frame, or has a frame of another size than its header says (which
    zstd notices only when it is given the frame whole)."""
    out, frame, start, size = [], None, 0, 0
    try:
        for i in range(len(data)):
            if frame is None:
                frame, start, size = zstandard.ZstdDecompressor().decompressobj(), i, 0
            out.append(frame.decompress(data[i : i + 1]))
            size += len(out[-1])
            if frame.eof:
                said = zstandard.get_frame_parameters(data[start : i + 1]).content_size
                if said not in (size, zstandard.CONTENTSIZE_UNKNOWN):
                    return b"".join(out), True
                frame = None
    except zstandard.ZstdError:
        return b"".join(out), True
    return b"".join(out), frame is not None


WDS_META = re.compile(r"__[^/]*__($|/)")  # WebDataset's __index__ and __meta__/: not samples


def unsafe_name(name: str) -> bool:
    """Absolute, a `..` component, a backslash or NUL, or an empty base name (README)."""
    return (
        name.startswith("/")
        or ".." in name.split("/")
        or "\\" in name
        or "\x00" in name
        or not posixpath.basename(name).split(".", 1)[0]
    )


def sample_want(position: int, group: list[tuple[str, bytes | None]]) -> Want:
    """One WebDataset sample: members sharing a key, `{extension: data}`; `.json` the kept fields."""
    data = tuple(d or b"" for _, d in group)
    extensions = [base_plus_ext(name)[1] for name, _ in group]
    if (
        any(unsafe_name(name) or d is None for name, d in group)  # None: not a regular file
        or None in extensions
        or len({e.lower() for e in extensions}) < len(extensions)
    ):
        return Want(position, reason="bad_member", members=data)
    record = {e.lower(): d for e, (_, d) in zip(extensions, group, strict=True)}
    text, reason = text_outcome(record.get("text"))
    try:
        kept = json.loads(record.get("json", b"null"))
    except (ValueError, RecursionError):
        kept = None
    if reason is None and isinstance(kept, dict) and nesting(kept.get("kind")) > MAX_DEPTH:
        text, reason = None, "bad_json"
    return Want(position, text, reason, members=data)


def tar_wants(data: bytes) -> FileWant:
    """Python's tarfile lists the members; the archive is whole if it stops at a block of zeros
    with only zeros after. If not, the sample being gathered goes with the break."""
    members, broken = [], True
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
            for info in tar:
                if not (info.isdir() or WDS_META.match(info.name)):
                    read = tar.extractfile(info).read() if info.isreg() else None
                    members.append((info.name, read))
            end = tar.offset  # where the header that stopped it starts
        broken = len(data) < end + tarfile.BLOCKSIZE or bool(data[end:].strip(b"\0"))
    except (tarfile.TarError, OSError, EOFError):
        pass
    keys = [base_plus_ext(name)[0] for name, _ in members]
    groups = [
        [member for _, member in run]
        for _, run in itertools.groupby(zip(keys, members, strict=True), key=lambda x: x[0])
    ]
    if broken and groups:
        groups.pop()
    return FileWant(tuple(sample_want(i, g) for i, g in enumerate(groups)), broken)


NOT_TEXT = object()  # a Parquet value of a type that is no text


def text_cells(batch: pa.RecordBatch) -> list:
    """The text column's values: bytes for strings and binaries (Parquet does not check that a
    string is UTF-8), None where null or absent."""
    if "text" not in batch.schema.names:
        return [None] * batch.num_rows
    column = batch.column("text")
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    t = pa.types
    if any(
        f(column.type) for f in (t.is_string, t.is_large_string, t.is_binary, t.is_large_binary)
    ):
        return column.cast(pa.large_binary()).to_pylist()
    return [NOT_TEXT if valid else None for valid in column.is_valid().to_pylist()]


def parquet_wants(data: bytes) -> FileWant:
    """pyarrow reads the rows; a file that fails to, or has other than the rows its footer
    counts, is broken after the rows read."""
    wants: list[Want] = []
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        names = parquet.schema_arrow.names
        columns = [c for c in ("text", "kind") if c in names] or None
        for batch in parquet.iter_batches(batch_size=1024, columns=columns):
            for value in text_cells(batch):
                wants.append(Want(len(wants), *text_outcome(value)))
        broken = len(wants) != parquet.metadata.num_rows
    except Exception:  # any failure to read the file is its breaking off
        broken = True
    return FileWant(tuple(wants), broken)


def expect(name: str, data: bytes) -> FileWant:
    """What the file holds, by the oracle."""
    if name.endswith(".tar"):
        return tar_wants(data)
    if name.endswith(".parquet"):
        return parquet_wants(data)
    decode = {".gz": gunzip, ".zst": unzstd}.get(posixpath.splitext(name)[1])
    content, broken = decode(data) if decode else (data, False)
    return jsonl_wants(content, broken, exact=decode is None)


# --- inputs, each with what it was built to hold -----------------------------------------------

ANY = ("any",)  # random bytes: whatever the oracle says
BLANK = ("blank",)  # a blank line: no record


def built(t: str) -> tuple:
    return ("rejected", "empty") if not t.strip() else ("text", t)


def rejected(reason: str) -> tuple:
    return ("rejected", reason)


text = st.one_of(
    st.text(min_size=1, max_size=30), st.sampled_from(["\x00", "\ufeffhi", "a\u2028b"])
)
kind = st.one_of(st.none(), st.text(max_size=4), st.integers(), st.just("\ud800"))
line = st.one_of(
    st.builds(lambda t, k: (json.dumps({"text": t, "kind": k}).encode(), built(t)), text, kind),
    st.builds(lambda t: (BOM + json.dumps({"text": t}).encode(), built(t)), text),
    st.sampled_from(
        [
            (b'{"text": "\\ud800"}', rejected("bad_utf8")),  # lone surrogate
            (b'{"text": null}', rejected("missing_field")),
            (b'{"\\udc00": 1}', rejected("missing_field")),  # a name UTF-8 cannot carry
            (b'{"text": 7}', rejected("not_a_string")),
            (b'{"text": {"nested": ["x"]}}', rejected("not_a_string")),
            (b'{"text": "   "}', rejected("empty")),
            (b'{"text": "' + b"y" * 60 + b'"}', rejected("too_long")),
            (b'{"text": "caf\xe9"}', rejected("bad_utf8")),  # latin-1
            (b'{"text": "cut', rejected("bad_json")),
            (b"[1, 2]", rejected("not_an_object")),
            (b'{"text": "deep", "kind": ' + b"[" * 80 + b"]" * 80 + b"}", rejected("bad_json")),
            (b"\x00\xff garbage", rejected("bad_utf8")),
            (b"", BLANK),
        ]
    ),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b).map(lambda b: (b, ANY)),
)
GOOD_NAMES = ("{k}.text", "{k}.TEXT")
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
def jsonl_input(draw) -> tuple[bytes, list[tuple]]:
    lines = draw(st.lists(line, max_size=10))
    data = b"".join(x + draw(st.sampled_from([b"\n", b"\r\n"])) for x, _ in lines)
    return data, [outcome for _, outcome in lines]


@st.composite
def tar_input(draw) -> tuple[bytes, list[tuple]]:
    out, outcomes, keyless = io.BytesIO(), [], False
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(draw(st.integers(0, 6))):
            pattern = draw(member_name)
            data, outcome = draw(
                st.one_of(
                    text.map(lambda t: (t.encode(), built(t))),
                    st.binary(max_size=8).map(lambda b: (b, ANY)),
                )
            )
            members = [(pattern.format(k=f"s{i}"), data)]
            if draw(st.booleans()):
                members.append((f"s{i}.json", json.dumps({"kind": draw(kind)}).encode()))
            if pattern in GOOD_NAMES:
                outcomes.append(outcome)
            elif pattern == "{k}.text.text":  # the extension is text.text
                outcomes.append(rejected("missing_field"))
            elif not (pattern == "{k}" and keyless):  # (names without a key run together)
                # An unsafe name or none: its own sample; the .json, another without text.
                outcomes.append(rejected("bad_member"))
            if len(members) > 1 and pattern not in (*GOOD_NAMES, "{k}.text.text"):
                outcomes.append(rejected("missing_field"))
            keyless = pattern == "{k}" and len(members) == 1
            for member, data in members:
                info = tarfile.TarInfo(member)
                info.pax_headers = {"path": member}  # keeps a NUL
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        end = tar.offset + 2 * tarfile.BLOCKSIZE  # the end-of-archive blocks, not a record's pad
    return out.getvalue()[:end], outcomes


@st.composite
def parquet_input(draw) -> tuple[bytes, list[tuple]]:
    n = draw(st.integers(0, 6))
    column = draw(st.sampled_from(["string", "int", "list", "binary", "null"]))
    if column == "string":
        values = draw(st.lists(st.one_of(st.none(), text), min_size=n, max_size=n))
        array = pa.array(values, pa.string())
        outcomes = [rejected("missing_field") if v is None else built(v) for v in values]
    else:
        array, outcome = {
            "int": (pa.array(range(n), pa.int64()), "not_a_string"),
            "list": (
                pa.array([[f"x{i}"] for i in range(n)], pa.list_(pa.string())),
                "not_a_string",
            ),
            "binary": (pa.array([b"\xff" * i for i in range(n)], pa.binary()), "bad_utf8"),
            "null": (pa.array([None] * n, pa.null()), "missing_field"),
        }[column]
        outcomes = [rejected(outcome)] * n
        if column == "binary" and n:
            outcomes[0] = rejected("empty")  # b"": no text
    name = draw(st.sampled_from(["text", "body"]))  # "body": the text column is missing
    if name == "body":
        outcomes = [rejected("missing_field")] * n
    table = pa.table({name: array, "kind": pa.array(range(n), pa.timestamp("ns"))})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue(), outcomes


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


COMPRESS = {
    ".gz": lambda data: gzip.compress(data, mtime=0),
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


@st.composite
def job_inputs(draw) -> dict[str, tuple[bytes, list[tuple] | None]]:
    """One to five input files — JSONL plain, .gz and .zst, a tar, a Parquet file — each with
    what it was built to hold, or None if damaged (a job costs about the same for more files)."""
    files = {}
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst"):
        if draw(st.booleans()):
            data, outcomes = draw(jsonl_input())
            compress = COMPRESS.get(posixpath.splitext(name)[1], lambda data: data)
            files[name] = (compress(data), outcomes)
    if draw(st.booleans()):
        files["d.tar"] = draw(tar_input())
    if draw(st.booleans()) or not files:
        files["e.parquet"] = draw(parquet_input())
    inputs = {}
    for name, (data, outcomes) in files.items():
        bad = damaged(draw, data)
        inputs[name] = (bad, outcomes if bad == data else None)
    return inputs


def check_oracle(want: FileWant, outcomes: list[tuple]) -> None:
    """On an intact file the oracle reads what was built: the test's own check of the oracle."""
    got = {w.position: w.outcome for w in want.records}
    assert not want.broken, "the oracle calls an intact file broken"
    for position, outcome in enumerate(outcomes):
        if outcome == BLANK:
            assert position not in got, f"the oracle reads blank line {position} as a record"
        elif outcome != ANY:
            assert got.get(position) == outcome, f"oracle: record {position} is {got.get(position)}"
    assert set(got) <= set(range(len(outcomes))), "the oracle reads records never written"


# --- the job -----------------------------------------------------------------------------------


def run_job(root, files: dict[str, tuple[bytes, list[tuple] | None]], teacher: str, keep=0.5):
    """Run the job on the files; return its output, stats, the oracle's reading of each file and
    the error if the run failed (as it must when no record could be used)."""
    folder = root / f"run-{next(RUNS)}"
    folder.mkdir()
    wants = {}
    for name, (data, outcomes) in files.items():
        (folder / name).write_bytes(data)
        wants[str(folder / name)] = want = expect(name, data)
        if outcomes is not None:
            check_oracle(want, outcomes)
    config = CurateConfig(
        inputs=tuple(sorted(wants)),
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
    try:
        return folder / "out", run_curation(config), wants, None
    except JestflowError as e:  # its stats and dead letters are still written
        stats = json.loads((folder / "out" / "stats.json").read_text())
        return folder / "out", stats, wants, e


def match_manifest(manifest: list[dict], wants: dict[str, FileWant]) -> dict[tuple, Want]:
    """Each file's manifest rows are the oracle's records, in order, at their positions (an
    example by its content id, a rejection by its reason), then one unreadable_file if the file
    breaks off; nothing else. Returns what each row is, by (source, position)."""
    rows: dict[str, list[dict]] = {}
    for row in manifest:
        rows.setdefault(row["source"], []).append(row)
    assert set(rows) <= set(wants), f"manifest rows for files never read: {set(rows) - set(wants)}"
    matched = {}
    for url, want in wants.items():
        got = sorted(rows.get(url, []), key=lambda row: row["position"])
        records = list(want.records)
        name = posixpath.basename(url)
        if want.broken:
            last = (got[-1]["position"], got[-1]["status"], got[-1]["reason"]) if got else None
            assert last and last[2] == "unreadable_file", f"{name} breaks off; its last row: {last}"
        body = got[:-1] if want.broken else got
        if want.broken and not want.exact:
            records = records[: len(body)]  # what the decoder handed over before it failed
        assert [row["position"] for row in body] == [w.position for w in records], (
            f"{name}: the manifest has records {[r['position'] for r in body]}, the file "
            f"{[w.position for w in want.records]}{' then a break' if want.broken else ''}"
        )
        if want.broken:
            end = records[-1].position + 1 if records else 0
            records.append(Want(end, reason="unreadable_file", raw=b""))
        for row, w in zip(got, records, strict=True):
            if w.reason is None:
                assert row["status"] in EXAMPLE_STATUSES, (
                    f"{name} {w.position}: {row['status']} {row['reason']}, not {w.text!r}"
                )
                assert row["id"] == content_id("text", w.text), f"{name} {w.position}: id of {w}"
            else:
                seen = (row["status"], row["reason"], row["position"])
                assert seen == ("rejected", w.reason, w.position), (
                    f"{name}: {seen}, not rejected {w.reason} at {w.position}"
                )
            matched[(url, w.position)] = w
    return matched


def check_dead_letters(out, matched: dict[tuple, Want]) -> None:
    """`rejected/` holds every rejected record once, with its reason, a detail and its raw bytes:
    a JSONL line as it was, a tar sample as a tar of its members (safe names), nothing for a
    break."""
    letters = [] if not (out / "rejected").exists() else pq.read_table(out / "rejected").to_pylist()
    assert sorted((d["source"], d["position"], d["reason"]) for d in letters) == sorted(
        (*place, w.reason) for place, w in matched.items() if w.reason
    ), "the dead letters are not the rejected records"
    for letter in letters:
        want = matched[(letter["source"], letter["position"])]
        assert letter["detail"], f"dead letter without a detail: {letter}"
        if want.raw is not None:
            assert letter["raw"] == want.raw, f"dead letter {want} keeps {letter['raw']!r}"
        if want.members is not None:
            with tarfile.open(fileobj=io.BytesIO(letter["raw"])) as tar:
                members = tar.getmembers()
                assert not any(unsafe_name(m.name) for m in members), [m.name for m in members]
                assert [tar.extractfile(m).read() for m in members] == list(want.members)


def check_duplicates(manifest: list[dict], wants: dict[str, FileWant]) -> None:
    """A removed copy names a kept one, which comes before it in input order and was scored."""
    by_key = {row["key"]: row for row in manifest if row["key"]}
    order = {url: i for i, url in enumerate(sorted(wants))}
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


def check_accounts(out, stats, wants: dict[str, FileWant], failed) -> dict[str, int]:
    """The job's outputs hold exactly the records the oracle found."""
    table = read_manifest(str(out / "manifest"))  # an empty part when there were no records
    manifest, counts = table.to_pylist(), status_counts(table)
    matched = match_manifest(manifest, wants)
    reasons = Counter(w.reason for w in matched.values() if w.reason)
    assert counts["inputs"] == len(manifest) == len(matched), "a record twice, or lost"
    assert counts["inputs"] == sum(counts[status] for status in STATUSES)
    assert counts["rejected"] == sum(reasons.values())
    assert stats["counts"] == counts
    assert stats["rejected"] == dict(reasons), f"stats count {stats['rejected']}, not {reasons}"
    check_dead_letters(out, matched)
    check_duplicates(manifest, wants)

    shards = sorted((out / "shards").glob("*.tar")) if (out / "shards").exists() else []
    written = [s for shard in shards for s in samples(shard)]
    assert len(written) == counts["selected"] == stats["shards"]["samples"]
    by_key = {row["key"]: matched[(row["source"], row["position"])] for row in manifest}
    for sample in written:
        assert sample["txt"] == by_key[sample["__key__"]].text, "a shard's text is not the input's"
    # Complete unless no record could be used (none read, or all rejected): then the run fails.
    usable = counts["inputs"] - counts["rejected"]
    assert (failed is None) == bool(usable) == (out / "_SUCCESS").exists(), (usable, failed)
    if failed is not None:
        why = r"none of the .* records could be used" if counts["inputs"] else "no records in"
        assert re.search(why, str(failed)), failed
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
    out, stats, wants, failed = run_job(
        tmp_path, {name: (data, None) for name, data in files.items()}, teacher, keep=1.0
    )
    counts = check_accounts(out, stats, wants, failed)
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


def flipped(data: bytes, *changes: tuple[int, int]) -> bytes:
    """`data` with the byte at each offset (from the end if negative) set to a value."""
    out = bytearray(data)
    for offset, value in changes:
        out[offset] = value
    return bytes(out)


def damaged_files() -> dict[str, bytes]:
    """Damaged copies of each format, where a reader that loses, skips or misreads a record
    would show."""
    lines = [json.dumps({"text": f"line {i}"}).encode() for i in range(4)]
    jsonl = b"\n".join([lines[0], b'{"text": "bad', lines[1], b"", lines[2], lines[3], b""])
    gz = gzip.compress(jsonl, mtime=0)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        for name, data in [("a.text", b"first sample"), ("b.text", b"second"), ("c.TEXT", b"3")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    tar = tar.getvalue()
    parquet = io.BytesIO()
    table = pa.table({"text": ["row one", "row two", "row three"]})
    pq.write_table(table, parquet, compression="none")
    parquet = parquet.getvalue()
    # The data page header's value count (thrift: field 1, i32, zigzag 3 = 6), made 1.
    page = pq.ParquetFile(io.BytesIO(parquet)).metadata.row_group(0).column(0).data_page_offset
    count = parquet.index(b"\x15\x06", page) + 1
    return {
        "a.jsonl": jsonl[:-4],  # cut inside the last line: still a record (bad JSON)
        "b.jsonl": jsonl,  # a bad line, then good ones
        "c.jsonl.gz": flipped(gz, (-6, 0)),  # the checksum: the lines, then the break
        "d.jsonl.gz": gz[:-3],  # cut in the trailer
        "e.jsonl.zst": flipped(zstandard.ZstdCompressor().compress(jsonl), (20, ord("X"))),
        "f.tar": flipped(tar, (tar.index(b"second"), 0xFF)),
        "g.parquet": flipped(parquet, (parquet.index(b"row two") + 4, ord("2"))),
        "h.parquet": flipped(parquet, (count, 2)),
    }


def test_a_job_on_damaged_files_accounts_for_what_the_oracle_reads(teacher, tmp_path):
    """One job on `damaged_files`: a JSONL file cut inside its last line (no newline), a bad
    line followed by good ones, gzip files with a changed checksum or cut short, a zstd frame
    with a changed literal (valid JSON, other texts), a tar with a changed byte in a member and
    an upper-case extension, Parquet files with a changed byte in a value or a column shorter
    than the footer's row count. What each holds is the oracle's reading, pinned here."""
    files = {name: (data, None) for name, data in damaged_files().items()}
    out, stats, wants, failed = run_job(tmp_path, files, teacher, keep=1.0)
    read = {posixpath.basename(url): want for url, want in wants.items()}
    assert [w.outcome for w in read["a.jsonl"].records] == [
        ("text", "line 0"),
        ("rejected", "bad_json"),
        ("text", "line 1"),
        ("text", "line 2"),
        ("rejected", "bad_json"),
    ], "the oracle misreads the cut file"
    assert read["c.jsonl.gz"].broken and len(read["c.jsonl.gz"].records) == 5
    assert read["d.jsonl.gz"].broken
    texts = [w.text for w in read["e.jsonl.zst"].records if w.text]
    assert texts == ["Xine 0", "Xine 1", "Xine 2", "Xine 3"], "a literal all lines refer to"
    assert [w.outcome for w in read["f.tar"].records] == [
        ("text", "first sample"),
        ("rejected", "bad_utf8"),
        ("text", "3"),
    ]
    assert [w.text for w in read["g.parquet"].records] == ["row one", "row 2wo", "row three"]
    assert read["h.parquet"].broken and [w.text for w in read["h.parquet"].records] == ["row one"]
    check_accounts(out, stats, wants, failed)


@settings(max_examples=13, **SETTINGS)
@given(files=job_inputs())
def test_the_job_finishes_and_accounts_for_every_record(teacher, tmp_path, files):
    check_accounts(*run_job(tmp_path, files, teacher))


@pytest.mark.slow
@settings(max_examples=30, **SETTINGS)  # more than twice the default run's; CI has 20 minutes
@given(files=job_inputs())
def test_the_job_finishes_and_accounts_for_every_record_at_length(teacher, tmp_path, files):
    check_accounts(*run_job(tmp_path, files, teacher))
