"""The results page of the documentation, generated from bench/results.json: a section per
benchmark, each run labelled with its command, date, machine and commit, its tables and plots
formatted from the recorded data (no measured number is written here). `make docs` builds it
through docs/hooks/results.py; this writes it to a folder to look at.

Run: python bench/results_page.py [--results bench/results.json] --out DIR
     (writes DIR/results.md and DIR/results/*.png)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common_page_jobs as jobs
from common_page import fmt, label, slug, table
from common_page_runs import data_efficiency, demo

BENCH = Path(__file__).resolve().parent

# family (an entry's name, or the start of it before `_`) → (anchor, heading, what it measures)
SECTIONS = {
    "demo": (
        "demo",
        "The demo",
        "`jestflow demo`: for each task, a teacher, `curate`, then the "
        "same student trained uniformly on the raw pool and with online JEST on the curated "
        "shards; steps, compute and time each needs to reach the baseline's final held-out "
        "loss.",
    ),
    "data_efficiency": (
        "data-efficiency",
        "Data efficiency",
        "The same student, steps and "
        "batch size trained by each selection method (arm) over several seeds, "
        "against the uniform run of the same seed: steps-, compute- and "
        "time-to-target, the final held-out loss, and the clean share of what "
        "each trained on.",
    ),
    "document_quality": (
        "whole-documents",
        "Whole documents",
        "Long documents curated with "
        "default options, on this tree and on the tree before documents were "
        "scored whole: what the kept set holds.",
    ),
    "teachers": (
        "teachers",
        "Teachers",
        "Each contrastive teacher's held-out recall@1 and loss, "
        "the mispaired share of what `curate` keeps with it (joint and independent "
        "selection, and a random keep of the same size), and its scoring speed.",
    ),
    "curate": (
        "curation-job",
        "The curation job against a plain loop",
        "`jestflow curate` "
        "(Beam, local runner) against one process that calls the job's own scoring, "
        "selection and writing functions, on the same data and teacher.",
    ),
    "load": (
        "load",
        "Load",
        "`jestflow curate` on synthetic pools of growing size with a tiny "
        "teacher, so that the job's own machinery is what is loaded: time, the process "
        "tree's peak memory, spill files, and the accounting of every input.",
    ),
    "memory": (
        "memory",
        "Memory over long runs",
        "The peak resident memory of each long "
        "training path early in a run against at its end (target: the ratio at most "
        "1.2).",
    ),
    "trainer": (
        "trainer-overhead",
        "The online trainer's overhead",
        "Step time of learnability "
        "selection (the student scores r·b candidates and trains on b) against uniform, "
        "beside the overhead its FLOPs predict.",
    ),
    "selection": (
        "selection",
        "JEST selection against a teacher pass",
        "`select_joint` on lazy "
        "pair scores against one forward pass of the built-in two-tower teacher over "
        "the same super-batch, and its memory (it must never build a B×B matrix).",
    ),
    "cpu_kernels": (
        "cpu-kernels",
        "Across CPU kernels",
        "The demo's curation under each CPU "
        "kernel setting against the machine's own kernels: how far the teacher's "
        "outputs move, and whether any selection or shard changes.",
    ),
    "margins": (
        "margins",
        "Margins of the learned bounds",
        "Every test that asserts what a "
        "trained model reaches, under each kernel setting and training seed: each "
        "bound's worst and best value, and what untrained models reach (which must fail "
        "it).",
    ),
    "cache": (
        "cache",
        "Re-curation with the score cache",
        "The demo's curation step run "
        "without the cache, cold, warm, with new data and with a new teacher.",
    ),
    "contrastive_scores": (
        "contrastive-scores",
        "Contrastive scores",
        "What `curate --keep 0.5` keeps of the demo's pair pools with each offline score "
        "(easy reference under the sigmoid and the softmax loss, CLIP-score, negCLIPLoss), "
        "by the records' `kind` tags.",
    ),
    "classifier_teacher": (
        "classifier-teacher",
        "Classifier teacher",
        "What `curate --keep 0.3` keeps of the demo's LM pool with the LM teacher, a classifier "
        "teacher (the reference against a sample of the pool: its log-odds) and both (the sum "
        "of their z-scores), by the records' `kind` tags; each teacher's training and scoring "
        "seconds.",
    ),
    "stability": (
        "stability",
        "Re-curation stability",
        "A pool of 12,024 real records curated, then again with 0.1 % of its "
        "records edited in place, removed or inserted mid-file (same teacher, options and "
        "seed): the Jaccard of the kept sets, on this tree and on the commit before "
        "super-batches became fixed ranges of the hash space.",
    ),
    "selection_defaults": (
        "selection-defaults",
        "Selection defaults",
        "What `curate` keeps "
        "under each temperature rule, by the records' `kind` tags (which "
        "selection never reads), and how stable the kept set is when a few "
        "records change.",
    ),
    "dedup_quality": (
        "dedup",
        "Dedup",
        "Near-duplicate removal on planted copies (recall and "
        "false merges), and what dedup costs the job.",
    ),
    "image_dedup": (
        "image-dedup",
        "Image near-duplicates",
        "Near-duplicate removal on image–text pairs: planted copies of photo crops and the "
        "demo's scenes (resized, brighter or darker, re-encoded) found by `--dedup near` beside "
        "`exact`, false merges of distinct images, and the seconds per 1,000 examples.",
    ),
    "semantic_dedup": (
        "semantic-dedup",
        "Semantic dedup",
        "`--semantic-dedup` (SemDeDup on the teacher's embeddings) against exact and near dedup "
        "on planted copies of text pairs (recall by kind of copy) and of the demo's images: "
        "recall, false merges of distinct items, and its cost.",
    ),
    "documents": (
        "document-cost",
        "What scoring whole documents costs",
        "The demo teacher's "
        "size scoring long documents on their first 64 tokens and whole, window by "
        "window: documents/s, tokens/s and peak memory; and the same through `jestflow "
        "curate`.",
    ),
    "gpu": (
        "gpu",
        "GPU",
        "Scoring throughput and model FLOP utilisation on a GPU, through the "
        "curation job's scoring path.",
    ),
    "fresh_clone": (
        "fresh-clone",
        "A fresh clone",
        "The set-up, the targets CI runs and the demo, timed on a fresh clone of the "
        "repository: what a new contributor waits for. The README's times come from here.",
    ),
}
ORDER = [  # entries shown first in their section, in this order; the others follow by name
    "data_efficiency",
    "data_efficiency_recipe_lm",
    "data_efficiency_recipe_image_text",
    "data_efficiency_recipe_image_text_before",
    "data_efficiency_pairs_oracle",
    "data_efficiency_warmup_20",
    "data_efficiency_documents",
    "data_efficiency_sweep_lm",
    "data_efficiency_sweep_image_text",
    "data_efficiency_sweep_pairs",
    "data_efficiency_teacher_scores",
    "data_efficiency_time_to_target",
    "data_efficiency_contrastive",
    "data_efficiency_lm_ablations",
    "memory",
    "memory_env",
    "memory_documents",
]
INTRO = """# Results

Every measured figure of jestflow's documentation is on this page, generated from
`bench/results.json` by `bench/results_page.py` when the site is built. A benchmark script
records what it printed at the end of its run there (`bench/common_results.py`), with the
command, the date, the machine and the commit, so no figure is copied by hand. Some entries were
transcribed once from the README that came before this site, or read back from a run's outputs;
their note says so.

Times depend on the machine and on what else it runs: compare figures within one entry, or
between entries measured on the same machine. To measure one again, run its command from the
repository root on an idle machine and rebuild the site (`make docs`): the run replaces the
entry of its name in `bench/results.json` (`bench/data_efficiency.py` takes the name with
`--record NAME`). `BENCH_RECORD=0` runs a benchmark without recording it.
"""


def family(name: str, results: dict) -> str:
    """The section an entry belongs to: the longest family its name is or starts with."""
    found = [f for f in SECTIONS if name == f or name.startswith(f + "_")]
    return max(found, key=len) if found else "other"


def ordered(names) -> list[str]:
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def render(results: dict) -> tuple[str, dict[str, bytes]]:
    """The page's Markdown and its images (file name → PNG bytes), from the results."""
    parts, images = [INTRO, headline(results)], {}
    groups: dict[str, list[str]] = {}
    for name in ordered(results):
        groups.setdefault(family(name, results), []).append(name)
    parts.append(contents(results, groups))
    for key in [*SECTIONS, "other"]:
        if key not in groups:
            continue
        anchor, heading, about = SECTIONS.get(key, ("other", "Other results", ""))
        parts.append(f"## {heading} {{#{anchor}}}\n\n{about}\n")
        for name in groups[key]:
            entry = results[name]
            ident = slug(name) if slug(name) != anchor else f"{anchor}-run"
            text, pictures = RENDER.get(key, generic)(name, entry)
            parts.append(f"### {entry['title']} {{#{ident}}}\n\n{label(name, entry)}\n{text}")
            images.update(pictures)
    return "\n".join(parts), images


def headline(results: dict) -> str:
    """The demo's three tasks in one table: what a user sees first (`make demo`)."""
    if "demo" not in results:
        return ""
    entry, rows = results["demo"], []
    for task in entry["data"].get("order", sorted(entry["data"]["tasks"])):
        found = entry["data"]["tasks"][task]
        jest, uniform = found["runs"]["student-jest"], found["runs"]["student-uniform"]
        rows.append(
            {
                "task": task,
                "steps": jest["speed_up"],
                "compute": jest["compute_saving"],
                "time": jest["time_saving"],
                "clean": f"{fmt(jest['clean_fraction'], '.0%')} against "
                f"{fmt(uniform['clean_fraction'], '.0%')}",
            }
        )
    columns = [("task", "task", "", "l"), ("steps", "steps ×", ".1f×")]
    columns += [("compute", "compute ×", ".1f×"), ("time", "time ×", ".1f×")]
    columns += [("clean", "clean share trained on (JEST against uniform)", "", "l")]
    return (
        "## At a glance {#at-a-glance}\n\nThe demo (`make demo`), each task's student trained with "
        "online JEST on the curated shards against the same student trained uniformly on the raw "
        "pool, to the uniform run's final held-out loss: × is the uniform run's steps, FLOPs or "
        "seconds over JEST's (above 1: JEST needs less; online scoring counted). Measured at "
        f"{entry['commit']} on {entry['date']} ({entry['machine']}); "
        "details, curves and the other tasks' recall: [the demo](#demo).\n\n" + table(rows, columns)
    )


def contents(results: dict, groups: dict[str, list[str]]) -> str:
    rows = []
    for key in [*SECTIONS, "other"]:
        for name in groups.get(key, []):
            anchor = SECTIONS.get(key, ("other",))[0]
            ident = slug(name) if slug(name) != anchor else f"{anchor}-run"
            title = f"[{results[name]['title']}](#{ident})"
            rows.append({"result": title, "date": results[name]["date"]})
            rows[-1]["command"] = "`" + results[name]["command"].replace("`", "'") + "`"
    columns = [("result", "result"), ("date", "date", "", "l"), ("command", "command")]
    return "## What is here\n\n" + table(rows, columns)


# --- a renderer per family: (entry name, entry) → (Markdown, images) ----------------------------


def generic(name: str, entry: dict) -> tuple[str, dict]:
    """Any list of rows in the data as a table, its other values as a list."""
    text = []
    for key, value in entry["data"].items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = [(k, k.replace("_", " ")) for k in dict.fromkeys(k for v in value for k in v)]
            text.append(f"{key.replace('_', ' ')}:\n\n{table(value, columns)}")
        elif not isinstance(value, dict | list):
            text.append(f"- {key.replace('_', ' ')}: {fmt(value)}\n")
    return "\n".join(text), {}


def rows_table(columns: list[tuple], key: str = "rows"):
    def render_rows(name: str, entry: dict) -> tuple[str, dict]:
        data = entry["data"]
        text = table(data.get(key, []), columns)
        notes = "".join(f"\n{n}\n" for n in data.get("footnotes", []))
        return text + notes, {}

    return render_rows


RENDER = {
    "demo": demo,
    "data_efficiency": data_efficiency,
    "document_quality": jobs.document_quality,
    "teachers": jobs.teachers,
    "curate": rows_table(jobs.CURATE),
    "load": jobs.load,
    "memory": jobs.memory,
    "trainer": rows_table(jobs.TRAINER),
    "selection": rows_table(jobs.SELECTION),
    "stability": rows_table(jobs.STABILITY),
    "contrastive_scores": rows_table(jobs.CONTRASTIVE_SCORES),
    "classifier_teacher": rows_table(jobs.CLASSIFIER),
    "cpu_kernels": rows_table(jobs.KERNELS),
    "margins": jobs.margins,
    "cache": jobs.cache,
    "selection_defaults": jobs.selection_defaults,
    "dedup_quality": jobs.dedup,
    "semantic_dedup": jobs.semantic_dedup,
    "documents": jobs.documents,
    "gpu": jobs.gpu,
    "fresh_clone": jobs.fresh_clone,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=BENCH / "results.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    page, images = render(json.loads(args.results.read_text(encoding="utf-8")))
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(page, encoding="utf-8")
    for image, data in images.items():
        (args.out / "results" / image).write_bytes(data)
    print(f"wrote {args.out / 'results.md'} and {len(images)} images in {args.out / 'results'}")


if __name__ == "__main__":
    main()
