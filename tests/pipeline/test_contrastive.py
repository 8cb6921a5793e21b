"""Contrastive curation end to end, for text pairs and image-text pairs: what the shards hold (the
payload and the teacher's embeddings of that very sample), the score cache, learnability with a
student as exact joint selection, and the online trainer on the shards."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from corpora import digest, fit, images_config, pairs_config
from helpers import SEED, kept_by_budget, lr, untrained_eval

from jestflow.cli import main
from jestflow.pipeline.job import run_curation
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import fingerprint, load_model
from jestflow.transforms.formats.shards import read_shard
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.models.scoring import embed_pairs, pair_inputs
from jestflow.transforms.readers import read_examples
from jestflow.transforms.records import Example, FieldMap
from jestflow.transforms.selection.offline import SelectionConfig

CORPORA = {"pairs": pairs_config, "images": images_config}
TINY = ["--d-model", "32", "--layers", "1", "--heads", "2", "--max-len", "64"]


@pytest.fixture(scope="module")
def curated(request, tmp_path_factory):
    """Each corpus curated once, with a score cache: {corpus: (root, config, stats)}."""
    runs = {}
    for name, make_config in CORPORA.items():
        root = request.getfixturevalue(name)
        out = tmp_path_factory.mktemp(f"curated-{name}")
        config = make_config(root, out / "out", cache=str(out / "cache"), workers=2)
        runs[name] = (root, config, run_curation(config))
    return runs


def shard_files(config) -> list[Path]:
    return sorted((Path(config.output) / "shards").iterdir())


def shard_samples(config) -> list[dict]:
    return [sample for shard in shard_files(config) for sample in read_shard(str(shard))]


def examples_by_key(config) -> dict[str, Example]:
    records = read_examples(config.inputs, config.fields)
    return {ex.key: ex for ex in records if isinstance(ex, Example)}


@pytest.mark.parametrize("corpus", CORPORA)
def test_the_kept_pairs_are_mostly_matching(curated, corpus, learned):
    _, config, stats = curated[corpus]
    n = {"images": 64, "pairs": 128}[corpus]  # keep 0.5
    kept = kept_by_budget(config.output, 0.5)
    assert n // 2 <= kept <= n // 2 + 2
    assert stats["counts"] == {
        "selected": kept,
        "not_selected": n - kept,
        "duplicate": 0,
        "rejected": 0,
        "inputs": n,
    }
    got = shard_samples(config)
    payload = {"images": {"png"}, "pairs": {"doc.txt"}}[corpus]
    for sample in got:
        assert set(sample) - {"__key__", "__url__"} == {"txt", "json", "npy", *payload}
        assert sample["npy"].shape == (2, 128) and sample["npy"].dtype == np.float32
        assert np.allclose(np.linalg.norm(sample["npy"], axis=1), 1, atol=1e-3)
        assert sample["json"]["teacher_scale"] > 0 and "teacher_bias" in sample["json"]
    for shard in shard_files(config):
        with tarfile.open(shard) as tar:  # the image keeps its encoding: a .png member
            extensions = {m.name.split(".", 1)[1] for m in tar.getmembers()}
            assert extensions == {"txt", "json", "npy", *payload}
    matching = sum(s["json"]["meta"]["kind"] == "clean" for s in got) / len(got)
    # midway: trained 0.81-0.91 (pairs) and 0.84-1 (images) over kernels and seeds, untrained
    # teachers 0.44-0.56
    learned.expect("matching share of the kept pairs (pool: half)", matching, ">", 0.7)


@pytest.mark.parametrize("corpus", CORPORA)
def test_each_samples_embeddings_are_the_teachers_embeddings_of_that_sample(curated, corpus):
    """A shard's npy must belong to its own sample: recompute the teacher's embeddings from each
    sample's payload; every stored pair is its own (to the selection grid) and nearer to its own
    than to any other sample's."""
    _, config, _ = curated[corpus]
    got = shard_samples(config)
    right = [s["png"] if corpus == "images" else s["doc.txt"].decode() for s in got]
    emb = embed_pairs(load_model(config.teacher), [s["txt"].decode() for s in got], right)
    recomputed = np.stack([emb.left.numpy(), emb.right.numpy()], axis=1)
    stored = np.stack([s["npy"] for s in got])
    assert np.abs(stored - recomputed).max() < 1e-4  # quantised to 1e-4: off by half of it
    for side in (0, 1) if corpus == "pairs" else (1,):  # captions repeat; images do not
        distance = ((stored[:, None, side] - recomputed[None, :, side]) ** 2).sum(-1)
        assert (distance.argmin(1) == np.arange(len(got))).all()


@pytest.mark.parametrize("corpus", CORPORA)
def test_the_cache_holds_each_examples_embeddings_and_a_warm_run_scores_nothing(
    curated, corpus, tmp_path
):
    _, config, stats = curated[corpus]
    n = stats["counts"]["inputs"]
    assert stats["scoring"]["teacher"] == {"scored": n, "cached": 0}
    table = pq.read_table(f"{config.cache}/{fingerprint(config.teacher)}").to_pylist()
    by_id = {row["id"]: row for row in table}
    examples = list(examples_by_key(config).values())
    assert len(by_id) == len({ex.id for ex in examples})
    emb = embed_pairs(load_model(config.teacher), *pair_inputs(examples))
    for i, ex in enumerate(examples):
        row = by_id[ex.id]
        assert np.allclose(row["left"], emb.left[i].numpy(), atol=1e-5)
        assert np.allclose(row["right"], emb.right[i].numpy(), atol=1e-5)  # the image's, too
    warm = run_curation(dataclasses.replace(config, output=str(tmp_path / "warm")))
    assert warm["scoring"]["teacher"] == {"scored": 0, "cached": n}
    for folder in ("shards", "manifest"):
        assert digest(tmp_path / "warm" / folder) == digest(Path(config.output) / folder), folder


# --- an oracle of offline joint selection, written apart from the code it checks -------------

MASK64 = 2**64 - 1


def keyed_gumbel(key: str, seed: int, chunk: int) -> float:
    """The keyed noise of `key` in `chunk`, as documented (`KeyedNoise`), in Python integers: the
    BLAKE2b-64 of "seed:key" is a SplitMix64 state, advanced by `chunk` steps; the output's top
    53 bits are a uniform u in (0, 1); the noise is −log(−log u)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    z = (int.from_bytes(digest, "big") + (chunk + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    u = (((z ^ (z >> 31)) >> 11) + 0.5) / 2**53
    return -math.log(-math.log(u))


def sigmoid_losses(emb: PairEmbeddings, quantum: float) -> np.ndarray:
    """ℓ_ij = softplus(−z_ij (t⟨u_i, v_j⟩ + β)), z_ii = +1, z_ij = −1, in float64 on embeddings
    rounded to the selection grid."""
    u, v = (np.round(x.double().numpy() / quantum) * quantum for x in (emb.left, emb.right))
    logits = float(emb.scale) * u @ v.T + float(emb.bias)
    z = 2 * np.eye(len(u)) - 1
    return np.logaddexp(0, -z * logits)


def low_median(x: np.ndarray) -> float:
    """The lower middle value (torch's median; the even-count super-batches need it)."""
    return float(np.sort(x)[(len(x) - 1) // 2])


def relative_tau(scores: np.ndarray, factor: float) -> float:
    """factor × the median absolute deviation of the scores (the mean one when most tie)."""
    deviation = np.abs(scores - low_median(scores))
    return factor * (low_median(deviation) or float(deviation.mean()) or 1.0)


def blocked_selection(A, keys, sizes, selection, got, slack=1e-3) -> set[str]:
    """JEST blocked sampling by hand: chunk c takes the `sizes[c]` largest keyed Gumbel-perturbed
    conditional scores A_kk + Σ_{j∈S}(A_kj + A_jk) / τ_c among the unchosen. A candidate the
    pipeline kept (`got`) gets `slack` (in Gumbel units) on near-ties, so float32 against float64
    arithmetic does not decide; any real difference still shows."""
    chosen: list[int] = []
    tilt = slack * np.array([key in got for key in keys])
    for c, size in enumerate(sizes):
        conditional = A.diagonal() + A[:, chosen].sum(1) + A[chosen, :].sum(0)
        free = np.setdiff1d(np.arange(len(keys)), chosen)
        tau = relative_tau(conditional[free], selection.relative_temperature)
        noise = np.array([keyed_gumbel(keys[i], selection.seed, c) for i in free])
        perturbed = conditional[free] / tau + noise + tilt[free]
        chosen += free[np.argsort(-perturbed, kind="stable")[:size]].tolist()
    return {keys[i] for i in chosen}


def test_learnability_with_a_student_is_joint_selection_on_both_models(pairs, tmp_path):
    """`curate --student` on pairs: every super-batch (of about 32) keeps the half that JEST's blocked
    sampling chooses on ℓ(student) − ℓ(teacher) pair losses, recomputed here from the two
    models' embeddings (pair losses, conditional scores, relative τ and keyed noise by hand)."""
    fields = FieldMap(query="query", doc="doc")
    student = fit(str(pairs / "ref.jsonl"), tmp_path / "student", "contrastive", fields, 40)
    selection = SelectionConfig(keep=0.5, seed=4, n_chunks=4, mode="learnability")
    config = pairs_config(pairs, tmp_path / "out", student=student, selection=selection)
    stats = run_curation(config)
    assert stats["student"]["fingerprint"] == fingerprint(student)
    rows = read_manifest(str(tmp_path / "out" / "manifest")).to_pylist()
    examples = examples_by_key(config)
    models = {"teacher": load_model(config.teacher), "student": load_model(student)}
    batches = sorted({r["super_batch"] for r in rows})
    assert len(batches) == 4 and len(rows) == 128
    for batch in batches:
        keys = sorted(r["key"] for r in rows if r["super_batch"] == batch)
        got = {r["key"] for r in rows if r["super_batch"] == batch and r["status"] == "selected"}
        n, k = len(keys), math.ceil(len(keys) / 2)
        assert len(got) == k, f"super-batch {batch}: keep 0.5 of {n} is {k}"
        inputs = pair_inputs([examples[key] for key in keys])
        L = {
            role: sigmoid_losses(embed_pairs(model, *inputs), selection.quantum)
            for role, model in models.items()
        }
        A = L["student"] - L["teacher"]  # learnability
        sizes = [k // 4 + (c < k % 4) for c in range(4)]  # 4 chunks, the larger first
        expected = blocked_selection(A, keys, sizes, selection, got)
        assert got == expected, f"super-batch {batch}: kept {sorted(got - expected)} " + (
            f"instead of {sorted(expected - got)}"
        )


def held_out(root: Path, corpus: str, tmp_path: Path) -> tuple[str, FieldMap, str]:
    """(clean held-out pairs, their fields, the right tower's kind): the corpus's reference pairs
    (the teacher's training data; the student never sees them) — 128 of the text pairs' 400."""
    if corpus == "images":
        return str(root / "ref.parquet"), FieldMap(image="img", caption="cap"), "image"
    lines = (root / "ref.jsonl").read_text().splitlines()[:128]
    (tmp_path / "held_out.jsonl").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "held_out.jsonl"), FieldMap(query="query", doc="doc"), "text"


@pytest.mark.parametrize("corpus", CORPORA)
def test_the_online_trainer_learns_from_contrastive_shards(curated, corpus, tmp_path, learned):
    """30 steps of online learnability selection on the curated shards: the student matches clean
    held-out pairs far better than an untrained one. Measured over training seeds 0–2 and the
    default CPU kernels: recall@1 (within batches of 4, chance 0.25) up 0.29–0.43, the held-out
    loss down 7.2–8.3 nats (mostly t and β found); a model that cannot learn gains 0 on both."""
    root, config, _ = curated[corpus]
    fields = (
        ["--image-field", "img", "--caption-field", "cap"]
        if corpus == "images"
        else ["--query-field", "query", "--doc-field", "doc"]
    )
    eval_inputs, eval_fields, right = held_out(root, corpus, tmp_path)
    out = tmp_path / "student"
    args = [
        "train",
        "--shards",
        f"{config.output}/shards/*.tar",
        "--task",
        "contrastive",
        "--batch-size",
        "4",
        "--super-batch-ratio",
        "2",
        "--chunks",
        "2",
        "--steps",
        "30",
        "--eval-every",
        "15",
        "--lr",
        str(lr(2e-3)),
        "--warmup-steps",
        "2",
        "--seed",
        str(SEED),
        "--eval",
        eval_inputs,
        *fields,
        "--device",
        "cpu",
        *TINY,
    ]
    result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert all(isinstance(r["learnability"], float) and r["score_flops"] > 0 for r in steps)
    evals = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in evals] == [15, 30]
    size = {"d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 64}  # TINY
    before_loss, before_recall = untrained_eval(
        "contrastive", eval_inputs, eval_fields, size, batch_size=4, right_kind=right
    )
    learned.expect(
        "held-out recall@1 over the untrained model's (chance 0.25)",
        evals[-1]["eval_recall_at_1"] - before_recall,
        ">",
        0.15,
    )
    learned.expect(
        "held-out loss below the untrained model's", before_loss - evals[-1]["eval_loss"], ">", 3.0
    )
    other = "pairs" if corpus == "images" else "images"
    assert load_model(str(out)).right_kind == right  # a fresh student reads what the shards hold
    init = curated[other][1].teacher  # a two-tower model of the other kind
    wrong = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x"), "--init", init])
    assert wrong.exit_code == 1, wrong.output
    assert f"but the data pairs it with {right}" in wrong.output
