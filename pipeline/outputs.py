"""A curation output folder over its life: refuse a completed run, redo an interrupted one, and
mark completion last.

The job's final step writes `stats.json`, `report.html`, then `run.json` (what was run: options,
inputs with their sizes, model fingerprints, counts, timings, versions) and `_SUCCESS` last.
So a folder with `_SUCCESS` holds a complete run; one with outputs but no `_SUCCESS` was
interrupted, and is cleared and redone (every file name is derived from the data, so the redo
writes exactly what an uninterrupted run would).
"""

from __future__ import annotations

import datetime
import platform
import posixpath
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..transforms.errors import JestflowError
from ..transforms.paths import filesystem, read_json, writable_directory, write_json
from .report import write_report

RUN, SUCCESS, STATS, REPORT = "run.json", "_SUCCESS", "stats.json", "report.html"
OUTPUTS = ("shards", "manifest", "rejected", STATS, REPORT, RUN, SUCCESS)


def prepare_output(url: str, *, overwrite: bool) -> str:
    """Create the output folder and clear any run in it; returns what was there: `empty`,
    `interrupted` (outputs but no `_SUCCESS`) or `completed` (replaced: needs `overwrite`)."""
    fs, root = writable_directory(url)
    complete = fs.exists(posixpath.join(root, SUCCESS))
    if complete and not overwrite:
        created = _created(url)
        raise JestflowError(
            f"output {url} already holds a completed curation run{created}; "
            "pass --overwrite to replace it, or write to a new folder"
        )
    present = [name for name in OUTPUTS if fs.exists(posixpath.join(root, name))]
    # _SUCCESS goes first: a clear that is itself interrupted still reads as interrupted.
    for name in sorted(present, key=lambda name: name != SUCCESS):
        fs.rm(posixpath.join(root, name), recursive=True)
    if complete:
        return "completed"
    return "interrupted" if present else "empty"


def _created(url: str) -> str:
    try:
        return f" (created {read_json(posixpath.join(url, RUN))['created']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def is_complete(url: str) -> bool:
    fs, root = filesystem(url)
    return fs.exists(posixpath.join(root, SUCCESS))


def input_files(urls: Sequence[str]) -> list[dict[str, Any]]:
    """Each input file with its size in bytes."""
    files = []
    for url in urls:
        fs, path = filesystem(url)
        files.append({"url": url, "bytes": fs.size(path)})
    return files


def versions() -> dict[str, str]:
    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "unknown"

    return {
        "jestflow": of("jestflow"),
        "apache-beam": of("apache-beam"),
        "torch": of("torch"),
        "python": platform.python_version(),
    }


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def complete(output: str, stats: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """Write the run's closing files in order: stats.json, report.html, run.json, _SUCCESS."""
    write_json(stats, posixpath.join(output, STATS))
    write_report(stats, posixpath.join(output, REPORT))
    write_json(run, posixpath.join(output, RUN))
    fs, root = filesystem(output)
    with fs.open(posixpath.join(root, SUCCESS), "wb"):
        pass
