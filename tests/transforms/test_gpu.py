"""CUDA paths (bf16 autocast scoring, pinned host-to-GPU copies, batches split when out of GPU
memory, selection on GPU tensors, training); skipped without CUDA."""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import string

import pytest
import torch
import torch.nn.functional as F

from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.models import new_model
from jestflow.transforms.models.layers import pad, to_device
from jestflow.transforms.models.losses import PairEmbeddings, token_nll
from jestflow.transforms.models.scoring import autocast, embed_pairs, lm_losses, precision
from jestflow.transforms.records import FieldMap
from jestflow.transforms.selection.jest import ContrastivePairScores, select_joint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

TEXTS = ["def add(a, b): return a + b", "Return the sorted list.", "x" * 300, "héllo"] * 8


def test_lm_scoring_under_bf16_autocast_matches_cpu():
    torch.manual_seed(0)
    model = new_model("lm", d_model=64, n_layer=2, n_head=2).eval()
    cpu = lm_losses(model, TEXTS)
    gpu = lm_losses(model.cuda(), TEXTS)
    assert gpu.device.type == "cpu"  # results come back on the CPU
    torch.testing.assert_close(gpu, cpu, rtol=3e-2, atol=3e-2)


def test_tower_embeddings_on_gpu_match_cpu():
    torch.manual_seed(0)
    model = new_model("contrastive", d_model=64, n_layer=2, n_head=2).eval()
    queries, docs = TEXTS[:16], TEXTS[16:]
    cpu = embed_pairs(model, queries, docs)
    gpu = embed_pairs(model.cuda(), queries, docs)
    assert F.cosine_similarity(cpu.left, gpu.left).min() > 0.99
    assert F.cosine_similarity(cpu.right, gpu.right).min() > 0.99


def test_lazy_joint_selection_on_gpu_embeddings_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    u = F.normalize(torch.randn(4096, 64, generator=gen), dim=1)
    v = F.normalize(u + 0.5 * torch.randn(4096, 64, generator=gen), dim=1)
    ref = F.normalize(u + 0.3 * torch.randn(4096, 64, generator=gen), dim=1)

    def pairs(device):
        student = PairEmbeddings(u.to(device), v.to(device), 10.0, -10.0)
        teacher = PairEmbeddings(ref.to(device), v.to(device), 10.0, -10.0)
        return ContrastivePairScores("learnability", student=student, teacher=teacher)

    cpu = select_joint(pairs("cpu"), 410, noise=torch.Generator().manual_seed(1))
    gpu = select_joint(pairs("cuda"), 410, noise=torch.Generator().manual_seed(1))
    overlap = len(set(cpu.tolist()) & set(gpu.tolist())) / 410
    assert overlap > 0.95  # same noise; only float rounding differs


def test_teacher_trains_on_gpu(tmp_path, learned):
    from helpers import lr, sentences, write_jsonl

    data = write_jsonl(tmp_path / "t.jsonl", ({"text": t} for t in sentences(200, 0)))
    config = TeacherConfig(
        inputs=(data,),
        eval_inputs=(data,),
        output=str(tmp_path / "t"),
        task="lm",
        fields=FieldMap(text="text"),
        steps=60,
        batch_size=16,
        lr=lr(3e-3),
        device="cuda",
        d_model=32,
        n_layer=1,
        n_head=2,
        max_len=64,
    )
    result = train_teacher(config)
    learned.expect("held-out loss", result.eval_loss, "<", 4.0)


# --- the scoring path on CUDA: bf16 autocast, pinned copies, splitting a batch out of memory ---


def varied_texts(n: int, length) -> list[str]:
    """Random printable texts, each drawn from a larger alphabet than the one before: their losses
    spread over a few nats, far more than bf16 moves them (~0.02)."""
    alphabets = [string.printable[: 8 + 3 * i % 90] for i in range(n)]
    return ["".join(random.Random(i).choices(alphabets[i], k=length(i))) for i in range(n)]


VARIED = varied_texts(24, lambda i: 20 + 13 * i)  # 20–319 bytes: several length buckets


def distinct_lm() -> torch.nn.Module:
    """A byte LM whose losses differ from text to text (larger embeddings), on the GPU."""
    torch.manual_seed(0)
    model = new_model("lm", d_model=64, n_layer=2, n_head=2, max_len=1024).eval()
    with torch.no_grad():
        model.tokens.weight.normal_(0.0, 0.5)
    return model.cuda()


def assert_same_in_order(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal within bf16 rounding, each loss its own text's: a shuffled order would differ by
    the losses' spread (> 1 nat) and lose the correlation."""
    assert actual.shape == expected.shape and expected.std() > 0.5
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=0.1)
    assert torch.corrcoef(torch.stack([actual, expected]))[0, 1] > 0.999


def test_cuda_scoring_runs_in_bf16_and_returns_fp32_on_the_cpu_in_input_order():
    model = distinct_lm()
    cpu = lm_losses(copy.deepcopy(model).cpu(), VARIED)  # float32, on the CPU
    seen = []
    hook = model.blocks[0].qkv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        losses = lm_losses(model, VARIED)
    finally:
        hook.remove()
    assert precision(torch.device("cuda")) == "bf16"
    assert seen and set(seen) == {torch.bfloat16}  # the matmuls ran under bf16 autocast
    assert losses.device.type == "cpu" and losses.dtype == torch.float32
    assert_same_in_order(losses, cpu)
    assert_same_in_order(losses, torch.cat([lm_losses(model, [t]) for t in VARIED]))
    assert_same_in_order(lm_losses(model, VARIED[::-1]).flip(0), losses)


def test_host_batches_reach_the_gpu_through_pinned_memory():
    from torch.profiler import ProfilerActivity, profile

    model = distinct_lm()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        lm_losses(model, VARIED)
        torch.cuda.synchronize()
    copies = {e.name for e in prof.events() if e.name.startswith("Memcpy HtoD")}
    assert any("Pinned" in name for name in copies), copies  # "Memcpy HtoD (Pinned -> Device)"


def test_pinned_transfers_give_the_same_results_as_plain_ones():
    """One batch (texts of one length), scored by `lm_losses` (pinned, non-blocking copies) and
    by hand with plain copies, under the same bf16 autocast: the same bits."""
    model = distinct_lm()
    texts = [text[:40] for text in varied_texts(16, lambda i: 40)]
    pinned = lm_losses(model, texts)
    ids, mask = pad(model.tokenize(texts), limit=model.config.max_len + 1)
    ids, mask = ids.to("cuda"), mask.to("cuda")
    with torch.no_grad(), autocast(torch.device("cuda")):
        plain = token_nll(model(ids[:, :-1]), ids[:, 1:], mask[:, 1:]).float().cpu()
    assert torch.equal(pinned, plain)
    x = torch.randn(3, 64, 64)
    moved = to_device(x, torch.device("cuda"), torch.bfloat16)
    assert moved.is_cuda and torch.equal(moved.cpu(), x.bfloat16())


@contextlib.contextmanager
def memory_cap(headroom: int):
    """The process may hold only `headroom` bytes of GPU memory beyond what it holds now."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    held = torch.cuda.memory_reserved()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (held + headroom) / total))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_a_batch_out_of_gpu_memory_is_split_and_every_text_scored(caplog):
    model = distinct_lm()
    texts = varied_texts(64, lambda i: 1024)
    lm_losses(model, texts[:2])  # warm up: cuBLAS workspaces, kernels
    free = lm_losses(model, texts, max_tokens=1 << 17)  # one batch of 64 × 1025 tokens
    # That batch's logits alone are 64 × 1024 × 257 × 4 bytes ≈ 67 MB in float32; one text's ~1 MB.
    with (
        memory_cap(96 << 20),
        caplog.at_level(logging.WARNING, "jestflow.transforms.models.scoring"),
    ):
        capped = lm_losses(model, texts, max_tokens=1 << 17)
    assert any("ran out of memory" in r.getMessage() for r in caplog.records)
    assert_same_in_order(capped, free)


def test_an_input_too_big_for_the_gpu_alone_is_a_clear_error():
    model = distinct_lm()
    texts = varied_texts(4, lambda i: 1024)
    lm_losses(model, texts[:1])
    with memory_cap(1 << 20), pytest.raises(JestflowError, match="does not fit") as caught:
        lm_losses(model, texts)
    assert "cuda" in str(caught.value) and "--score-seq-len" in str(caught.value)
    assert lm_losses(model, texts[:1]).isfinite().all()  # the GPU is usable again afterwards
