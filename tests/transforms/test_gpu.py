"""CUDA paths (bf16 autocast scoring, selection on GPU tensors, training); skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.losses import PairEmbeddings
from jestflow.transforms.models import new_model
from jestflow.transforms.records import FieldMap
from jestflow.transforms.scoring import embed_pairs, lm_losses
from jestflow.transforms.selection import ContrastivePairScores, select_joint

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


def test_teacher_trains_on_gpu(tmp_path):
    from helpers import sentences, write_jsonl

    data = write_jsonl(tmp_path / "t.jsonl", ({"text": t} for t in sentences(200, 0)))
    config = TeacherConfig(
        inputs=(data,), eval_inputs=(data,), output=str(tmp_path / "t"), task="lm",
        fields=FieldMap(text="text"), steps=60, batch_size=16, lr=3e-3, device="cuda",
        d_model=32, n_layer=1, n_head=2, max_len=64,
    )  # fmt: skip
    result = train_teacher(config)
    assert result.eval_loss < 4.0
