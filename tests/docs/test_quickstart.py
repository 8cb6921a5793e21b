"""The docs' code runs as written. The README's quick start runs, its bash blocks verbatim, in a
fresh folder (for image–text the test lays down what the README says the user brings: tars of
jpg + txt and a CLIP folder, here a tiny one built offline); then every Python block of the README
and of docs/ runs in that folder, as a reader would run it after the quick start."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mktestdocs import grab_code_blocks
from tiny_hf import tiny_clip

from jestflow.demo.scenes import SceneConfig, make_scenes

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

# the quick start takes a few minutes on 2 idle cores: the module fixture runs it once
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def bash_block(name: str) -> str:
    """The ```bash block right after `<!-- name -->` in the README."""
    found = re.search(rf"<!-- {name} -->\n```bash\n(.*?)```", README.read_text(), re.S)
    assert found, f"the README lost its {name} block"
    return found.group(1)


def environment(folder: Path) -> dict[str, str]:
    """This interpreter's `jestflow` first on PATH, and Hugging Face kept off the network."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HOME": str(folder / ".hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def run_in(folder: Path, argv: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=folder, env=environment(folder), capture_output=True, text=True, timeout=timeout
    )


def run_bash(script: str, folder: Path) -> None:
    run = run_in(folder, ["bash", "-euo", "pipefail", "-c", script], timeout=900)
    assert run.returncode == 0, f"{script}\nexit {run.returncode}\n{run.stderr[-3000:]}"


def jpg_pairs(source: Path, target: Path) -> list[str]:
    """The demo's scene tars (png + txt + json) as the tars the quick start reads (jpg + txt)."""
    from PIL import Image

    captions = []
    target.mkdir()
    for tar_path in sorted(source.glob("*.tar")):
        with tarfile.open(tar_path) as src, tarfile.open(target / tar_path.name, "w") as dst:
            for member in src.getmembers():
                data = src.extractfile(member).read()
                name = member.name
                if name.endswith(".png"):
                    out = io.BytesIO()
                    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="JPEG")
                    data, name = out.getvalue(), name[: -len("png")] + "jpg"
                elif name.endswith(".txt"):
                    captions.append(data.decode())
                else:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    return captions


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("quickstart")
    run_bash(bash_block("quickstart-data"), folder)
    run_bash(bash_block("quickstart-text"), folder)
    scenes = tmp_path_factory.mktemp("scenes")
    make_scenes(
        SceneConfig(
            output=str(scenes), reference_size=300, eval_size=10, pool_size=400, shard_size=200
        )
    )
    captions = jpg_pairs(scenes / "image-text", folder / "pairs")
    tiny_clip(folder / "clip", captions)
    run_bash(bash_block("quickstart-image-text"), folder)
    return folder


def lines(path: Path) -> int:
    return sum(1 for _ in path.open())


def test_the_text_quick_start_curates_the_pool_and_trains_a_student(quickstart):
    manifest = pq.read_table(quickstart / "curated" / "manifest")
    assert manifest.num_rows == lines(quickstart / "pool.jsonl") == 2000
    stats = json.loads((quickstart / "curated" / "stats.json").read_text())
    counts = stats["counts"]
    assert counts["inputs"] == 2000
    scored = counts["selected"] + counts["not_selected"]
    assert counts["selected"] == pytest.approx(0.3 * scored, abs=2)  # 30 % of each super-batch
    assert sorted(p.name for p in (quickstart / "curated" / "shards").glob("*.tar"))
    state = json.loads((quickstart / "student" / "trainer_state.json").read_text())
    assert state["step"] == 200
    evals = [
        r
        for r in map(json.loads, (quickstart / "student" / "log.jsonl").open())
        if "eval_loss" in r
    ]
    assert evals, "the student was evaluated on eval.jsonl"
    assert (quickstart / "student" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_image_text_quick_start_curates_pairs_with_a_clip_teacher(quickstart):
    calibration = json.loads((quickstart / "clip-teacher" / "calibration.json").read_text())
    assert calibration  # (t, β) fitted on the reference pairs
    manifest = pq.read_table(quickstart / "curated-pairs" / "manifest").to_pydict()
    assert len(manifest["id"]) == 400
    selected = manifest["status"].count("selected")
    assert selected == pytest.approx(0.5 * (400 - manifest["status"].count("duplicate")), abs=2)
    with tarfile.open(next((quickstart / "curated-pairs" / "shards").glob("*.tar"))) as tar:
        names = tar.getnames()
    assert any(n.endswith(".jpg") for n in names) and any(n.endswith(".npy") for n in names)
    state = json.loads((quickstart / "student-pairs" / "trainer_state.json").read_text())
    assert state["step"] == 200


def python_blocks() -> list:
    blocks = []
    for page in PAGES:
        for i, code in enumerate(grab_code_blocks(page.read_text(), lang="python")):
            blocks.append(pytest.param(code, id=f"{page.relative_to(ROOT)}#{i}"))
    return blocks


@pytest.mark.parametrize("code", python_blocks())
def test_each_python_block_of_the_docs_runs_after_the_quick_start(quickstart, code):
    run = run_in(quickstart, [sys.executable, "-c", code], timeout=300)
    assert run.returncode == 0, f"{code}\n{run.stderr[-3000:]}"
