"""The curation run folder: what a run writes where, and its life — refuse a completed run, redo
an interrupted one, mark completion last.

    shards/     ranked WebDataset tars (the sample format: shard_samples.py)
    manifest/   Parquet parts, a row for every input record (manifest.py)
    rejected/   the dead letters: raw input and reason (manifest.py)
    stats.json, report.html, run.json, _STARTED, _SUCCESS
    _temporary/ the job's spill files (transforms/spill/files.py), deleted after _SUCCESS


A run first writes `_STARTED` (its start time); the job's final step writes `stats.json`,
`report.html`, then `run.json` (what was run: options, inputs with their sizes, model
fingerprints, counts, timings, versions) and `_SUCCESS` last. So a folder with `_SUCCESS` holds a
complete run, and one with `_STARTED` but no `_SUCCESS` an interrupted one, which is cleared and
redone (every file name is derived from the data, so the redo writes exactly what an
uninterrupted run would). Outputs with neither marker are not known to be a run: they are
replaced only with `overwrite`.
"""

from __future__ import annotations

import datetime
import platform
import posixpath
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..errors import JestflowError
from ..paths import filesystem, read_json, within, writable_directory, write_json

SHARDS, MANIFEST, REJECTED = "shards", "manifest", "rejected"
STATS, REPORT, RUN = "stats.json", "report.html", "run.json"
STARTED, SUCCESS = "_STARTED", "_SUCCESS"
TEMPORARY = "_temporary"
OUTPUTS = (SHARDS, MANIFEST, REJECTED, STATS, REPORT, RUN, TEMPORARY)  # the job's own; nothing else


def prepare(url: str, *, overwrite: bool, inputs: Sequence[str | None] = ()) -> str:
    """Create the output folder, clear the run in it and mark a new one started. Returns what was
    there: `empty`, `interrupted` (`_STARTED`, no `_SUCCESS`: cleared), or with `overwrite`
    `replaced`; a completed run, or outputs jestflow did not mark, are refused without it. One of
    the job's `inputs` (data, models) inside an output it would clear is refused always."""
    inside = [
        (given, name)
        for given in inputs
        if given
        for name in OUTPUTS
        if within(given, posixpath.join(url, name))
    ]
    if inside:
        given, name = inside[0]
        raise JestflowError(
            f"the input {given} lies in {posixpath.join(url, name)}, which the run in output "
            f"{url} replaces; move it, or pick another --output"
        )
    fs, root = writable_directory(url)
    marked = {name for name in (SUCCESS, STARTED) if fs.exists(posixpath.join(root, name))}
    present = [name for name in OUTPUTS if fs.exists(posixpath.join(root, name))]
    if SUCCESS in marked and not overwrite:
        raise JestflowError(
            f"output {url} already holds a completed curation run{_created(url)}; "
            "pass --overwrite to replace it, or write to a new folder"
        )
    if present and not marked and not overwrite:
        raise JestflowError(
            f"output {url} already holds {', '.join(present)} but no run jestflow started "
            "(no _STARTED); pass --overwrite to replace them"
        )
    # _SUCCESS goes first and _STARTED stays: a clear that is itself cut short still reads as
    # an interrupted run.
    if SUCCESS in marked:
        fs.rm(posixpath.join(root, SUCCESS))
    for name in present:
        fs.rm(posixpath.join(root, name), recursive=True)
    with fs.open(posixpath.join(root, STARTED), "w") as f:
        f.write(now() + "\n")
    if overwrite and (SUCCESS in marked or present):
        return "replaced"
    return "interrupted" if present or STARTED in marked else "empty"


def _created(url: str) -> str:
    try:
        return f" (created {read_json(posixpath.join(url, RUN))['created']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def input_files(urls: Sequence[str]) -> list[dict[str, Any]]:
    """Each input file with its size in bytes (asked for together, per filesystem)."""
    by_fs: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
    for url in urls:
        fs, path = filesystem(url)
        by_fs.setdefault(id(fs), (fs, []))[1].append((url, path))
    sizes = {}
    for fs, files in by_fs.values():
        sizes.update(zip([u for u, _ in files], fs.sizes([p for _, p in files]), strict=True))
    return [{"url": url, "bytes": sizes[url]} for url in urls]


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


def close(
    output: str, stats: Mapping[str, Any], report: str, run: Mapping[str, Any], *, succeeded: bool
) -> None:
    """Write the run's closing files in order: stats.json, report.html (the page `report`),
    run.json, and _SUCCESS last when the run `succeeded` (without it, the folder reads as
    interrupted: redone next time), and only then delete the spill files in `_temporary/`."""
    write_json(stats, posixpath.join(output, STATS))
    fs, path = filesystem(posixpath.join(output, REPORT))
    with fs.open(path, "w") as f:
        f.write(report)
    write_json(run, posixpath.join(output, RUN))
    if succeeded:
        fs, root = filesystem(output)
        with fs.open(posixpath.join(root, SUCCESS), "wb"):
            pass
        if fs.exists(posixpath.join(root, TEMPORARY)):
            fs.rm(posixpath.join(root, TEMPORARY), recursive=True)


def is_complete(url: str) -> bool:
    """Whether the folder holds a completed curation run."""
    fs, root = filesystem(url)
    return fs.exists(posixpath.join(root, SUCCESS))
