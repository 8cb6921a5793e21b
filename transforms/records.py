"""Example records, their stable ids, and parsing one raw record into an example or a rejection.

An input record becomes either an `Example` (with a 128-bit content-hash id and its source) or a
`Rejected` value that carries the raw bytes and the reason. Parsing never raises for bad records;
reading whole files lives in `readers.py`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .errors import JestflowError

Layout = Literal["text", "image_text", "text_pair"]

# Why a record was rejected. Stable strings: they are counters, manifest values and file names.
BAD_JSON = "bad_json"
BAD_UTF8 = "bad_utf8"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
NOT_A_STRING = "not_a_string"
EMPTY = "empty"
TOO_LONG = "too_long"
BAD_IMAGE = "bad_image"
UNREADABLE_FILE = "unreadable_file"
BAD_MEMBER = "bad_member"  # a tar sample whose members do not form one safe sample
REASONS = (
    BAD_JSON,
    BAD_UTF8,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    NOT_A_STRING,
    EMPTY,
    TOO_LONG,
    BAD_IMAGE,
    UNREADABLE_FILE,
    BAD_MEMBER,
)


@dataclass(frozen=True, kw_only=True)
class FieldMap:
    """Where the payload lives in an input record, and what else to keep.

    Exactly one layout: `text` (language modelling), `image` + `caption` (image-text pairs) or
    `query` + `doc` (text-text pairs). For WebDataset tars a field is a member extension
    (`txt`, `jpg`); for JSONL and Parquet it is a key or column name.
    """

    text: str | None = None
    image: str | None = None
    caption: str | None = None
    query: str | None = None
    doc: str | None = None
    keep: tuple[str, ...] = ()
    max_chars: int = 100_000

    def __post_init__(self) -> None:
        given = {
            name for name in ("text", "image", "caption", "query", "doc") if getattr(self, name)
        }
        if given not in ({"text"}, {"image", "caption"}, {"query", "doc"}):
            raise JestflowError(
                "give exactly one field layout: --text-field, or --image-field with "
                "--caption-field, or --query-field with --doc-field "
                f"(got {', '.join(sorted(given)) or 'none'})"
            )
        if self.max_chars < 1:
            raise JestflowError(f"max_chars must be positive, got {self.max_chars}")

    @property
    def layout(self) -> Layout:
        if self.text:
            return "text"
        return "image_text" if self.image else "text_pair"

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The fields holding text, in (left tower, right tower) order."""
        if self.text:
            return (self.text,)
        if self.image:
            return (self.caption,)  # type: ignore[return-value]
        return (self.query, self.doc)  # type: ignore[return-value]

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the payload is read from."""
        return self.text_fields + ((self.image,) if self.image else ())


@dataclass(frozen=True, kw_only=True)
class Example:
    """One training example.

    `text` is the text to model (layout `text`), the caption (`image_text`) or the query
    (`text_pair`); `pair` is the document of a text pair; `image` the encoded image bytes.
    `id` hashes the payload only, so the same content gets the same id wherever it comes from.
    `position` is the 0-based record index in `source` (JSONL line, Parquet row, tar sample);
    `occurrence` counts the earlier records of `source` with the same id (0 for all but copies).
    """

    id: str
    layout: Layout
    text: str
    pair: str | None = None
    image: bytes | None = None
    source: str
    position: int
    occurrence: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property  # sorting and grouping ask for it many times
    def key(self) -> str:
        """A dot-free key unique to this occurrence (duplicates share `id`, not `key`).

        It hashes the id, the source and the occurrence, not the position: a record inserted into
        or removed from a file leaves every other record's key (its super-batch, its noise) as it
        was.
        """
        return _digest(self.id.encode(), self.source.encode(), str(self.occurrence).encode())


@dataclass(frozen=True, kw_only=True)
class Rejected:
    """A record that could not become an example, with the raw input and the reason."""

    source: str
    position: int
    reason: str
    detail: str
    raw: bytes

    def __post_init__(self) -> None:
        # The detail may quote the input (field or member names): keep it writable as UTF-8.
        object.__setattr__(self, "detail", _utf8(self.detail))

    @property
    def id(self) -> str:
        return _digest(b"rejected", self.raw)


def nothing_usable(inputs: Sequence[str], first: Rejected | None) -> JestflowError:
    """The error for inputs that gave no example: no record at all, or every record rejected
    (the first one named with its reason, e.g. the field it lacks and the fields it has)."""
    where = ", ".join(inputs)
    if first is None:
        return JestflowError(f"no records in {where}")
    return JestflowError(
        f"no usable examples in {where}; first problem: {first.source} record "
        f"{first.position}: {first.detail}"
    )


def _digest(*parts: bytes) -> str:
    """128-bit hex digest of length-prefixed parts (unambiguous concatenation)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def content_id(
    layout: Layout, text: str, pair: str | None = None, image: bytes | None = None
) -> str:
    """The stable id of a payload: the same content always hashes to the same 32 hex digits."""
    parts = [layout.encode(), text.encode("utf-8")]
    if pair is not None:
        parts.append(pair.encode("utf-8"))
    if image is not None:
        parts.append(image)
    return _digest(*parts)


def make_example(
    *,
    layout: Layout,
    text: str,
    pair: str | None = None,
    image: bytes | None = None,
    source: str = "",
    position: int = 0,
    occurrence: int = 0,
    meta: Mapping[str, Any] | None = None,
) -> Example:
    """Build an example with its content id (for data made in code: tests, demos)."""
    return Example(
        id=content_id(layout, text, pair, image),
        layout=layout,
        text=text,
        pair=pair,
        image=image,
        source=source,
        position=position,
        occurrence=occurrence,
        meta=dict(meta or {}),
    )


def parse_json_line(raw: bytes, fields: FieldMap, source: str, position: int) -> Example | Rejected:
    """Parse one JSONL line."""

    def reject(reason: str, detail: str) -> Rejected:
        return Rejected(source=source, position=position, reason=reason, detail=detail, raw=raw)

    try:
        line = raw.decode("utf-8-sig")  # a byte order mark (Windows tools write one) is no error
    except UnicodeDecodeError as e:
        return reject(BAD_UTF8, str(e))
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:  # also huge integers and absurd nesting
        return reject(BAD_JSON, f"{type(e).__name__}: {str(e)[:200]}")
    if not isinstance(obj, dict):
        return reject(NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    return parse_mapping(obj, fields, source, position, raw)


def parse_mapping(
    record: Mapping[str, Any], fields: FieldMap, source: str, position: int, raw: bytes
) -> Example | Rejected:
    """Turn a decoded record (JSON object, Parquet row, tar sample) into an example.

    Text values may be `str` or UTF-8 `bytes` (tar members); image values `bytes` or a
    `{"bytes": ...}` struct (the Hugging Face datasets image column).
    """

    texts: list[str] = []
    for name in fields.text_fields:
        value = _text(record, name, fields.max_chars)
        if isinstance(value, Problem):
            return Rejected(source=source, position=position, raw=raw, **value._asdict())
        texts.append(value)
    image = _image(record, fields.image) if fields.image else None
    meta = _kept(record, fields.keep)
    for problem in (image, meta):
        if isinstance(problem, Problem):
            return Rejected(source=source, position=position, raw=raw, **problem._asdict())
    return make_example(
        layout=fields.layout,
        text=texts[0],
        pair=texts[1] if len(texts) > 1 else None,
        image=image,
        source=source,
        position=position,
        meta=meta,
    )


class Problem(NamedTuple):
    """Why a record is rejected: its reason and a detail for the dead letter."""

    reason: str
    detail: str


def _text(record: Mapping[str, Any], name: str, max_chars: int) -> str | Problem:
    """A text field's value, or the problem with it."""
    value = record.get(name)
    if value is None:
        present = ", ".join(sorted(map(str, record))[:10]) or "none"
        return Problem(MISSING_FIELD, f"no field {name!r} (fields: {present})")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return Problem(BAD_UTF8, f"{name}: {e}")
    if not isinstance(value, str):
        return Problem(NOT_A_STRING, f"{name} is {type(value).__name__}, not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates from JSON escapes
        return Problem(BAD_UTF8, f"{name}: {e}")
    if not value.strip():
        return Problem(EMPTY, f"{name} is empty")
    if len(value) > max_chars:
        return Problem(TOO_LONG, f"{name} has {len(value)} characters > {max_chars}")
    return value


def _image(record: Mapping[str, Any], name: str) -> bytes | Problem:
    """An image field's bytes (also from a `{"bytes": ...}` struct), or the problem with it."""
    image = record.get(name)
    if isinstance(image, Mapping):
        image = image.get("bytes")
    if image is None:
        return Problem(MISSING_FIELD, f"no field {name!r}")
    if not isinstance(image, bytes):
        return Problem(BAD_IMAGE, f"{name} is {type(image).__name__}, not bytes")
    problem = image_problem(image)
    return Problem(BAD_IMAGE, problem) if problem else image


def _kept(record: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any] | Problem:
    """The kept fields the record has, as plain JSON values, or the problem with one."""
    meta = {}
    for name in names:
        if name in record:
            if _deeper_than(record[name], MAX_META_DEPTH):
                return Problem(
                    BAD_JSON, f"kept field {name!r} nests deeper than {MAX_META_DEPTH} levels"
                )
            meta[name] = _plain(record[name])
    return meta


def image_problem(data: bytes) -> str | None:
    """Why `data` is not a decodable image, or None if it decodes."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as e:  # PIL raises many kinds, decompression bombs included
        message = _ADDRESS.sub("", str(e))  # "<_io.BytesIO object at 0x…>" differs run to run
        return f"image does not decode: {type(e).__name__}: {message}"
    return None


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Kept values nested deeper are refused: pickling them between pipeline stages would overflow
# the stack, at a depth that depends on the runner.
MAX_META_DEPTH = 64


def _utf8(text: str) -> str:
    """`text` with lone surrogates (JSON "\\ud800" escapes, undecodable file names) replaced,
    so that it encodes as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether lists and mappings nest more than `depth` levels in `value` (no recursion)."""
    stack = [(value, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, Mapping):
            value = list(value.values())
        if isinstance(value, (list, tuple)):
            if level >= depth:
                return True
            stack.extend((item, level + 1) for item in value)
    return False


def _plain(value: Any) -> Any:
    """Kept metadata as a JSON-friendly value that encodes as UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return _utf8(value)
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return json.loads(_utf8(json.dumps(value, default=str, ensure_ascii=False)))
