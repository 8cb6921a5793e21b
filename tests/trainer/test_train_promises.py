"""README promises about curated shards and the online trainer that no other test checks, on
real outputs: every sample's json names the teacher and the student it was curated with (their
fingerprints, which follow the models), and a `torchrun` run killed mid-way and resumed with
`--resume` ends as an uninterrupted `torchrun` run does: the same steps and losses in its log,
the same parameters and optimizer state.

(Named test_train_promises.py: a test_promises.py elsewhere under tests/ would clash with
tests/pipeline/test_promises.py, the test folders being no packages.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from corpora import curate, samples
from helpers import KILL_HOOK, SEED, kept_by_budget
from safetensors.torch import load_file, save_file

from jestflow.trainer.checkpoints import checkpoint_folder
from jestflow.transforms.formats.model_files import WEIGHTS, fingerprint
from jestflow.transforms.selection.offline import SelectionConfig

LEARN = SelectionConfig(keep=0.25, seed=1, mode="learnability")


def sample_infos(out) -> list[dict]:
    """The json of every sample in a run's shards."""
    return [s["json"] for shard in sorted((out / "shards").glob("*.tar")) for s in samples(shard)]


def changed_copy(model, out) -> str:
    """A copy of a checkpoint with one weight nudged: another model, the same config."""
    shutil.copytree(model, out)
    tensors = load_file(str(out / WEIGHTS))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(out / WEIGHTS))
    return str(out)


@pytest.fixture(scope="module")
def curated(noisy, tmp_path_factory):
    """The noisy corpus curated by learnability: its teacher and its weaker student."""
    out, _ = curate(
        noisy,
        tmp_path_factory.mktemp("promises") / "curated",
        student=str(noisy / "student"),
        selection=LEARN,
    )
    return out


def test_every_sample_names_the_teacher_and_student_it_was_curated_with(noisy, curated, tmp_path):
    """README, the sample's json: "… teacher and student fingerprints …" — each equal to the
    model folder's fingerprint (model_files.fingerprint), and another model gives another one."""
    teacher, student = fingerprint(str(noisy / "teacher")), fingerprint(str(noisy / "student"))
    assert teacher != student
    infos = sample_infos(curated)
    n = kept_by_budget(curated, 0.25)  # keep 0.25 of each super-batch of the 240 scored
    assert len(infos) == n
    assert [i.get("teacher") for i in infos] == [teacher] * n, "a sample misnames its teacher"
    assert [i.get("student") for i in infos] == [student] * n, "a sample misnames its student"

    new_teacher = changed_copy(noisy / "teacher", tmp_path / "teacher-2")
    new_student = changed_copy(noisy / "student", tmp_path / "student-2")
    assert len({teacher, student, fingerprint(new_teacher), fingerprint(new_student)}) == 4
    again, _ = curate(
        noisy, tmp_path / "again", teacher=new_teacher, student=new_student, selection=LEARN
    )
    infos = sample_infos(again)
    assert infos and {i.get("teacher") for i in infos} == {fingerprint(new_teacher)}
    assert {i.get("student") for i in infos} == {fingerprint(new_student)}


def torchrun_train(shards, out, steps: int, *extra: str) -> list[str]:
    """`torchrun --nproc-per-node 2 --standalone -m jestflow.cli train …` (README), on CPUs."""
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *("-m", "jestflow.cli", "train", "--shards", str(shards / "*.tar"), "--task", "lm"),
        *("-o", str(out), "--batch-size", "8", "--super-batch-ratio", "2"),
        *("--steps", str(steps), "--eval-every", "3", "--warmup-steps", "2"),
        *("--seed", str(SEED), "--device", "cpu"),
        *("--d-model", "32", "--layers", "1", "--heads", "2", "--max-len", "64"),
        *extra,
    ]


def torchrun_until_a_rank_is_killed(args: list[str], point: str, *, timeout: float = 120) -> str:
    """Run `torchrun …` with the kill hook armed at `point` (tests/kill/). torchrun starts each
    rank in a session of its own, so the hook kills the rank that gets there first (SIGKILL,
    with its reader process); torchrun then stops the other rank and fails. Its stderr."""
    path = os.pathsep.join(filter(None, (str(KILL_HOOK), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "JESTFLOW_KILL_AFTER": point, "PYTHONPATH": path}
    job = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.send_signal(signal.SIGTERM)  # torchrun passes it on to the ranks
        job.communicate(timeout=30)
        raise AssertionError(f"{point}: still running after {timeout} s") from None
    assert job.returncode != 0 and "(SIGKILL)" in err, f"{point}: no rank was killed\n{err}"
    return err


def log_steps(out) -> list[tuple]:
    """Each step's (step, loss, learnability of the chosen, kinds chosen, examples seen) from
    log.jsonl."""
    text = (out / "log.jsonl").read_text()  # a killed run's torn last line is no record
    lines = [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
    return [
        (r["step"], r["loss"], r["learnability"], r["tags"], r["examples_seen"])
        for r in lines
        if "loss" in r
    ]


def final_state(out) -> tuple[dict, dict]:
    """(trainer_state.json, the committed optimizer state) of a run."""
    state = json.loads((out / "trainer_state.json").read_text())
    optimizer = torch.load(f"{checkpoint_folder(str(out))}/optimizer.pt", weights_only=True)
    return state, optimizer


@pytest.mark.slow  # three torchrun launches: 29-36 s on the loaded 2-core VM
def test_a_killed_torchrun_run_resumes_to_the_state_of_an_uninterrupted_one(
    curated, tmp_path, monkeypatch
):
    """README (`train`): `--resume` "ends with the parameters and optimizer state an
    uninterrupted run reaches, bit for bit … each rank's stream is seeded by (seed, rank)",
    under `torchrun` too. A rank is killed (SIGKILL, the kill hook) in the middle of step 6,
    after the checkpoint at step 3, and torchrun stops the other; the resumed run takes steps 4
    to 8 (the log lines of 4 and 5 dropped and written again)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the killed run's environment too
    shards, steps = curated / "shards", 8
    whole = subprocess.run(
        torchrun_train(shards, tmp_path / "whole", steps),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "parts"
    torchrun_until_a_rank_is_killed(
        torchrun_train(shards, out, steps), "jestflow.trainer.loop:select_online:6"
    )
    killed, _ = final_state(out)
    assert killed["step"] == 3, killed  # step 6's checkpoint never came
    assert [r[0] for r in log_steps(out)][:4] == [1, 2, 3, 4]  # steps past it were logged
    resumed = subprocess.run(
        torchrun_train(shards, out, steps, "--resume"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected, got = log_steps(tmp_path / "whole"), log_steps(out)
    assert [r[0] for r in expected] == list(range(1, steps + 1))
    assert got == expected, "the resumed run's log differs from the uninterrupted run's"
    (state, optimizer), (state_whole, optimizer_whole) = (
        final_state(out),
        final_state(tmp_path / "whole"),
    )
    assert state["step"] == steps == state_whole["step"]
    assert len(state["parameter_digests"]) == 2 and len(set(state["parameter_digests"])) == 1
    assert state["parameter_digests"] == state_whole["parameter_digests"], "other parameters"
    assert fingerprint(str(out)) == fingerprint(str(tmp_path / "whole"))
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{steps:08d}"]
    assert optimizer["param_groups"] == optimizer_whole["param_groups"]
    assert optimizer["state"].keys() == optimizer_whole["state"].keys()
    for key, values in optimizer["state"].items():
        for name, value in values.items():
            assert torch.equal(value, optimizer_whole["state"][key][name]), (key, name)
