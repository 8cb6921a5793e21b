"""The command line: real runs, and one clear error line with a non-zero exit for bad input."""

from __future__ import annotations

import json
import shutil

import torch
from click.testing import CliRunner

from jestflow.cli import main
from jestflow.cli.options import field_flags
from jestflow.cli.teacher import curate_line
from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.records import FieldMap

TINY = [
    "--d-model",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--max-len",
    "64",
    "--batch-size",
    "16",
    "--device",
    "cpu",
]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_teacher_train_lm(tmp_path, text_corpus):
    train, held_out = text_corpus
    out = tmp_path / "teacher"
    result = run(
        "teacher",
        "train",
        train,
        "--eval",
        held_out,
        "--task",
        "lm",
        "-o",
        out,
        "--steps",
        30,
        *TINY,
    )
    assert result.exit_code == 0, result.output
    assert "trained on 300 examples (rejected: none), drawn as 3" in result.output
    assert "windows of up to 64 tokens" in result.output
    assert "held-out loss" in result.output and "on 60 examples" in result.output
    assert load_model(str(out), task="lm").config.d_model == 32
    assert json.loads((out / "config.json").read_text())["meta"]["steps"] == 30


def test_teacher_train_contrastive_reports_recall(tmp_path, pair_corpus):
    train, held_out = pair_corpus
    result = run(
        "teacher",
        "train",
        train,
        "--eval",
        held_out,
        "--task",
        "contrastive",
        "--query-field",
        "query",
        "--doc-field",
        "doc",
        "-o",
        tmp_path / "t",
        "--steps",
        5,
        *TINY,
    )
    assert result.exit_code == 0, result.output
    assert "recall@1" in result.output


def test_teacher_train_errors_are_one_line_and_non_zero(tmp_path, text_corpus, pair_corpus):
    train, _ = text_corpus
    cases = [
        (
            ["teacher", "train", tmp_path / "nope.jsonl", "--task", "lm", "-o", tmp_path / "x"],
            "Error: input file not found",
        ),
        (
            [
                "teacher",
                "train",
                train,
                "--task",
                "lm",
                "-o",
                tmp_path / "x",
                "--text-field",
                "body",
            ],
            "Error: no usable examples",
        ),
        (
            ["teacher", "train", pair_corpus[0], "--task", "contrastive", "-o", tmp_path / "x"],
            "Error: contrastive tasks need --query-field and --doc-field",
        ),
        (
            ["teacher", "train", train, "--task", "lm", "-o", tmp_path / "x", "--query-field", "q"],
            "Error: give exactly one field layout",
        ),
    ]
    if torch.cuda.device_count() < 8:  # no eighth GPU here: not available, or unusable
        cases.append(
            (
                [
                    "teacher",
                    "train",
                    train,
                    "--task",
                    "lm",
                    "-o",
                    tmp_path / "x",
                    "--device",
                    "cuda:7",
                ],
                "Error: unusable device 'cuda:7'"
                if torch.cuda.is_available()
                else "Error: device 'cuda:7' asked for, but CUDA is not available",
            )
        )
    for args, message in cases:
        result = run(*args, *([] if "--device" in args else ["--device", "cpu"]))
        assert result.exit_code == 1, (args, result.output)
        assert result.output.strip().splitlines()[-1].startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1
    bad_task = run("teacher", "train", train, "--task", "vision", "-o", tmp_path / "x")
    assert bad_task.exit_code == 2 and "Invalid value for '--task'" in bad_task.output
    assert not (tmp_path / "x").exists()


def test_demo_data_writes_tagged_corpora_deterministically(tmp_path):
    result = run("demo", "data", tmp_path / "a", "--pool-size", 1000)
    assert result.exit_code == 0, result.output
    misplaced = run("demo", "--pool-size", 1000, "data", tmp_path / "c")
    assert misplaced.exit_code == 2 and "--pool-size: an option of" in misplaced.output
    assert not (tmp_path / "c").exists()
    run("demo", "data", tmp_path / "b", "--pool-size", 1000)
    pool = [json.loads(line) for line in (tmp_path / "a/lm/pool.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in pool}
    assert len(pool) == 1000 and kinds == {
        "clean",
        "random_bytes",
        "word_salad",
        "boilerplate",
        "blob",
        "duplicate",
        "truncated",
    }
    assert sum(r["kind"] == "clean" for r in pool) == 200
    reference = {
        json.loads(x)["text"] for x in (tmp_path / "a/lm/reference.jsonl").read_text().splitlines()
    }
    held_out = {
        json.loads(x)["text"] for x in (tmp_path / "a/lm/eval.jsonl").read_text().splitlines()
    }
    clean = {r["text"] for r in pool if r["kind"] == "clean"}
    assert not (reference & held_out) and not (reference & clean) and not (held_out & clean)
    pairs = [
        json.loads(x) for x in (tmp_path / "a/contrastive/pool.jsonl").read_text().splitlines()
    ]
    assert sum(p["kind"] == "mispaired" for p in pairs) == len(pairs) // 2
    for name in ("lm/pool.jsonl", "contrastive/pool.jsonl", "contrastive/eval.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_curate_where_no_record_parses_fails_with_the_reason_and_the_fields(noisy, tmp_path):
    out = tmp_path / "out"
    args = [
        "curate",
        str(noisy / "pool.jsonl"),
        "-o",
        str(out),
        "--teacher",
        str(noisy / "teacher"),
        "--task",
        "lm",
        "--keep",
        "0.5",
        "--text-field",
        "body",
        "--workers",
        "1",
        "--device",
        "cpu",
        "-q",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "none of the 245 records could be used" in line and "missing_field" in line
    assert "no field 'body' (fields: kind, text)" in line
    assert (out / "rejected").exists() and not (out / "_SUCCESS").exists()
    fixed = CliRunner().invoke(main, ["text" if a == "body" else a for a in args])
    assert fixed.exit_code == 0, fixed.output  # the failed run is redone, no --overwrite needed


def test_curate_never_clears_an_output_that_holds_its_input(noisy, tmp_path):
    """An input inside one of the job's own outputs (here `shards/`) is refused, even with
    --overwrite, before anything is removed; the user's files beside the outputs may be inputs."""
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    inside = out / "shards" / "pool.jsonl"
    beside = out / "pool.jsonl"
    for path in (inside, beside):
        shutil.copy(noisy / "pool.jsonl", path)
    args = ["-o", str(out), "--teacher", str(noisy / "teacher"), "--task", "lm", "--keep", "0.5"]
    args += ["--workers", "1", "--device", "cpu", "-q", "--overwrite"]
    refused = CliRunner().invoke(main, ["curate", str(inside), *args])
    assert refused.exit_code == 1
    (line,) = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert f"the input {inside} lies in {out / 'shards'}" in line
    assert inside.read_bytes() == (noisy / "pool.jsonl").read_bytes()
    assert not (out / "_STARTED").exists()
    done = CliRunner().invoke(main, ["curate", str(beside), *args])
    assert done.exit_code == 0, done.output
    assert beside.read_bytes() == (noisy / "pool.jsonl").read_bytes()
    assert not inside.exists()  # the old shards/ was the job's to replace


def test_curate_on_a_missing_gpu_stops_before_any_work(noisy, tmp_path):
    """Without CUDA, `--device cuda`; with it, one GPU past the last: one line, nothing written."""
    missing = torch.cuda.device_count()
    device, message = (
        (f"cuda:{missing}", f"unusable device 'cuda:{missing}'")
        if torch.cuda.is_available()
        else ("cuda", "CUDA is not available")
    )
    args = [
        "curate",
        str(noisy / "pool.jsonl"),
        "-o",
        str(tmp_path / "out"),
        "--teacher",
        str(noisy / "teacher"),
        "--task",
        "lm",
        "--keep",
        "0.5",
        "--device",
        device,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_curate_refuses_an_option_neither_it_nor_beam_knows(noisy, tmp_path):
    """Unknown options pass through to Beam, which would drop a typo without a word."""
    out = tmp_path / "out"
    args = ["curate", str(noisy / "pool.jsonl"), "-o", str(out), "--teacher"]
    args += [str(noisy / "teacher"), "--task", "lm", "--keep", "0.5"]
    typo = CliRunner().invoke(main, [*args, "--tier=4"])
    assert typo.exit_code == 2
    assert "no such option: --tier (neither curate's nor Beam's); did you mean --tiers?" in (
        typo.output
    )
    assert not out.exists()
    beam = CliRunner().invoke(main, [*args, "--flink_master=localhost:8081", "--bogus_option=1"])
    assert beam.exit_code == 2 and "no such option: --bogus_option" in beam.output


def test_the_next_line_after_curate_carries_the_field_options_train_needs():
    assert field_flags(FieldMap(text="text")) == ""
    assert field_flags(FieldMap(text="body")) == " --text-field body"
    assert field_flags(FieldMap(image="jpg", caption="txt")) == (
        " --image-field jpg --caption-field txt"
    )
    assert field_flags(FieldMap(query="q", doc="d")) == " --query-field q --doc-field d"
    assert field_flags(None) == ""  # a command that read no raw data (train without --eval)
    line = curate_line("pairs-teacher/", "contrastive", FieldMap(image="jpg", caption="txt"))
    assert line.startswith(
        "jestflow curate POOL... -o CURATED --teacher pairs-teacher --task contrastive --keep 0.3"
        " --image-field jpg --caption-field txt   ("
    )
