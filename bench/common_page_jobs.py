"""The results page's sections on the curation job and the machinery (bench/results_page.py):
a renderer per benchmark, (entry name, entry) → (Markdown, images), and the columns of its
tables. Every number is formatted from the recorded data."""

from __future__ import annotations

import common_plots as plots
from common_page import fmt, picture, seconds_text, slug, table


def document_quality(name: str, entry: dict) -> tuple[str, dict]:
    kinds = ("clean", "bad body", "bad")
    columns = [("tree", "tree"), ("kept", "kept", ",d")]
    columns += [(k, f"{k} share", ".2f") for k in kinds]
    columns += [("clean_recall", "clean kept / clean", ".2f"), ("teacher_s", "teacher s", ".0f")]
    columns += [("curate_s", "curate s", ".0f")]
    return table(entry["data"]["rows"], columns), {}


def teachers(name: str, entry: dict) -> tuple[str, dict]:
    """A table per corpus; a recorded run nests each teacher's kept shares by selection."""
    data, text = entry["data"], []
    for corpus, found in data["corpora"].items():
        rows = []
        for teacher in data.get("order", {}).get(corpus, list(found)):
            f, kept = found[teacher], found[teacher]["curation"]
            row = {"teacher": teacher, "recall": f["recall_at_1"], "loss": f["loss"]}
            for kind in kept["joint"]["kept_share"]:
                row[f"{kind} joint"] = kept["joint"]["kept_share"][kind]
                row[f"{kind} independent"] = kept["independent"]["kept_share"][kind]
                row[f"{kind} random"] = kept["joint"]["random_share"].get(kind)
            rows.append(row | {"speed": f["s_per_1000_pairs"], "build": f.get("build_seconds")})
        kinds = dict.fromkeys(k for r in rows for k in r if k.endswith(" joint"))
        columns = [("teacher", "teacher"), ("recall", "recall@1", ".3f")]
        columns += [("loss", "held-out loss", ".3f")]
        for kind in (k.removesuffix(" joint") for k in kinds):
            columns += [(f"{kind} {how}", f"{kind}: {how}", ".1%") for how in KEPT]
        columns += [("speed", "s / 1k pairs", ".2f"), ("build", "build s", ".0f")]
        text.append(f"**{corpus}** (kept shares of the curated set)\n\n{table(rows, columns)}")
    return "\n".join(text), {}


KEPT = ("joint", "independent", "random")
CURATE = [("examples", "examples", ",d"), ("variant", "variant"), ("seconds", "seconds", ".1f")]
CURATE += [("examples_per_s", "examples/s", ",.0f"), ("vs_plain", "vs plain loop", ".2f×")]
CURATE += [("peak_mib", "peak RSS MiB", ",.0f"), ("processes", "processes", "d")]
CURATE += [("selected", "selected", ",d")]
LOAD = [("examples", "examples", ",d"), ("seconds", "seconds", ",.1f")]
LOAD += [("examples_per_s", "examples/s", ",.0f"), ("peak_mib", "peak RSS MiB (tree)", ",.0f")]
LOAD += [("runner_mib", "runner MiB", ",.0f"), ("cpu_s", "CPU s", ",.0f")]
LOAD += [("spill_mib", "spill files MiB (peak)", ",.0f"), ("duplicate", "duplicates", ",d")]
LOAD += [("selected", "selected", ",d"), ("shards", "shards", "d")]
LOAD += [("shard_mib", "shard MiB", ",.0f"), ("accounting", "accounting", "", "l")]


def load(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    text = table(data["rows"], LOAD)
    phases = data.get("phases", [])
    if phases:
        columns = [("examples", "examples", ",d"), ("phase", "phase")]
        columns += [("seconds", "seconds", ",.0f"), ("peak_mib", "peak RSS MiB (tree)", ",.0f")]
        text += "\nTime by phase, from the job's progress lines:\n\n" + table(phases, columns)
    rows = data["rows"]
    if len(rows) < 2:
        return text, {}
    series = {"peak RSS of the process tree": [[r["examples"], r["peak_mib"]] for r in rows]}
    series["peak RSS of the runner process"] = [[r["examples"], r["runner_mib"]] for r in rows]
    image = plots.lines(
        f"{entry['title']}: memory against the pool's size (--dedup {rows[0]['dedup']})",
        series,
        "examples in the pool",
        "MiB",
        logx=True,
        zero=True,
    )
    images: dict = {}
    text += "\n" + picture(images, f"{slug(name)}.png", image, "Peak memory against pool size")
    return text, images


MEMORY = [("case", "case"), ("early", "early peak MiB", ",.0f"), ("last", "last peak MiB", ",.0f")]
MEMORY += [("ratio", "×", ".2f"), ("now", "RSS at the end MiB", ",.0f")]
MEMORY += [("tree", "tree peak MiB", ",.0f"), ("step_seconds", "s / step", ".3g")]


def memory(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    if "curve" in data:  # a run's resident memory, step by step
        return memory_curve(name, entry)
    steps = f"early: step {fmt(data['early'], ',d')}; last: step {fmt(data['steps'], ',d')}"
    text = f"Peak resident memory of the process ({steps}):\n\n" + table(data["rows"], MEMORY)
    return text + "".join(f"\n{n}\n" for n in data.get("footnotes", [])), {}


def memory_curve(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    blocks = [b | {"steps": f"{b['first']:,}–{b['last']:,}"} for b in data["blocks"]]
    columns = [("steps", "steps", "", "l"), ("median_rss_mib", "median RSS MiB", ",.0f")]
    columns += [("peak_rss_mib", "peak RSS so far, at the last step, MiB", ",.0f")]
    series = {
        "resident memory at the step's end (rss_mib)": [[p[0], p[1]] for p in data["curve"]],
        "peak so far (peak_rss_mib)": [[p[0], p[2]] for p in data["curve"]],
    }
    image = plots.lines(entry["title"], series, "training step", "MiB")
    images: dict = {}
    text = table(blocks, columns) + "\n"
    return text + picture(images, f"{slug(name)}.png", image, "Memory over steps"), images


TRAINER = [("mode", "mode"), ("r", "r", "d"), ("scoring_length", "scoring length", "", "l")]
TRAINER += [("step_s", "step s", ".3f"), ("score_s", "scoring s", ".3f")]
TRAINER += [("train_s", "training s", ".3f"), ("overhead", "overhead", "+.0%")]
TRAINER += [("flop_ratio", "by FLOPs", "+.0%")]
SELECTION = [(lambda r: r.get("loss", "sigmoid"), "loss", "", "l")]
SELECTION += [("B", "B", ",d"), ("keep", "keep", ".0%"), ("k", "k", ",d")]
SELECTION += [("select_s", "select_joint s", ".3f"), ("teacher_s", "teacher pass s", ".2f")]
SELECTION += [("ratio", "ratio", ".2%"), ("peak_mib", "peak Δ MiB", ".1f")]
SELECTION += [
    ("full_mib", "B×B would be MiB", ",.0f"),
    ("largest_mib", "largest tensor MiB", ".1f"),
]
CONTRASTIVE_SCORES = [("task", "pool"), ("score", "score"), ("kept", "kept", ",d")]
CONTRASTIVE_SCORES += [(lambda r: r["shares"].get("clean", 0), "clean", ".1%")]
CONTRASTIVE_SCORES += [("seconds", "s", ".0f")]
CLASSIFIER = [("teacher", "teacher"), ("method", "method"), ("kept", "kept", ",d")]
CLASSIFIER += [(lambda r: r["shares"].get("clean", 0), "clean", ".1%")]
CLASSIFIER += [("train_s", "train s", ".0f"), ("score_s_per_1k", "score s per 1k docs", ".2f")]
STABILITY = [("tree", "tree"), ("options", "options"), ("super_batches", "super-batches", ",d")]
STABILITY += [("kept", "kept", ",d"), ("edited", "Jaccard: 0.1 % edited", ".3f")]
STABILITY += [("removed", "0.1 % removed", ".3f"), ("inserted", "0.1 % inserted", ".3f")]
KERNELS = [("task", "task"), ("setting", "setting"), ("raw", "max |Δ raw output|", ".1e")]
KERNELS += [("rounded", "rounded values that differ", ".2%")]
KERNELS += [(lambda r: f"{r['status']:,} of {r['examples']:,}", "selection differs", "", "r")]
KERNELS += [("jaccard", "Jaccard kept", ".4f"), ("bytes", "same shard bytes", "", "l")]


def margins(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    rows = [
        r | {"where": f"{fmt(r['worst'], '.3g')} ({r['worst_setting']}, seed {r['worst_seed']})"}
        for r in data["rows"]
    ]
    columns = [(lambda r: f"{r['test']}: {r['name']}", "test: bound", "", "l")]
    columns += [(lambda r: f"{r['op']} {fmt(r['bound'], '.4g')}", "bound", "", "r")]
    columns += [("where", "worst (where)", "", "r"), ("best", "best", ".3g")]
    columns += [("margin", "margin", "+.3g"), ("broken", "untrained", ".3g")]
    columns += [("fails_broken", "untrained fails it", "", "l")]
    runs = f"{len(data['settings'])} kernel settings × seeds {', '.join(map(str, data['seeds']))}"
    text = f"{runs}, then once with models that cannot learn.\n\n" + table(rows, columns)
    image = plots.margins(f"{entry['title']} ({runs})", data["rows"])
    images: dict = {}
    return text + "\n" + picture(images, f"{slug(name)}.png", image, "Margins"), images


def cache(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    columns = [
        ("run", "run"),
        ("inputs", "inputs", ",d"),
        ("teacher_scored", "teacher scored", ",d"),
    ]
    columns += [("cached", "from the cache", ",d"), ("seconds", "seconds", ".1f")]
    columns += [("ratio", "× no cache", ".2f")]
    text = table(data["rows"], columns)
    warm = data.get("warm_vs_cold")
    if warm:
        text += (
            f"\nThe warm run against the cold one: the same selection: "
            f"{fmt(warm['same_selection'])}; the same shard and manifest bytes: "
            f"{fmt(warm['same_bytes'])}; stored teacher losses that differ: "
            f"{fmt(warm['losses_moved'], ',d')}, by at most {fmt(warm['largest_move'], '.1e')}.\n"
        )
    image = plots.bars(
        entry["title"],
        [r["run"] for r in data["rows"]],
        {"seconds": [r["seconds"] for r in data["rows"]]},
        "seconds",
    )
    images: dict = {}
    return text + "\n" + picture(images, f"{slug(name)}.png", image, "Seconds by run"), images


def selection_defaults(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    columns = [("candidate", "rule"), ("demo_clean", "demo pool: clean kept", ".1%")]
    columns += [("demo_duplicate", "demo pool: planted duplicates kept", ".1%")]
    columns += [("demo_near_copy", "demo pool: kept with a near copy among the kept", ".1%")]
    columns += [("demo_kept", "demo pool: kept", ",d")]
    columns += [("docs_code_docstring", "docstrings vs code: docstrings kept", ".1%")]
    columns += [("seconds", "s", ".0f")]
    text = table(data["rows"], columns)
    if data.get("stability"):
        columns = [("options", "options"), ("kept", "kept", ",d"), ("jaccard", "Jaccard", ".2f")]
        text += "\nThe kept sets of a slice curated twice, a few records edited:\n\n"
        text += table(data["stability"], columns)
    return text, {}


def dedup(name: str, entry: dict) -> tuple[str, dict]:
    data, text = entry["data"], ""
    columns = [("copies_are", "copies are"), ("paragraphs", "paragraphs", ",d")]
    columns += [("distinct", "distinct", ",d"), ("bands", "bands × rows")]
    columns += [("found", "copies found", ".1%"), ("found_within", "of J ≥ threshold", ".1%")]
    columns += [("false_merges", "false merges", ".2%"), ("seconds", "s", ".1f")]
    if data.get("quality"):
        text += "Planted near copies:\n\n" + table(data["quality"], columns)
    if data.get("below_threshold") is not None:
        share = fmt(data["below_threshold"], ".1%")
        text += f"\nPlanted copies whose true Jaccard similarity is below the threshold: {share}.\n"
    columns = [("dedup", "--dedup"), ("seconds", "seconds", ",.1f"), ("vs_none", "vs none", "+.0%")]
    columns += [("examples_per_s", "examples/s", ",.0f"), ("peak_mib", "peak RSS MiB", ",.0f")]
    columns += [("duplicates", "duplicates", ",d"), ("teacher_scored", "teacher scored", ",d")]
    if data.get("cost"):
        size = fmt(data.get("size"), ",d")
        text += f"\n`jestflow curate` on {size} examples, teacher {data.get('teacher')}:\n\n"
        text += table(data["cost"], columns)
    return text, {}


def semantic_dedup(name: str, entry: dict) -> tuple[str, dict]:
    """bench/semantic_dedup.py: each arm's recall and false merges, then the functions' cost
    (bench/semantic_images.py's entries: `semantic_images`)."""
    data = entry["data"]
    if "originals" in data:
        return semantic_images(name, entry)
    columns = [("dedup", "dedup"), ("removed", "removed", ",d"), ("recall", "recall", ".1%")]
    columns += [(f"recall_{k}", f"… {k}", ".1%") for k in ("light", "reworded", "truncated")]
    columns += [("false_merges", "false merges", ".2%"), ("s_per_1k", "s / 1k examples", ".2f")]
    text = (
        f"{fmt(data['items'], ',d')} distinct (docstring, code) pairs and "
        f"{fmt(data['copies'], ',d')} planted copies, `jestflow curate` with a calibrated MiniLM "
        "(scores cached but for the last row):\n\n" + table(data["rows"], columns)
    )
    if data.get("scale"):
        columns = [("phase", "phase"), ("examples", "examples", ",d"), ("k", "k", ",d")]
        columns += [("s_per_1k", "s / 1k examples", ".3f"), ("largest_cluster", "largest cluster")]
        text += "\nThe semantic step's functions on random 2 × 384 vectors:\n\n"
        text += table(data["scale"], columns)
    return text, {}


def semantic_images(name: str, entry: dict) -> tuple[str, dict]:
    """bench/semantic_images.py: each arm on demo scenes with planted image copies, the cosines
    a threshold falls between, and the functions' cost on the pool's vectors."""
    data = entry["data"]
    columns = [("dedup", "dedup"), ("removed", "removed", ",d"), ("recall", "recall", ".1%")]
    columns += [("any_removed", "pair hit", ".1%"), ("false_merges", "false merges", ".2%")]
    columns += [("same_meaning", "same-meaning merges", ".2%"), ("s_per_1k", "s / 1k", ".2f")]
    columns += [("differ", "false merges differ in (top 3)", "", "l")]
    text = (
        f"{fmt(data['originals'], ',d')} demo scenes and {fmt(data['copies'], ',d')} planted "
        "copies (resized 0.75–1.25×, brightness ±10 %, JPEG 60–90), `jestflow curate` with the "
        "built-in image–text teacher (scores cached but for the last row). Recall: copies "
        "merged with their own original; pair hit: the original or its copy removed at all. A "
        "false merge keeps a scene whose caption says something else (shape, colour, count, "
        "size or region); same-meaning merges are not false:\n\n" + table(data["rows"], columns)
    )
    if data.get("cosines"):
        columns = [("pair", "cosine of", "", "l"), ("n", "pairs", ",d")]
        columns += [(q, q, ".3f") for q in ("p1", "p5", "p50", "p95", "p99")]
        text += "\nOn the teacher's embeddings:\n\n" + table(data["cosines"], columns)
    if data.get("functions"):
        columns = [("phase", "phase"), ("examples", "examples", ",d"), ("k", "k", ",d")]
        columns += [("s_per_1k", "s / 1k examples", ".3f")]
        text += "\nThe semantic step's functions on the pool's vectors:\n\n"
        text += table(data["functions"], columns)
    return text, {}


def documents(name: str, entry: dict) -> tuple[str, dict]:
    data, text = entry["data"], ""
    columns = [(lambda r: f"{r['size_kb']:,} KB", "documents", "", "r"), ("scored", "scored")]
    columns += [("documents_per_s", "documents/s", ",.4g"), ("tokens_per_s", "tokens/s", ",.0f")]
    columns += [("capped", "capped", "d"), ("peak_rss_mib", "peak RSS MiB", ",.0f")]
    if data.get("scoring"):
        count = fmt(data.get("documents"), ",d")
        text += f"Scoring alone, {count} documents a case:\n\n" + table(data["scoring"], columns)
    ranges = data.get("ranges", {})
    for key, what in RANGES.items():
        if key in ranges:
            low, high = ranges[key]
            text += f"\n{what}: {fmt(low, ',d')}–{fmt(high, ',d')}.\n"
    columns = [(lambda r: f"{r['documents']:,} × {r['size_kb']:,} KB", "pool", "", "r")]
    columns += [("kept_by_dedup", "kept by dedup", ",d"), ("scored", "scored")]
    columns += [("seconds", "seconds", ",.1f"), ("documents_per_s", "documents/s", ",.1f")]
    columns += [("tokens_per_s", "tokens/s", ",.0f"), ("peak_mib", "peak RSS MiB (tree)", ",.0f")]
    if data.get("curate"):
        text += "\nThrough `jestflow curate`:\n\n" + table(data["curate"], columns)
    return text, {}


RANGES = {
    "tokens_per_s_whole": "Tokens/s scored whole, over the sizes",
    "tokens_per_s_first_64": "Tokens/s scored on the first 64 tokens, over the sizes",
    "peak_rss_mib": "Peak RSS, MiB, over every case",
}


def gpu(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    columns = [("model", "model"), ("params", "N params", ",d"), ("examples", "examples", ",d")]
    columns += [("seconds", "seconds", ".3f")]
    columns += [(lambda r: r["examples"] / r["seconds"], "examples/s", ",.0f", "r")]
    columns += [(lambda r: r["flops"] / r["seconds"] / 1e12, "TFLOP/s", ".3g", "r")]
    columns += [("mfu", "MFU", ".1%")]
    text = f"{data.get('device_name')}, {data.get('precision')}:\n\n" + table(
        data["models"], columns
    )
    columns = [("B", "B", ",d"), ("k", "k", ",d"), ("seconds", "select_joint s", ".3f")]
    text += "\n" + table(data.get("select_joint", []), columns)
    return text + f"\nTests on the device: {data.get('tests', {}).get('line')}\n", {}


def fresh_clone(name: str, entry: dict) -> tuple[str, dict]:
    data = entry["data"]
    rows = [t | {"time": seconds_text(t["seconds"])} for t in data["targets"]]
    if "ci_seconds" in data:  # .ci/run's targets together
        ci = {"target": ".ci/run", "seconds": data["ci_seconds"], "includes": "CI's targets"}
        rows.append(ci | {"time": seconds_text(data["ci_seconds"])})
    total = {"target": "total", "seconds": data["total_seconds"]}
    rows.append(total | {"time": seconds_text(data["total_seconds"])})
    columns = [("target", "target", "", "l"), ("time", "wall clock", "", "r")]
    columns += [("seconds", "seconds", ",.0f"), ("includes", "includes", "", "l")]
    title = f"{entry['title']}: {seconds_text(data['total_seconds'])} in all ({entry['date']})"
    labels = [t["target"] for t in data["targets"]]
    image = plots.bars(
        title, labels, {"seconds": [t["seconds"] for t in data["targets"]]}, "seconds"
    )
    images: dict = {}
    text = table(rows, columns) + "\n"
    return text + picture(images, f"{slug(name)}.png", image, "Seconds by target"), images
