"""Reading raw input files through fsspec: JSONL (plain, .gz, .zst), Parquet and WebDataset tars.

Every record of every file comes out as an `Example` or a `Rejected`; a file that breaks off
(truncated gzip, corrupt tar) ends in one `Rejected` with reason `unreadable_file`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import lzma
import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from .errors import JestflowError
from .paths import filesystem
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


def expand_urls(patterns: Sequence[str]) -> list[str]:
    """Expand fsspec URLs and globs into a sorted list of files; every pattern must match."""
    if not patterns:
        raise JestflowError("no input given")
    urls: list[str] = []
    for pattern in patterns:
        fs, path = filesystem(pattern)
        matches = fs.glob(path) if glob.has_magic(path) else [path]
        files = sorted(p for p in matches if fs.isfile(p))
        if not files:
            raise JestflowError(f"no input file matches {pattern!r}")
        for path in files:
            url = fs.unstrip_protocol(path) if "://" in pattern else path
            file_format(url)
            urls.append(url)
    return sorted(dict.fromkeys(urls))


def read_file(url: str, fields: FieldMap) -> Iterator[Example | Rejected]:
    """Every record of one file, parsed."""
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "tar": _read_tar}[file_format(url)]
    # A truncated zstd stream just ends: JSONL decompresses it itself (`_zstd_chunks`) to notice;
    # tarfile notices a cut archive on its own.
    strict_zstd = reader is _read_jsonl and url.lower().endswith(".zst")
    compression = None if strict_zstd else "infer"
    position = 0  # of the next record, for the rejection if the file breaks off
    try:
        with fsspec.open(url, "rb", compression=compression) as f:
            for item in reader(f, url, fields):
                yield item
                position = item.position + 1
    except READ_ERRORS as e:
        yield Rejected(
            source=url,
            position=position,
            reason=UNREADABLE_FILE,
            detail=f"{type(e).__name__}: {e}",
            raw=b"",
        )


def read_examples(patterns: Sequence[str], fields: FieldMap) -> Iterator[Example | Rejected]:
    """Every record of every file matched by `patterns`, in a stable order."""
    for url in expand_urls(patterns):
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
    parquet = pq.ParquetFile(f)
    names = set(parquet.schema_arrow.names)
    wanted = [c for c in (*fields.fields, *fields.keep) if c in names]
    rows = (
        row
        for batch in parquet.iter_batches(batch_size=1024, columns=wanted or None)
        for row in batch.to_pylist()
    )
    for position, row in enumerate(rows):
        raw = json.dumps(row, default=repr, ensure_ascii=False).encode("utf-8", "replace")
        yield parse_mapping(row, fields, url, position, raw)


def _read_tar(f, url: str, fields: FieldMap) -> Iterator[Example | Rejected]:
    """WebDataset samples: consecutive members sharing a key, read as `{extension: bytes}`."""
    for position, members in enumerate(_tar_samples(tar_file_iterator(f))):
        problem = _member_problem(members)
        if problem:
            raw = _tar_bytes(members)
            yield Rejected(
                source=url, position=position, reason=BAD_MEMBER, detail=problem, raw=raw
            )
            continue
        record: dict = {base_plus_ext(name)[1].lower(): data for name, data in members}
        if fields.keep and "json" in record:
            with contextlib.suppress(ValueError, AttributeError, RecursionError):
                kept = json.loads(record["json"])
                record.update({k: v for k, v in kept.items() if k in fields.keep})
        result = parse_mapping(record, fields, url, position, b"")
        if isinstance(result, Rejected):  # the dead letter keeps the whole sample, as a tar
            result = dataclasses.replace(result, raw=_tar_bytes(members))
        yield result


def _tar_samples(members: Iterable[dict]) -> Iterator[list[tuple[str, bytes]]]:
    """Members grouped by key (the name up to the first dot of its base name), in order."""
    sample: list[tuple[str, bytes]] = []
    key = None
    for member in members:
        prefix = base_plus_ext(member["fname"])[0]
        if sample and prefix != key:
            yield sample
            sample = []
        key = prefix
        sample.append((member["fname"], member["data"]))
    if sample:
        yield sample


def _member_problem(members: list[tuple[str, bytes]]) -> str | None:
    """Why a group of tar members is not one sample: names without an extension, or twice
    the same extension."""
    suffixes = [base_plus_ext(name)[1] for name, _ in members]
    if None in suffixes:
        return f"tar member {members[suffixes.index(None)][0]!r} has no extension"
    lowered = [suffix.lower() for suffix in suffixes]
    duplicated = sorted({s for s in lowered if lowered.count(s) > 1})
    if duplicated:
        return f"tar sample {members[0][0]!r} has the member .{duplicated[0]} twice"
    return None


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A sample's members as a small tar (base names only), for the dead-letter record."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(posixpath.basename(name) or "member")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
