"""Reading raw input files through fsspec: JSONL (plain, .gz, .zst), Parquet and WebDataset tars.

Every record of every file comes out as an `Example` or a `Rejected`; a file that breaks off
(truncated gzip, corrupt tar) ends in one `Rejected` with reason `unreadable_file`. Tar members
are read into memory, never extracted; a sample with an unsafe member name (absolute, `..`,
backslash, NUL, no base name) or a member that is not a regular file is a `bad_member`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import lzma
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from webdataset.tariterators import base_plus_ext

from .errors import JestflowError
from .paths import expand_urls
from .records import (
    BAD_MEMBER,
    UNREADABLE_FILE,
    Example,
    FieldMap,
    Rejected,
    parse_json_line,
    parse_mapping,
)

FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".tar": "tar",
}
COMPRESSIONS = (".gz", ".zst", ".bz2", ".xz")
# What a stream can raise when the file itself is broken, rather than one record.
READ_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zstandard.ZstdError,
    tarfile.TarError,
    pa.ArrowException,
)


def file_format(url: str) -> str:
    """`jsonl`, `parquet` or `tar`, from the file name (compression suffixes allowed)."""
    name = url.lower()
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    known = ", ".join(sorted(FORMATS))
    raise JestflowError(
        f"unknown input format for {url!r}: expected one of {known} "
        "(optionally compressed: .gz, .zst, .bz2, .xz)"
    )


def input_urls(patterns: Sequence[str]) -> list[str]:
    """The input files the patterns name (`paths.expand_urls`), each of a known format and with
    a UTF-8 name (it is every record's source in the manifest)."""
    urls = expand_urls(patterns, what="input file")
    for url in urls:
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise JestflowError(
                f"input file name {url!r} is not valid UTF-8 (it would be every record's "
                "source in the manifest); rename it"
            ) from None
        file_format(url)
    return urls


def read_file(url: str, fields: FieldMap) -> Iterator[Example | Rejected]:
    """Every record of one file, parsed; each example with its `occurrence` (the earlier
    records of the file with the same id)."""
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "tar": _read_tar}[file_format(url)]
    # A truncated zstd stream just ends: JSONL decompresses it itself (`_zstd_chunks`) to notice;
    # tarfile notices a cut archive on its own.
    strict_zstd = reader is _read_jsonl and url.lower().endswith(".zst")
    compression = None if strict_zstd else "infer"
    position = 0  # of the next record, for the rejection if the file breaks off
    occurrences = _Occurrences()
    try:
        with fsspec.open(url, "rb", compression=compression) as f:
            for item in reader(f, url, fields):
                yield occurrences.count(item)
                position = item.position + 1
    except READ_ERRORS as e:
        yield Rejected(
            source=url,
            position=position,
            reason=UNREADABLE_FILE,
            detail=f"{type(e).__name__}: {e}",
            raw=b"",
        )


class _Occurrences:
    """Copies within one file: a set of 64-bit id prefixes (about 60 bytes a record), and a count
    for the ids seen more than once."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.copies: dict[str, int] = {}

    def count(self, item: Example | Rejected) -> Example | Rejected:
        if isinstance(item, Rejected):
            return item
        prefix = int(item.id[:16], 16)
        if prefix not in self.seen:
            self.seen.add(prefix)
            return item
        # (an id whose prefix another id had counts from 1: its keys stay unique all the same)
        n = self.copies[item.id] = self.copies.get(item.id, 0) + 1
        return dataclasses.replace(item, occurrence=n)


def read_examples(patterns: Sequence[str], fields: FieldMap) -> Iterator[Example | Rejected]:
    """Every record of every file matched by `patterns`, in a stable order."""
    for url in input_urls(patterns):
        yield from read_file(url, fields)


def _read_jsonl(f, url: str, fields: FieldMap) -> Iterator[Example | Rejected]:
    chunks = _zstd_chunks(f) if url.lower().endswith(".zst") else _chunks(f)
    for position, line in _lines(chunks):
        yield parse_json_line(line, fields, url, position)


def _chunks(f, size: int = 1 << 16) -> Iterator[bytes]:
    """Decompressed chunks, with `read1` where there is one, so that the data before a
    truncation is still delivered."""
    read = getattr(f, "read1", f.read)
    while chunk := read(size):
        yield chunk


def _zstd_chunks(f, size: int = 1 << 16) -> Iterator[bytes]:
    """Decompressed chunks of a (multi-frame) zstd stream; EOFError if the last frame is cut."""
    decompressor = zstandard.ZstdDecompressor()
    frame, pending = decompressor.decompressobj(), False
    while data := f.read(size):
        while data:
            yield frame.decompress(data)
            pending, data = not frame.eof, b""
            if frame.eof:  # the next frame starts in what this one did not use
                data, frame = frame.unused_data, decompressor.decompressobj()
    if pending:
        raise EOFError("zstd stream ended in the middle of a frame")


def _lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(0-based line number, line) of the non-blank lines (blank lines are not records). Works
    on chunks, as some decompressors cannot read line by line."""
    rest, number = b"", 0
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                yield number, line.rstrip(b"\r")
            number += 1
    if rest.strip():
        yield number, rest.rstrip(b"\r")


def _read_parquet(f, url: str, fields: FieldMap) -> Iterator[Example | Rejected]:
    try:
        parquet = pq.ParquetFile(f)
        names = set(parquet.schema_arrow.names)
    except UnicodeDecodeError as e:  # a damaged footer
        raise pa.ArrowInvalid(f"the file's metadata is not UTF-8: {e}") from e
    wanted = [c for c in (*fields.fields, *fields.keep) if c in names]
    position = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=wanted or None):
        for row in _rows(batch):
            raw = json.dumps(row, default=repr, ensure_ascii=False).encode("utf-8", "replace")
            yield parse_mapping(row, fields, url, position, raw)
            position += 1
    promised = parquet.metadata.num_rows
    if position != promised:  # iter_batches does not check a damaged column's length
        raise pa.ArrowInvalid(f"read {position} of the {promised} rows the file's metadata counts")


@dataclasses.dataclass(frozen=True)
class ArrowValue:
    """A Parquet value Python has no value for (a time in nanoseconds or out of range), as
    Arrow's text for it: a kept field keeps the text, a text field rejects it (not a string)."""

    text: str

    def __str__(self) -> str:
        return self.text


def _rows(batch: pa.RecordBatch) -> list[dict]:
    try:
        return batch.to_pylist()
    except Exception:  # some value has no Python form (bad time zone, range…): cell by cell
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        return [
            {name: _cell(column.slice(i, 1)) for name, column in columns.items()}
            for i in range(batch.num_rows)
        ]


def _cell(array: pa.Array):
    """The one value of `array`, whatever the file holds. Parquet does not check that strings
    are UTF-8: such a string comes out as its bytes (a text field rejects them as bad_utf8)."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    try:
        return array[0].as_py()
    except Exception:  # ValueError, OverflowError, an unknown time zone (KeyError) …
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            return array.cast(pa.large_binary())[0].as_py()
        return ArrowValue(array.to_string(skip_new_lines=True)[1:-1])


def _read_tar(f, url: str, fields: FieldMap) -> Iterator[Example | Rejected]:
    """WebDataset samples: consecutive members sharing a key, read as `{extension: bytes}`."""
    for position, members in enumerate(_tar_samples(_tar_members(f))):
        problem = _member_problem(members)
        if problem:
            raw = _tar_bytes(members)
            yield Rejected(
                source=url, position=position, reason=BAD_MEMBER, detail=problem, raw=raw
            )
            continue
        record: dict = {base_plus_ext(m.name)[1].lower(): m.data for m in members}
        if fields.keep and "json" in record:
            with contextlib.suppress(ValueError, AttributeError, RecursionError):
                kept = json.loads(record["json"])
                record.update({k: v for k, v in kept.items() if k in fields.keep})
        result = parse_mapping(record, fields, url, position, b"")
        if isinstance(result, Rejected):  # the dead letter keeps the whole sample, as a tar
            result = dataclasses.replace(result, raw=_tar_bytes(members))
        yield result


class _Member(NamedTuple):
    name: str
    data: bytes
    problem: str | None = None  # why it cannot be part of a sample (a link, a device …)


# WebDataset's archive metadata (`__index__`, `__meta__/…`): not samples, skipped as webdataset does.
_WDS_META = re.compile(r"__[^/]*__($|/)")


class _TarInfo(tarfile.TarInfo):
    """Notes on the archive why its member list ended. tarfile stops quietly, as if the archive
    ended there, at a header that is cut, missing or corrupt after the first member; only a
    zero block is the archive's real end."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as e:
            tar.jestflow_end = e  # the outermost call (a PAX header reads the next) sets it last
            raise


def _tar_members(f) -> Iterator[_Member]:
    """The members of a tar stream, in order, read into memory (never extracted); directories
    and WebDataset metadata are skipped. Raises `tarfile.ReadError` if the archive breaks off."""
    with tarfile.open(fileobj=f, mode="r|*", tarinfo=_TarInfo) as tar:
        for info in tar:
            tar.members = []  # a stream: keep no list of every header
            if info.isdir() or _WDS_META.match(info.name):
                continue
            if info.isreg():
                yield _Member(info.name, tar.extractfile(info).read())
            else:
                kind = (
                    f"a symbolic link to {info.linkname!r}"
                    if info.issym()
                    else f"a hard link to {info.linkname!r}"
                    if info.islnk()
                    else f"of tar type {info.type!r}"
                )
                yield _Member(info.name, b"", f"tar member {info.name!r} is {kind}, not a file")
        end = getattr(tar, "jestflow_end", None)
        if not isinstance(end, tarfile.EOFHeaderError):
            raise tarfile.ReadError(
                f"tar archive breaks off at byte {tar.offset}: {end or 'no end-of-archive block'}"
            )
        # tarfile stops at the first zero block; only zeros may follow it (two tars run together,
        # or a preallocated download cut short, would otherwise end the file without a word).
        while chunk := tar.fileobj.read(1 << 20):
            if chunk.strip(b"\0"):
                raise tarfile.ReadError(
                    f"tar archive has data after its end at byte {tar.offset} "
                    "(archives run together, or a damaged block of zeros)"
                )


def _tar_samples(members: Iterable[_Member]) -> Iterator[list[_Member]]:
    """Members grouped by key (the name up to the first dot of its base name), in order."""
    sample: list[_Member] = []
    key = None
    for member in members:
        prefix = base_plus_ext(member.name)[0]
        if sample and prefix != key:
            yield sample
            sample = []
        key = prefix
        sample.append(member)
    if sample:
        yield sample


def unsafe_member_name(name: str) -> str | None:
    """Why a tar member name is unsafe, or None: an absolute path, a `..` component, a backslash
    or NUL (another system's separator, a C string's end), or an empty base name (`.txt`)."""
    if name.startswith("/"):
        return "an absolute path"
    if ".." in name.split("/"):
        return "a '..' component"
    if "\\" in name:
        return "a backslash"
    if "\x00" in name:
        return "a NUL character"
    if not posixpath.basename(name).split(".", 1)[0]:
        return "an empty base name"
    return None


def _member_problem(members: list[_Member]) -> str | None:
    """Why a group of tar members is not one sample: an unsafe name, a member that is not a
    file, names without an extension, or twice the same extension."""
    for member in members:
        unsafe = unsafe_member_name(member.name)
        if unsafe:
            return f"unsafe tar member name {member.name!r}: {unsafe}"
    for member in members:
        if member.problem:
            return member.problem
    suffixes = [base_plus_ext(m.name)[1] for m in members]
    if None in suffixes:
        return f"tar member {members[suffixes.index(None)].name!r} has no extension"
    lowered = [suffix.lower() for suffix in suffixes]
    duplicated = sorted({s for s in lowered if lowered.count(s) > 1})
    if duplicated:
        return f"tar sample {members[0].name!r} has the member .{duplicated[0]} twice"
    return None


def dead_letter_name(name: str) -> str:
    """A member's name in a dead-letter tar: its base name, made safe (never a path)."""
    base = posixpath.basename(name.replace("\\", "/").replace("\x00", "/"))
    return f"member{base}" if unsafe_member_name(base) else base


def _tar_bytes(members: list[_Member]) -> bytes:
    """A sample's members as a small tar of regular files with safe base names, for the
    dead-letter record."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(dead_letter_name(member.name))
            info.size = len(member.data)
            tar.addfile(info, io.BytesIO(member.data))
    return out.getvalue()
