"""A classifier teacher beside the LM teacher: what `jestflow curate --keep 0.3` keeps of the demo's
LM pool (16,000 records, 20 % clean docstrings, the rest six kinds of noise) with

  lm teacher      the byte LM trained on the reference (easy reference, −ℓ: the default)
  classifier      the built-in n-gram classifier, the reference against a sample of the pool
                  (`teacher train --task classifier`): its log-odds
  ensemble        both (`--teacher LM --teacher CLASSIFIER`): the sum of their z-scores within
                  each super-batch

by the records' `kind` tags (which selection never reads), with default options and with
`--method topk`; each teacher's training seconds and its scoring seconds per 1,000 documents
(the pool's deduplicated records, in this process on its cores, the way a curation worker scores
a chunk).

Run: python bench/classifier_teacher.py [--out build/bench-classifier-teacher]
     (about 15 minutes on 2 cores; data and teachers are made under --out when missing)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from common_demo import FIELDS, data_file, prepare
from common_results import command_line, record

from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.handlers import model_outputs
from jestflow.pipeline.job import run_curation
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.readers import read_examples
from jestflow.transforms.records import Example, FieldMap
from jestflow.transforms.reporting.logs import configure
from jestflow.transforms.reporting.tables import text_table
from jestflow.transforms.selection.offline import SelectionConfig

KEEP = 0.3
METHODS = ("sample", "topk")


def train_classifier(out: Path) -> float:
    """The classifier teacher (made once under `out`); its training seconds."""
    target = out / "teacher-classifier"
    if (target / "metrics.json").exists():
        return json.loads((target / "metrics.json").read_text())["seconds"]
    result = train_teacher(
        TeacherConfig(
            inputs=(data_file(out, "lm", 0),),
            negatives=(data_file(out, "lm", 2),),
            output=str(target),
            task="classifier",
            fields=FieldMap(text="text"),
            device="cpu",
            overwrite=True,
        )
    )
    print(f"classifier: held-out accuracy {result.eval_accuracy:.3f}", flush=True)
    return result.seconds


def scoring_seconds(teacher: str, examples: list[Example]) -> float:
    """Seconds per 1,000 documents of one teacher's scoring pass (whole documents for the LM)."""
    model = load_model(teacher, device="cpu")
    model_outputs(model, examples[:50], task="lm")  # warm-up
    began = time.perf_counter()
    model_outputs(model, examples, task="lm")
    return 1000 * (time.perf_counter() - began) / len(examples)


def curate(out: Path, name: str, teachers: list[str], method: str) -> Counter:
    """The kinds of what one curation kept (each teacher's scores are cached after its first
    run)."""
    target = out / f"curated-{name.replace(' ', '-')}-{method}"
    run_curation(
        CurateConfig(
            inputs=(data_file(out, "lm", 2),),
            output=str(target),
            teacher=teachers[0],
            teachers=tuple(teachers[1:]),
            task="lm",
            fields=FIELDS["lm"],
            selection=SelectionConfig(keep=KEEP, method=method),
            super_batch=1000,
            cache=str(out / "cache"),
            device="cpu",
            workers=2,
            overwrite=True,
        )
    )
    rows = read_manifest(str(target / "manifest")).to_pylist()
    return Counter(json.loads(r["meta"])["kind"] for r in rows if r["status"] == "selected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/bench-classifier-teacher")
    parser.add_argument("--documents", type=int, default=2000, help="scored for the timing")
    args = parser.parse_args()
    configure("WARNING")
    out = Path(args.out).resolve()
    args.tasks, args.teacher_steps, args.pair_teacher_steps, args.pair_teacher = ("lm",), 300, 0, ""
    lm_began = time.perf_counter()
    prepare(out, args)
    lm_train = json.loads((out / "teacher-lm" / "metrics.json").read_text())["seconds"]
    print(f"lm teacher ready in {time.perf_counter() - lm_began:.0f} s", flush=True)
    classifier_train = train_classifier(out)
    lm, classifier = str(out / "teacher-lm"), str(out / "teacher-classifier")
    pool = read_examples((data_file(out, "lm", 2),), FIELDS["lm"])
    examples = [ex for ex in pool if isinstance(ex, Example)][: args.documents]
    per_1k = {"lm teacher": scoring_seconds(lm, examples)}
    per_1k["classifier"] = scoring_seconds(classifier, examples)
    per_1k["ensemble"] = per_1k["lm teacher"] + per_1k["classifier"]
    trained = {"lm teacher": lm_train, "classifier": classifier_train}
    trained["ensemble"] = lm_train + classifier_train
    arms = {"lm teacher": [lm], "classifier": [classifier], "ensemble": [lm, classifier]}
    rows, found = [], []
    for method in METHODS:
        for name, teachers in arms.items():
            kinds = curate(out, name, teachers, method)
            total = sum(kinds.values())
            shares = {kind: n / total for kind, n in sorted(kinds.items())}
            noise = ", ".join(f"{k} {v:.0%}" for k, v in shares.items() if k != "clean" and v)
            row = [name, method, str(total), f"{shares.get('clean', 0):.1%}", noise]
            rows.append([*row, f"{trained[name]:.0f}", f"{per_1k[name]:.2f}"])
            found.append(
                {"teacher": name, "method": method, "kept": total, "shares": shares}
                | {"train_s": trained[name], "score_s_per_1k": per_1k[name]}
            )
            print(rows[-1], flush=True)
    print(f"\ncurate --keep {KEEP} of the demo LM pool (20 % clean), by kind of what was kept")
    header = ("teacher", "method", "kept", "clean", "noise kept", "train s", "score s/1k")
    print(text_table(rows, header=header))
    record(
        "classifier_teacher",
        title="Classifier teacher",
        command=command_line(),
        data={"rows": found, "documents_timed": len(examples)},
    )


if __name__ == "__main__":
    main()
