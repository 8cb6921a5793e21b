"""The README's plain-WebDataset training loop runs on shards that `jestflow curate` wrote where
the quick start writes them, and its model learns."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from corpora import fit
from helpers import lr, sentences, write_jsonl

from jestflow.cli import main
from jestflow.transforms.records import FieldMap

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_plain_webdataset_loop_in_the_readme_runs(tmp_path, learned):
    block = re.search(r"<!-- plain-loop -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "the README lost its plain-loop block"
    pool = write_jsonl(tmp_path / "pool.jsonl", ({"text": t} for t in sentences(400, 11)))
    reference = write_jsonl(tmp_path / "ref.jsonl", ({"text": t} for t in sentences(200, 12)))
    teacher = fit(reference, tmp_path / "teacher", "lm", FieldMap(text="text"), steps=20)
    curated = tmp_path / "curated"  # where the quick start writes them
    args = [
        "curate",
        pool,
        "-o",
        str(curated),
        "--teacher",
        teacher,
        "--task",
        "lm",
        "--keep",
        "0.5",
        "--super-batch",
        "100",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    loop = block.group(1)
    assert "lr=1e-2" in loop
    loop = loop.replace("lr=1e-2", f"lr={lr(1e-2)!r}")  # ~0 when the models are broken on purpose
    run = subprocess.run(
        [sys.executable, "-c", loop],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    # it trained: a byte model that knows nothing is at ln 256 ≈ 5.55 nats and more
    learned.expect("last loss", float(run.stdout.split()[-1]), "<", math.log(256) - 1.5)
