"""Every path goes through fsspec; this turns its failures into one clear line."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import braceexpand
import fsspec

from .errors import JestflowError, missing_extra

EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a URL, with an error naming the extra a cloud protocol needs."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise missing_extra(EXTRAS.get(protocol, protocol), f"the {protocol}:// filesystem") from e
    except ValueError as e:
        raise JestflowError(f"cannot open {url!r}: {e}") from e


def expand_urls(patterns: str | Sequence[str], *, what: str = "input file") -> list[str]:
    """Expand brace ranges (`shard-{000000..000099}.tar`) and globs of any fsspec URL into a
    sorted list of files, each once. Every pattern must match, and every file a brace range
    names must exist (a missing member of a range is an error, never skipped)."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise JestflowError(f"no {what} given")
    urls: list[str] = []
    for pattern in patterns:
        found: list[str] = []
        for url in braceexpand.braceexpand(pattern):
            fs, path = filesystem(url)
            if glob.has_magic(path):
                matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
            elif fs.isfile(path):
                matches = [path]
            else:
                raise JestflowError(f"{what} not found: {url}")
            found += [fs.unstrip_protocol(p) if "://" in url else p for p in matches]
        if not found:
            raise JestflowError(f"no {what} matches {pattern!r}")
        urls += found
    return sorted(dict.fromkeys(urls))


def same_location(a: str, b: str) -> bool:
    """Whether two URLs name the same place (same filesystem, same normalised path)."""
    return _place(a) == _place(b)


def within(url: str, folder: str) -> bool:
    """Whether `url` (a path or a pattern) names `folder` or a place inside it."""
    (protocol_a, inner), (protocol_b, outer) = _place(url), _place(folder)
    return protocol_a == protocol_b and (
        inner == outer or inner.startswith(outer.rstrip("/") + "/")
    )


def _place(url: str) -> tuple[object, str]:
    """(the filesystem's protocol, the normalised absolute path) of a URL."""
    fs, path = filesystem(url)
    return fs.protocol, posixpath.normpath(os.path.abspath(path))


def writable_directory(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Create the output directory now, so a bad output fails before any work is done."""
    fs, root = filesystem(url)
    if fs.isfile(root):
        raise JestflowError(f"output {url!r} is a file, not a directory")
    try:
        fs.makedirs(root, exist_ok=True)
    except OSError as e:
        raise JestflowError(f"cannot create output directory {url!r}: {e}") from e
    return fs, root


def child(url: str, *names: str) -> str:
    """`url/name/…`, refusing a name that could leave `url` (empty, `.`, `..`, a separator, a
    NUL): every path the code writes under an output is built from such names."""
    for name in names:
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise JestflowError(f"unsafe path component {name!r} under {url}")
    return posixpath.join(url, *names)


@contextlib.contextmanager
def replacing(fs: fsspec.AbstractFileSystem, path: str, mode: str = "wb") -> Iterator[IO]:
    """A file written under a hidden temporary name beside `path` and renamed over it once
    written whole: a reader (or a run killed half-way) never sees half a file."""
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp-{os.getpid()}")
    with fs.open(tmp, mode) as f:
        yield f
    fs.mv(tmp, path)


def write_json(data: Mapping[str, Any], url: str) -> None:
    fs, path = filesystem(url)
    with replacing(fs, path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_json(url: str) -> dict[str, Any]:
    fs, path = filesystem(url)
    with fs.open(path) as f:
        return json.load(f)
