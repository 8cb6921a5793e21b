"""The online trainer on shards of a noisy set: it learns, learnability trains on cleaner data
than uniform, resume continues at the same step, and the student can be the next teacher."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import random
import subprocess
import sys
import tarfile
from collections import Counter

import pytest
import torch
from helpers import (
    SEED,
    kept_by_budget,
    lr,
    run_until_killed,
    sentences,
    untrained_eval,
    write_jsonl,
)

from jestflow.trainer.core import evaluate, load_examples
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.trainer.loop import TrainConfig, train
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import checkpoint_task, load_model, save_checkpoint
from jestflow.transforms.formats.shard_samples import encode
from jestflow.transforms.formats.shards import ShardWriter
from jestflow.transforms.models import new_model
from jestflow.transforms.models.scoring import lm_losses
from jestflow.transforms.records import FieldMap, make_example

TEXT = FieldMap(text="text")
TINY = {"d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 64}


@pytest.fixture(scope="module")
def noisy_shards(tmp_path_factory):
    """Shards as curate writes them: half clean sentences, half noise, with a teacher's losses."""
    root = tmp_path_factory.mktemp("loop")
    reference = write_jsonl(root / "ref.jsonl", ({"text": t} for t in sentences(300, 6)))
    write_jsonl(root / "eval.jsonl", ({"text": t} for t in sentences(64, 7)))
    train_teacher(
        TeacherConfig(
            inputs=(reference,),
            output=str(root / "teacher"),
            task="lm",
            fields=TEXT,
            steps=80,
            batch_size=16,
            lr=lr(3e-3),
            warmup_steps=5,
            seed=SEED,
            device="cpu",
            **TINY,
        )
    )
    rng = random.Random(0)
    texts = [(t, "clean") for t in sentences(200, 8)]
    texts += [("".join(rng.choice("qzxj#@!0") for _ in range(50)), "noise") for _ in range(200)]
    rng.shuffle(texts)
    losses = lm_losses(load_model(str(root / "teacher")), [t for t, _ in texts]).tolist()
    with ShardWriter(str(root / "shards"), prefix="shard-000000", max_count=100) as writer:
        for i, ((text, kind), loss) in enumerate(zip(texts, losses, strict=True)):
            example = make_example(
                layout="text", text=text, source="pool", position=i, meta={"kind": kind}
            )
            writer.write(encode(example, {"teacher_loss": loss, "score": -loss}))
    return root


def config(root, out, **changes):
    options = {
        "shards": (str(root / "shards" / "shard-000000-{000000..000003}.tar"),),
        "task": "lm",
        "output": str(out),
        "batch_size": 16,
        "super_batch_ratio": 4,
        "steps": 20,
        "lr": lr(3e-3),
        "warmup_steps": 2,
        "eval_inputs": (str(root / "eval.jsonl"),),
        "fields": TEXT,
        "eval_every": 10,
        "seed": SEED,
        "device": "cpu",
        **TINY,
    }
    return TrainConfig(**{**options, **changes})


def lines(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def untrained_loss(root) -> float:
    return untrained_eval("lm", str(root / "eval.jsonl"), TEXT, TINY)[0]


def test_a_short_run_lowers_the_held_out_loss(noisy_shards, tmp_path, learned):
    last = train(config(noisy_shards, tmp_path / "run", mode="uniform", steps=30))
    assert last["step"] == 30
    gain = untrained_loss(noisy_shards) - last["eval_loss"]
    learned.expect("held-out loss below the untrained model's", gain, ">", 0.5)
    steps = [r for r in lines(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert {
        "learnability",
        "tags",
        "draw_seconds",
        "load_seconds",
        "score_seconds",
        "train_seconds",
        "step_seconds",
        "examples_seen",
        "score_flops",
        "train_flops",
    } <= set(steps[0])
    # uniform draws b, not r·b: it trains on what it draws
    assert steps[-1]["examples_seen"] == 30 * 16 and steps[0]["score_flops"] == 0
    assert all(r["train_seconds"] <= r["step_seconds"] for r in steps)
    # every step's samples were read and decoded (load), ahead of it: it waited at most that
    assert all(r["load_seconds"] > 0 for r in steps)
    assert all(0 <= r["draw_seconds"] < r["step_seconds"] for r in steps)
    assert all(r["draw_seconds"] + r["train_seconds"] <= r["step_seconds"] + 2e-4 for r in steps)
    peaks = [r["peak_rss_mib"] for r in steps]  # this process's peak so far: never falls
    assert peaks[0] > 10 and all(b >= a - 1 for a, b in itertools.pairwise(peaks))
    assert all(10 < r["rss_mib"] <= r["peak_rss_mib"] + 1 for r in steps)  # now, under the peak


def test_learnability_trains_on_a_cleaner_mix_than_uniform(noisy_shards, tmp_path, learned):
    def clean_fraction(mode):
        train(config(noisy_shards, tmp_path / mode, mode=mode, steps=10, eval_inputs=()))
        tags = [r["tags"] for r in lines(tmp_path / mode)]
        clean = sum(t.get("clean", 0) for t in tags)
        return clean / sum(sum(t.values()) for t in tags)

    uniform, learnability = clean_fraction("uniform"), clean_fraction("learnability")
    assert 0.3 < uniform < 0.7, uniform  # the shards are half noise
    learned.expect("clean share: learnability over uniform", learnability - uniform, ">", 0.2)
    logged = lines(tmp_path / "learnability")
    assert logged[0]["score_flops"] > 0 and logged[0]["learnability"] is not None


def test_raw_data_trains_the_baselines_and_refuses_modes_that_need_a_teacher(
    noisy_shards, tmp_path, learned
):
    rng = random.Random(1)
    raw = [{"text": t, "kind": "clean"} for t in sentences(100, 8)]
    raw += [
        {"text": "".join(rng.choice("qzxj#@!0") for _ in range(50)), "kind": "noise"}
        for _ in range(100)
    ]
    pool = write_jsonl(tmp_path / "pool.jsonl", raw)
    raw_config = {"shards": (), "data": (pool,), "fields": FieldMap(text="text", keep=("kind",))}
    last = train(config(noisy_shards, tmp_path / "uniform", mode="uniform", **raw_config))
    assert last["step"] == 20
    gain = untrained_loss(noisy_shards) - last["eval_loss"]
    learned.expect("held-out loss below the untrained model's", gain, ">", 0.8)
    tags = Counter()
    for r in lines(tmp_path / "uniform"):
        tags.update(r.get("tags", {}))
    assert sum(tags.values()) == 20 * 16 and 0.3 < tags["clean"] / (20 * 16) < 0.7
    train(
        config(
            noisy_shards,
            tmp_path / "hard",
            mode="hard_learner",
            steps=3,
            eval_inputs=(),
            **raw_config,
        )
    )
    hard = lines(tmp_path / "hard")[-1]
    assert hard["score_flops"] > 0 and hard["learnability"] is None  # no teacher, no gap
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", ({"query": t, "doc": t[::-1]} for t in sentences(40, 3))
    )
    train(
        TrainConfig(
            data=(pairs,),
            task="contrastive",
            output=str(tmp_path / "pairs"),
            fields=FieldMap(query="query", doc="doc"),
            mode="hard_learner",
            steps=2,
            batch_size=4,
            super_batch_ratio=2,
            device="cpu",
            **TINY,
        )
    )
    assert [r["learnability"] for r in lines(tmp_path / "pairs")] == [None, None]
    for mode in ("learnability", "easy_reference"):
        with pytest.raises(JestflowError, match=f"--mode {mode} needs the teacher"):
            config(noisy_shards, tmp_path / mode, mode=mode, **raw_config)
    with pytest.raises(JestflowError, match="exactly one"):
        config(noisy_shards, tmp_path / "both", data=(pool,))
    with pytest.raises(JestflowError, match="exactly one"):
        config(noisy_shards, tmp_path / "neither", shards=())


def test_resume_on_raw_data_draws_what_an_uninterrupted_run_would(noisy_shards, tmp_path):
    rng = random.Random(2)
    raw = [
        {"text": f"{' '.join(rng.sample(sentences(30, 4), 2))}", "kind": f"k{i}"}
        for i in range(300)
    ]
    options = {
        "shards": (),
        "data": (write_jsonl(tmp_path / "pool.jsonl", raw),),
        "fields": FieldMap(text="text", keep=("kind",)),
        "mode": "uniform",
        "eval_inputs": (),
        "eval_every": 5,
    }
    train(config(noisy_shards, tmp_path / "whole", steps=10, **options))
    train(config(noisy_shards, tmp_path / "parts", steps=5, **options))
    train(config(noisy_shards, tmp_path / "parts", steps=10, resume=True, **options))
    whole, parts = lines(tmp_path / "whole"), lines(tmp_path / "parts")
    assert [r["step"] for r in parts] == list(range(1, 11))
    assert [r["tags"] for r in parts] == [r["tags"] for r in whole]  # the same examples


def run_state(out) -> tuple[str, dict]:
    """A run's committed model (fingerprint) and optimizer state (every tensor)."""
    from jestflow.trainer.checkpoints import checkpoint_folder
    from jestflow.transforms.formats.model_files import fingerprint

    optimizer = torch.load(f"{checkpoint_folder(str(out))}/optimizer.pt", weights_only=True)
    return fingerprint(str(out)), optimizer


def assert_same_state(a, b) -> None:
    (model_a, optimizer_a), (model_b, optimizer_b) = a, b
    assert model_a == model_b
    assert optimizer_a["param_groups"] == optimizer_b["param_groups"]
    assert optimizer_a["state"].keys() == optimizer_b["state"].keys()
    for key, state in optimizer_a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, optimizer_b["state"][key][name]), (key, name)


def test_an_interrupted_and_resumed_run_ends_as_an_uninterrupted_one(
    noisy_shards, tmp_path, monkeypatch
):
    """Same parameters and optimizer state, bit for bit: a resumed run reads on where the
    interrupted one stopped and draws each step's sub-batch from the same generator."""
    import jestflow.trainer.checkpoints as checkpoints

    options = {"mode": "learnability", "steps": 10, "eval_every": 4, "eval_inputs": ()}
    train(config(noisy_shards, tmp_path / "whole", **options))
    save = checkpoints.save

    def save_then_stop(output, model, optimizer, step, *args):
        save(output, model, optimizer, step, *args)
        if step == 4:
            raise KeyboardInterrupt  # the run is stopped right after its first checkpoint

    monkeypatch.setattr(checkpoints, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(config(noisy_shards, tmp_path / "parts", **options))
    assert json.loads((tmp_path / "parts" / "trainer_state.json").read_text())["step"] == 4
    monkeypatch.setattr(checkpoints, "save", save)
    train(config(noisy_shards, tmp_path / "parts", resume=True, **options))
    assert_same_state(run_state(tmp_path / "parts"), run_state(tmp_path / "whole"))
    whole, parts = lines(tmp_path / "whole"), lines(tmp_path / "parts")
    assert [(r["loss"], r["tags"]) for r in parts] == [(r["loss"], r["tags"]) for r in whole]


def test_resume_continues_at_the_step_it_stopped(noisy_shards, tmp_path):
    out = tmp_path / "run"
    train(config(noisy_shards, out, steps=10, eval_every=5, eval_inputs=()))
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 10
    with open(out / "log.jsonl", "a") as log:  # a crash after step 12, checkpoint at 10
        log.write('{"step": 11, "loss": 1.0}\n{"step": 12, "loss": 1.0}\n')
    with pytest.raises(JestflowError, match="already holds a training run"):
        train(config(noisy_shards, out, steps=15, eval_inputs=()))
    with pytest.raises(JestflowError, match="already at step 10"):
        train(config(noisy_shards, out, steps=10, eval_inputs=(), resume=True))
    last = train(config(noisy_shards, out, steps=15, eval_every=5, eval_inputs=(), resume=True))
    assert last["step"] == 15
    assert [r["step"] for r in lines(out)] == list(range(1, 16))
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 15


def test_a_trained_student_is_a_checkpoint_the_curation_job_can_use(noisy_shards, tmp_path):
    from jestflow.pipeline.config import CurateConfig
    from jestflow.pipeline.job import run_curation
    from jestflow.transforms.selection.offline import SelectionConfig

    train(config(noisy_shards, tmp_path / "student", steps=5, eval_inputs=()))
    assert checkpoint_task(str(tmp_path / "student")) == "lm"
    pool = write_jsonl(tmp_path / "pool.jsonl", ({"text": t} for t in sentences(40, 9)))
    stats = run_curation(
        CurateConfig(
            inputs=(pool,),
            output=str(tmp_path / "curated"),
            teacher=str(tmp_path / "student"),
            task="lm",
            fields=TEXT,
            selection=SelectionConfig(keep=0.5),
            super_batch=20,
            device="cpu",
            workers=1,
        )
    )
    kept = kept_by_budget(tmp_path / "curated", 0.5)  # half of each of 2 super-batches of ~20
    assert stats["counts"]["selected"] == kept and 20 <= kept <= 21


def test_train_command(noisy_shards, tmp_path):
    from click.testing import CliRunner

    from jestflow.cli import main

    shards = str(noisy_shards / "shards" / "*.tar")
    args = [
        "train",
        "--shards",
        shards,
        "--task",
        "lm",
        "-o",
        str(tmp_path / "run"),
        "--batch-size",
        "8",
        "--super-batch-ratio",
        "2",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--eval",
        str(noisy_shards / "eval.jsonl"),
        "--device",
        "cpu",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--max-len",
        "64",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    final = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    final = [r for r in final if "eval_loss" in r][-1]
    assert f"held-out loss {final['eval_loss']:.4f} at step 4 " in result.stdout
    assert "student written to" in result.stdout
    missing = CliRunner().invoke(main, [*args[:2], str(tmp_path / "none-*.tar"), *args[3:]])
    assert missing.exit_code == 1 and "no shard matches" in missing.output
    wrong = CliRunner().invoke(
        main,
        [
            *args[:3],
            "--task",
            "contrastive",
            "-o",
            str(tmp_path / "c"),
            "--steps",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert wrong.exit_code == 1 and "holds lm samples, not contrastive" in wrong.output


def test_a_run_that_fails_before_its_first_step_leaves_the_output_free(noisy_shards, tmp_path):
    """A start that fails (a field the data lacks, an eval file that does not parse) is not a
    run: the corrected command into the same --output trains, with no --resume."""
    from click.testing import CliRunner

    from jestflow.cli import main

    pool = write_jsonl(tmp_path / "pool.jsonl", ({"text": t} for t in sentences(40, 5)))
    (tmp_path / "eval.jsonl").write_text("{broken\n")
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        pool,
        "--task",
        "lm",
        "--mode",
        "uniform",
        "-o",
        str(out),
        "--batch-size",
        "4",
        "--super-batch-ratio",
        "1",
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--warmup-steps",
        "1",
        "--device",
        "cpu",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--max-len",
        "64",
    ]
    missing = CliRunner().invoke(main, [*args, "--text-field", "body"])
    assert missing.exit_code == 1
    assert f"no usable examples in {pool}; first problem: {pool} record 0: no field 'body' " in (
        missing.output
    )
    assert "(fields: text)" in missing.output  # the fields the records have
    assert not (out / "log.jsonl").exists()
    bad_eval = CliRunner().invoke(main, [*args, "--eval", str(tmp_path / "eval.jsonl")])
    assert bad_eval.exit_code == 1 and "no usable examples" in bad_eval.output
    fixed = CliRunner().invoke(main, [*args, "--text-field", "text"])
    assert fixed.exit_code == 0, fixed.output
    assert [r["step"] for r in lines(out)] == [1, 2]


def test_a_warm_up_longer_than_the_run_is_flagged(noisy_shards, tmp_path, caplog):
    options = {"mode": "uniform", "eval_inputs": (), "warmup_steps": 3}
    with caplog.at_level(logging.WARNING, logger="jestflow"):
        train(config(noisy_shards, tmp_path / "a", steps=4, **options))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="jestflow"):
        train(config(noisy_shards, tmp_path / "b", steps=2, **options))  # still trains
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("--warmup-steps 3 ≥ --steps 2: the whole run is warm-up")
    assert json.loads((tmp_path / "b" / "trainer_state.json").read_text())["step"] == 2


def test_two_processes_under_torchrun_end_with_equal_parameters(noisy_shards, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "jestflow.cli",
        "train",
        "--shards",
        str(noisy_shards / "shards" / "*.tar"),
        "--task",
        "lm",
        "-o",
        str(out),
        "--batch-size",
        "8",
        "--super-batch-ratio",
        "2",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--device",
        "cpu",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--max-len",
        "64",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 6 and len(state["parameter_digests"]) == 2
    assert len(set(state["parameter_digests"])) == 1  # the all-reduce kept the ranks equal
    logged = lines(out)
    assert [r["step"] for r in logged] == list(range(1, 7))  # rank 0 logs, once per step
    assert logged[-1]["examples_seen"] == 6 * 16 * 2
    single = train(
        config(
            noisy_shards,
            tmp_path / "one",
            steps=6,
            batch_size=8,
            super_batch_ratio=2,
            eval_inputs=(),
            eval_every=3,
        )
    )
    assert single["step"] == 6
    one = json.loads((tmp_path / "one" / "trainer_state.json").read_text())
    assert one["parameter_digests"] != state["parameter_digests"][:1]  # two ranks saw more data


def test_train_refuses_a_folder_it_did_not_write_unless_overwrite(noisy_shards, tmp_path):
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(noisy_shards / "teacher", teacher)
    (teacher / "metrics.json").write_text("{}")
    weights = (teacher / "model.safetensors").read_bytes()
    quick = {"steps": 2, "eval_inputs": ()}
    with pytest.raises(
        JestflowError, match=r"holds a model checkpoint \(config.json, metrics.json"
    ):
        train(config(noisy_shards, teacher, **quick))
    assert (teacher / "model.safetensors").read_bytes() == weights  # untouched
    curated = tmp_path / "curated"
    (curated / "shards").mkdir(parents=True)
    for marker in ("_STARTED", "_SUCCESS"):
        (curated / marker).write_text("")
    with pytest.raises(JestflowError, match=r"holds a curation run .*pass --overwrite to replace"):
        train(config(noisy_shards, curated, **quick))
    assert sorted(p.name for p in curated.iterdir()) == ["_STARTED", "_SUCCESS", "shards"]
    train(config(noisy_shards, teacher, overwrite=True, **quick))
    held = sorted(p.name for p in teacher.iterdir())
    assert "metrics.json" not in held and "log.jsonl" in held  # nothing stale stays
    assert (teacher / "model.safetensors").read_bytes() != weights
    with pytest.raises(JestflowError, match=r"holds a training run .*; --resume it, pass --overwr"):
        train(config(noisy_shards, teacher, **quick))
    with pytest.raises(JestflowError, match="drop --overwrite"):
        config(noisy_shards, teacher, resume=True, overwrite=True)
    holder = tmp_path / "holder"  # --overwrite never deletes the command's own inputs
    shutil.copytree(noisy_shards / "shards", holder / "shards")
    inner = (str(holder / "shards" / "*.tar"),)
    with pytest.raises(JestflowError, match=r"holds this command's input .*pick another --output"):
        train(config(noisy_shards, holder, shards=inner, overwrite=True, **quick))
    assert sorted(p.name for p in (holder / "shards").iterdir()) == sorted(
        p.name for p in (noisy_shards / "shards").iterdir()
    )


def test_init_starts_from_a_checkpoint_and_refuses_another_task(noisy_shards, tmp_path):
    teacher = str(noisy_shards / "teacher")
    train(
        config(
            noisy_shards,
            tmp_path / "init",
            steps=1,
            lr=1e-9,
            warmup_steps=0,
            eval_inputs=(),
            init=teacher,
        )
    )
    start = load_model(teacher).state_dict()
    after = load_model(str(tmp_path / "init")).state_dict()
    assert all(torch.allclose(start[k], after[k], atol=1e-5) for k in start)  # lr ≈ 0: unchanged
    torch.manual_seed(0)
    save_checkpoint(new_model("contrastive", **TINY), str(tmp_path / "towers"))
    with pytest.raises(JestflowError, match="is a contrastive model, not lm"):
        train(config(noisy_shards, tmp_path / "bad", init=str(tmp_path / "towers")))
    with pytest.raises(JestflowError, match="nothing to resume"):
        train(config(noisy_shards, tmp_path / "fresh", resume=True))


def test_promote_makes_a_teacher_with_the_students_fingerprint(noisy_shards, tmp_path):
    from click.testing import CliRunner

    from jestflow.cli import main
    from jestflow.transforms.formats.model_files import fingerprint

    student = str(tmp_path / "student")
    train(config(noisy_shards, student, steps=20, eval_inputs=()))
    teacher = str(noisy_shards / "teacher")
    held_out = str(noisy_shards / "eval.jsonl")
    args = [
        "teacher",
        "promote",
        student,
        "-o",
        str(tmp_path / "next"),
        "--eval",
        held_out,
        "--against",
        teacher,
        "--device",
        "cpu",
        "--force",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"teacher {fingerprint(student)} written to" in result.output
    assert "(trained 20 steps) promoted" in result.output
    files = sorted(p.name for p in (tmp_path / "next").iterdir())
    assert files == ["config.json", "metrics.json", "model.safetensors", "promoted.json"]
    promoted = json.loads((tmp_path / "next" / "promoted.json").read_text())
    examples, _ = load_examples((held_out,), TEXT)
    new_loss = evaluate(load_model(str(tmp_path / "next")), examples, 32)[0]
    old_loss = evaluate(load_model(teacher), examples, 32)[0]
    assert promoted["eval_loss"] == pytest.approx(new_loss, abs=1e-5)
    assert promoted["against_loss"] == pytest.approx(old_loss, abs=1e-5)
    assert promoted["step"] == 20 and promoted["student"] == student

    assert f"held-out loss {promoted['eval_loss']:.4f}" in result.output
    assert f"current teacher {promoted['against_loss']:.4f}" in result.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert (
        "already holds a model checkpoint (config.json, metrics.json, model.safetensors, "
        in again.output
    )
    assert "pass --overwrite to replace it" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    same = CliRunner().invoke(main, ["teacher", "promote", student, "-o", student])
    assert same.exit_code == 1 and "its own --output" in same.output
    alone = CliRunner().invoke(main, [*args[:5], "--against", teacher, "--overwrite"])
    assert alone.exit_code == 1 and "give --eval data too" in alone.output
    missing = CliRunner().invoke(main, ["teacher", "promote", str(tmp_path / "nothing"), "-o", "x"])
    assert missing.exit_code == 1 and "checkpoint directory not found" in missing.output


def test_promote_refuses_a_student_worse_than_the_teacher_it_replaces(noisy_shards, tmp_path):
    from click.testing import CliRunner

    from jestflow.cli import main

    torch.manual_seed(0)
    untrained = str(tmp_path / "untrained")  # ≈ ln 256 per byte, far above the trained teacher
    save_checkpoint(new_model("lm", **TINY), untrained)
    teacher = str(noisy_shards / "teacher")
    held_out = str(noisy_shards / "eval.jsonl")
    examples, _ = load_examples((held_out,), TEXT)
    worse = evaluate(load_model(untrained), examples, 32)[0]
    better = evaluate(load_model(teacher), examples, 32)[0]
    assert worse > better + 1
    base = ["teacher", "promote", "--eval", held_out, "--device", "cpu"]
    out = tmp_path / "next"
    refused = CliRunner().invoke(main, [*base, untrained, "-o", str(out), "--against", teacher])
    assert refused.exit_code == 1, refused.output
    assert f"held-out loss {worse:.4f} is worse than the current teacher's {better:.4f}" in (
        refused.output
    )
    assert "pass --force" in refused.output and not any(out.iterdir())  # nothing promoted
    forced = [*base, untrained, "-o", str(out), "--against", teacher, "--force"]
    assert CliRunner().invoke(main, forced).exit_code == 0
    assert (out / "model.safetensors").is_file()
    # The other way round: a better model replacing a worse one needs no --force.
    up = [*base, teacher, "-o", str(tmp_path / "up"), "--against", untrained]
    done = CliRunner().invoke(main, up)
    assert done.exit_code == 0, done.output
    assert f"current teacher {worse:.4f} ({better - worse:+.4f} with the new one)" in done.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "committed"),
    [
        ("loop:select_online:14", 12),  # in the middle of a step
        ("checkpoints:save_checkpoint:4", 9),  # step 12's folder written, not yet committed
        ("checkpoints:write_json:4", 12),  # committed, the model not yet copied to the top
        ("checkpoints:copy_model:4", 12),  # copied, step 9's folder not yet removed
    ],
)
def test_a_killed_run_resumes_from_its_last_checkpoint(noisy_shards, tmp_path, point, committed):
    """SIGKILL the trainer at a chosen point (the kill hook, tests/kill/): --resume continues
    from the last committed checkpoint, the log holds every step once, and the run ends with the
    parameters and optimizer state of one that was never interrupted."""

    def command(out):
        return [
            sys.executable,
            "-m",
            "jestflow.cli",
            "train",
            "--shards",
            str(noisy_shards / "shards" / "shard-000000-{000000..000003}.tar"),
            "--task",
            "lm",
            "-o",
            str(out),
            "--steps",
            "30",
            "--eval-every",
            "3",
            "--batch-size",
            "16",
            "--super-batch-ratio",
            "4",
            "--lr",
            str(lr(3e-3)),
            "--warmup-steps",
            "2",
            "--seed",
            str(SEED),
            "--device",
            "cpu",
            "--d-model",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
            "--max-len",
            "64",
        ]

    out = tmp_path / "run"
    args = command(out)
    run_until_killed(args, f"jestflow.trainer.{point}")
    assert json.loads((out / "trainer_state.json").read_text())["step"] == committed
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    steps = [
        json.loads(line)["step"]
        for line in (out / "log.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == list(range(1, 31))
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 30
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000030"]
    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, timeout=300)
    assert whole.returncode == 0
    assert_same_state(run_state(out), run_state(tmp_path / "whole"))


def test_a_run_killed_after_its_last_commit_is_repaired_and_promoted_from_the_commit(
    noisy_shards, tmp_path
):
    """The state after a kill between the commit and the copy to the top: trainer_state.json
    says step 6, the top still holds other weights. Resume and promote use the commit."""
    from jestflow.trainer.checkpoints import checkpoint_folder
    from jestflow.trainer.promote import PromoteConfig, promote
    from jestflow.transforms.formats.model_files import fingerprint

    out = tmp_path / "run"
    train(config(noisy_shards, out, steps=6, eval_every=3, eval_inputs=()))
    committed = fingerprint(checkpoint_folder(str(out)))
    assert fingerprint(str(out)) == committed
    torch.manual_seed(7)
    save_checkpoint(new_model("lm", **TINY), str(out))  # the top, as a kill left it
    assert fingerprint(str(out)) != committed
    result = promote(PromoteConfig(student=str(out), output=str(tmp_path / "teacher")))
    assert result.fingerprint == committed == fingerprint(str(tmp_path / "teacher"))
    with pytest.raises(JestflowError, match="already at step 6"):
        train(config(noisy_shards, out, steps=6, eval_every=3, eval_inputs=(), resume=True))
    assert fingerprint(str(out)) == committed  # repaired on the way


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(noisy_shards, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "lo')  # torn
    last = train(config(noisy_shards, out, steps=4, eval_every=2, eval_inputs=(), resume=True))
    assert last["step"] == 4
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def with_info(root, out, **info):
    """A copy of the fixture's shards whose samples' json also say `info`."""
    (out / "shards").mkdir(parents=True)
    for tar in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(tar) as source, tarfile.open(out / "shards" / tar.name, "w") as copy:
            for member in source.getmembers():
                data = source.extractfile(member).read()
                if member.name.endswith(".json"):
                    data = json.dumps({**json.loads(data), **info}).encode()
                member.size = len(data)
                copy.addfile(member, io.BytesIO(data))
    (out / "eval.jsonl").write_bytes((root / "eval.jsonl").read_bytes())
    return out


def test_an_lm_student_scores_what_the_shards_teacher_scored_unless_told(
    noisy_shards, tmp_path, caplog
):
    assert config(noisy_shards, tmp_path / "a").scoring_length is None
    assert config(noisy_shards, tmp_path / "a", score_seq_len=0).scoring_length is None
    assert config(noisy_shards, tmp_path / "a", score_seq_len=16).scoring_length == 16
    with pytest.raises(JestflowError, match="token count"):
        config(noisy_shards, tmp_path / "a", score_seq_len=-1)
    first40 = with_info(noisy_shards, tmp_path / "first40", score_seq_len=40)

    warned = {}

    def score_flops(name, root=noisy_shards, **changes):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="jestflow.trainer.windows"):
            train(config(root, tmp_path / name, steps=2, eval_inputs=(), max_len=256, **changes))
        warned[name] = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "jestflow.trainer.windows"
        ]
        return [r["score_flops"] for r in lines(tmp_path / name)]

    # the fixture's sentences run to about 60 bytes: 16 or 40 of them cost less to score
    whole, cut = score_flops("all", score_seq_len=0), score_flops("40", score_seq_len=40)
    short = score_flops("16", score_seq_len=16)
    assert all(s < c < w for s, c, w in zip(short, cut, whole, strict=True))
    # unless told, the student scores what the shards' teacher scored: whole texts in the
    # fixture's (no score_seq_len in the samples' json), the first 40 tokens in the copy's
    assert score_flops("default") == whole
    assert score_flops("follows", root=first40) == cut
    # shards with one teacher loss per document still train, with a warning; a length other than
    # the teacher's is told it compares unlike lengths
    one_loss = (
        "the shards hold one teacher loss per document, on {}: the student scores the same and "
        "trains on each document's start; curate again (the default scores whole documents) to "
        "train on windows of whole documents"
    )
    assert warned["default"] == [one_loss.format("its start (the model's context)")]
    assert warned["follows"] == [one_loss.format("its first 40 tokens")]
    assert warned["all"] == []
    assert warned["16"] == [
        "the shards' teacher losses cover whole texts, the student scores the first 16 tokens: "
        "drop --score-seq-len to follow the shards (or curate again with the student's length)"
    ]
