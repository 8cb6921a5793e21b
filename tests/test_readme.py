"""The README's plain-WebDataset training loop runs on shards as `jestflow curate --tiers` names them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from jestflow.transforms.records import make_example
from jestflow.transforms.shards import ShardWriter, sample_of

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_plain_webdataset_loop_in_the_readme_runs(tmp_path):
    block = re.search(r"<!-- plain-loop -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "the README lost its plain-loop block"
    code = block.group(1)
    shards = tmp_path / "build" / "demo" / "curated-lm" / "shards"
    for tier in range(2):
        with ShardWriter(str(shards), prefix=f"tier-{tier:02d}-shard-000000") as writer:
            for i in range(20):
                example = make_example(layout="text", text=f"return the sum {i} of a list",
                                       source="pool", position=i)  # fmt: skip
                writer.write(sample_of(example, {"teacher_loss": 1.0, "score": -1.0, "tier": tier}))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.split()[-1]) < 5.5  # it trained: uniform over bytes is 5.55
