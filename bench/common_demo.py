"""The demo corpora as the data-efficiency and memory benches use them (bench/data_efficiency.py,
bench/memory.py): their files, field maps and tasks, the teacher of each task, and the pool of each
task curated by `jestflow curate` into shard sets (made on first use, reused under OUT). The task
`lm-documents` is not the demo's: long documents of 1–8 KB (bench/common_documents.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from common_documents import write_documents

from jestflow.demo.config import minilm_model
from jestflow.demo.corpora import DemoDataConfig, make_corpora
from jestflow.demo.scenes import SceneConfig, make_scenes
from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.job import run_curation
from jestflow.trainer.calibrate import CalibrateConfig, calibrate
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.records import FieldMap
from jestflow.transforms.selection.offline import SelectionConfig

LM_TEXT = FieldMap(text="text", keep=("kind",))
PAIRS = FieldMap(query="query", doc="doc", keep=("kind",))
IMAGE_TEXT = FieldMap(image="png", caption="txt", keep=("kind",))
FIELDS = {"lm": LM_TEXT, "lm-documents": LM_TEXT, "contrastive": PAIRS, "image-text": IMAGE_TEXT}
FIELDS["image-text-softmax"] = IMAGE_TEXT
MODEL_TASK = {
    "lm": "lm",
    "lm-documents": "lm",
    "contrastive": "contrastive",
    "image-text": "contrastive",
    "image-text-softmax": "contrastive",
}
# `image-text-softmax`: the image-text scenes with the softmax (CLIP) loss for teacher, curation
# and students; the other tasks use the sigmoid one
LOSS = {"image-text-softmax": "softmax"}
# (folder under data/, reference, eval, pool)
FILES = {
    "lm": ("lm", "reference.jsonl", "eval.jsonl", "pool.jsonl"),
    "lm-documents": ("lm-documents", "reference.jsonl", "eval.jsonl", "pool.jsonl"),
    "contrastive": ("contrastive", "reference.jsonl", "eval.jsonl", "pool.jsonl"),
    "image-text": ("image-text", "reference-*.tar", "eval-*.tar", "pool-*.tar"),
}
FILES["image-text-softmax"] = FILES["image-text"]


def data_file(out: Path, task: str, which: int) -> str:
    """A corpus's reference (0), eval (1) or pool (2) file (a glob for the tars)."""
    folder, *files = FILES[task]
    return str(out / "data" / folder / files[which])


def clean_file(out: Path, task: str) -> str:
    """The pool's clean records alone (kind "clean"), beside it: an oracle filter, the most that
    removing the noise can give a uniform student."""
    pool = Path(data_file(out, task, 2))
    clean = pool.with_name("pool-clean.jsonl")
    if not clean.exists():
        lines = pool.read_text().splitlines()
        clean.write_text("".join(f"{x}\n" for x in lines if json.loads(x)["kind"] == "clean"))
    return str(clean)


# curated shard sets: name → (the fraction of the pool `jestflow curate` keeps, its
# --score-seq-len: None is the default, whole documents window by window). Each one is a full
# teacher pass over the pool; "scored" keeps everything, for the online arms to choose from.
CURATED = {
    "scored": (1.0, None),
    "offline": (0.5, None),
    "offline 30 %": (0.3, None),
    "offline 20 %": (0.2, None),
    "offline 30 % 64-token teacher": (0.3, 64),
}


def prepare(out: Path, args) -> None:
    """Demo corpora and the teachers every seed shares."""
    data = out / "data"
    if not (data / "lm" / "pool.jsonl").exists():
        make_corpora(DemoDataConfig(output=str(data)))
    if "lm-documents" in args.tasks:
        write_documents(
            data / "lm-documents", reference=1000, pool=args.documents, held_out=40, seed=0
        )
    scenes = {"image-text", "image-text-softmax"} & set(args.tasks)
    if scenes and not (data / "image-text" / "pool-000000.tar").exists():
        make_scenes(SceneConfig(output=str(data)))
    for task in args.tasks:
        teacher = out / f"teacher-{task}"
        if not (teacher / "config.json").exists():
            make_teacher(task, teacher, out, args)


def curated_dir(out: Path, task: str, source: str) -> Path:
    return out / f"{task}-{source.replace(' %', '').replace(' ', '-')}"


def shard_set(out: Path, task: str, source: str) -> str:
    """The task's pool curated as `CURATED[source]` says (curated on first use), as a shard
    pattern."""
    target = curated_dir(out, task, source)
    if not (target / "stats.json").exists():
        stats = run_curation(
            CurateConfig(
                inputs=(data_file(out, task, 2),),
                output=str(target),
                teacher=str(out / f"teacher-{task}"),
                task=MODEL_TASK[task],
                fields=FIELDS[task],
                selection=SelectionConfig(keep=CURATED[source][0]),
                super_batch=1000,
                score_seq_len=CURATED[source][1] if task == "lm" else None,
                shard_max_count=500,
                workers=1,
                overwrite=True,
            )
        )
        print(f"curated {task} {source}: {stats['counts']}", flush=True)
    return str(target / "shards" / "*.tar")


def make_teacher(task: str, teacher: Path, out: Path, args) -> None:
    """The task's teacher: the calibrated MiniLM for text pairs (where installed and not
    `--pair-teacher built-in`), else a built-in one (600 steps for the two-tower ones)."""
    fields = dataclasses.replace(FIELDS[task], keep=())
    reference, held_out = data_file(out, task, 0), data_file(out, task, 1)
    minilm = minilm_model() if task == "contrastive" and args.pair_teacher != "built-in" else None
    if minilm is not None:
        fit = calibrate(
            CalibrateConfig(
                model=minilm,
                inputs=(reference,),
                eval_inputs=(held_out,),
                output=str(teacher),
                fields=fields,
                overwrite=True,
            )
        )
        print(
            f"teacher {task}: MiniLM calibrated, eval loss {fit.after[0]:.3f}, "
            f"recall@1 {fit.after[1]:.3f}",
            flush=True,
        )
        return
    steps = args.teacher_steps if task == "lm" else args.pair_teacher_steps
    result = train_teacher(
        TeacherConfig(
            inputs=(reference,),
            eval_inputs=(held_out,),
            output=str(teacher),
            task=MODEL_TASK[task],
            fields=fields,
            steps=steps,
            loss=LOSS.get(task),
            overwrite=True,
        )
    )
    print(
        f"teacher {task}: built-in, eval loss {result.eval_loss:.3f}"
        + ("" if result.eval_recall_at_1 is None else f", recall@1 {result.eval_recall_at_1:.3f}"),
        flush=True,
    )
