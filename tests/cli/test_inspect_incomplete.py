"""`jestflow inspect` on a curation run that did not finish (README, Re-curation: "`jestflow
inspect RUN` summarises a run (complete or not, …)"): a run killed mid-way (SIGKILL through the
kill hook, tests/kill/) or one whose closing files are gone is summarised from what it wrote and
said to be incomplete; one killed before it wrote any manifest part is an `Error:` that says it
was interrupted, not that the folder holds no run."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from click.testing import CliRunner
from corpora import curate
from helpers import run_until_killed

from jestflow.cli import main
from jestflow.transforms.formats.manifest import read_manifest, status_counts

# as soon as the job has renamed its first shard into place: some manifest parts are written
FIRST_SHARD = "jestflow.transforms.formats.shards:ShardWriter._finish:1"
# right after the run marked itself started (_STARTED), before it read anything
STARTED = "jestflow.transforms.formats.run_folder:prepare:1"


def curate_command(noisy, out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jestflow.cli",
        "curate",
        str(noisy / "pool.jsonl"),
        "-o",
        str(out),
        "--teacher",
        str(noisy / "teacher"),
        "--task",
        "lm",
        "--keep",
        "0.25",
        "--super-batch",
        "40",
        "--shard-max-count",
        "6",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]


def inspect(*args: str):
    return CliRunner().invoke(main, ["inspect", *args])


def complete_row(output: str) -> list[str]:
    """The words of the `complete` row of inspect's table."""
    [row] = [line.split() for line in output.splitlines() if line.split()[:1] == ["complete"]]
    return row[1:]


@pytest.fixture(scope="module")
def finished(noisy, tmp_path_factory):
    """A complete run of the noisy corpus (in-process: the same job)."""
    out, _ = curate(noisy, tmp_path_factory.mktemp("inspect") / "finished")
    assert (out / "_SUCCESS").exists()
    return out


def test_a_killed_run_is_summarised_from_what_it_wrote_and_said_incomplete(
    noisy, finished, tmp_path
):
    out = tmp_path / "killed"
    run_until_killed(curate_command(noisy, out), FIRST_SHARD)
    assert (out / "_STARTED").exists() and not (out / "_SUCCESS").exists()
    assert not (out / "run.json").exists()  # the closing files never came
    written = status_counts(read_manifest(str(out / "manifest")))  # the parts it did write
    assert 0 < written["inputs"] < 246, written

    text = inspect(str(out))
    assert text.exit_code == 0, text.output
    assert complete_row(text.output) == ["NO"], text.output
    as_json = inspect(str(out), "--json")
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.output)
    assert summary["complete"] is False, summary
    assert summary["counts"] == written, (summary["counts"], written)
    assert summary["teacher"] is None  # run.json, which names it, is written last

    # beside a complete run: NO for the killed one, yes for the finished one
    both = inspect(str(out), str(finished))
    assert both.exit_code == 0, both.output
    assert complete_row(both.output) == ["NO", "yes"], both.output
    # the killed run's teacher is not known (run.json names it), so not called different
    assert "(different teachers)" not in both.output, both.output
    assert "(a teacher unknown: an incomplete run)" in both.output, both.output


def test_a_run_without_its_closing_files_is_incomplete_with_its_counts(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert json.loads(inspect(str(out), "--json").output)["complete"] is True
    assert complete_row(inspect(str(out)).output) == ["yes"]
    (out / "_SUCCESS").unlink()  # a job killed between run.json and _SUCCESS
    summary = json.loads(inspect(str(out), "--json").output)
    assert summary["complete"] is False and summary["counts"] == counts, summary
    assert complete_row(inspect(str(out)).output) == ["NO"]
    for name in ("run.json", "stats.json", "report.html"):  # killed before the closing step
        (out / name).unlink()
    result = inspect(str(out))
    assert result.exit_code == 0, result.output
    assert complete_row(result.output) == ["NO"]
    assert json.loads(inspect(str(out), "--json").output)["counts"] == counts


def test_a_run_killed_before_its_manifest_is_named_as_interrupted(noisy, tmp_path):
    out = tmp_path / "early"
    run_until_killed(curate_command(noisy, out), STARTED)
    assert sorted(p.name for p in out.iterdir()) == ["_STARTED"]
    result = inspect(str(out))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: "), result.output
    assert "interrupted" in result.output, result.output
    assert "holds no curation run" not in result.output, result.output  # it does: a started one
    empty = tmp_path / "empty"
    empty.mkdir()
    other = inspect(str(empty))  # a folder no run started in is still not a run
    assert other.exit_code == 1 and "holds no curation run" in other.output, other.output
