"""`jestflow demo`: every stage runs, the comparison is written, and a finished demo is not
overwritten by accident."""

from __future__ import annotations

import json

from click.testing import CliRunner

from jestflow.pipeline.cli import main


def test_the_demo_runs_every_stage_and_compares_the_students(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--pool-size", "1000", "--teacher-steps", "3",
            "--student-steps", "4", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for i, stage in enumerate(("demo corpora", "LM teacher", "curate the pool", "uniform on the raw",
                               "online JEST"), start=1):  # fmt: skip
        assert f"[{i}/5] " in result.output and stage in result.output
    results = json.loads((out / "results.json").read_text())
    curation = results["curation"]  # the pool's heavy duplicates are removed before scoring
    assert curation["inputs"] == 1000 and curation["rejected"] == 0 and curation["duplicate"] > 150
    assert curation["selected"] + curation["not_selected"] + curation["duplicate"] == 1000
    assert abs(curation["selected"] - curation["not_selected"]) <= 1  # keep 0.5
    uniform, jest = results["runs"]["student-uniform"], results["runs"]["student-jest"]
    assert uniform["steps"] == jest["steps"] == 4 and uniform["speed_up"] == 1.0
    if jest["steps_to_target"] is not None:  # 4 steps: it may or may not get there
        assert jest["speed_up"] == 4 / jest["steps_to_target"]
    assert 0 < uniform["clean_fraction"] < 1 and uniform["final_eval_loss"] > 0
    assert set(results["seconds"]) == {"data", "teacher", "curate", "student-uniform",
                                       "student-jest", "total"}  # fmt: skip
    table = result.output[result.output.index("run ") :]
    assert "student-uniform" in table and "student-jest" in table and "wall time:" in table
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tiers = sorted(p.name[:7] for p in (out / "curated-lm" / "shards").glob("*.tar"))
    assert tiers == ["tier-00", "tier-01", "tier-02", "tier-03"]

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already holds a demo" in again.output
    assert (out / "results.json").exists()  # untouched


def test_overwrite_clears_the_demos_own_folders_only(tmp_path):
    from jestflow.pipeline.demo import DemoConfig, _prepare

    (tmp_path / "teacher-lm").mkdir()
    (tmp_path / "teacher-lm" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    _prepare(DemoConfig(output=str(tmp_path), overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
