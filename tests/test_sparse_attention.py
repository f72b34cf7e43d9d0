"""Variable-length attention against per-sequence dense attention in float64."""
from __future__ import annotations

import math

import pytest
import torch

from propforge.errors import InputError
from propforge.sparse import attention, varlen_attention


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√D)·v for one sequence [L, H, D], written out."""
    s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("hqk,khd->qhd", s.softmax(-1), v)


def packed(lengths: list[int], h: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(lengths), h, d, generator=g, dtype=torch.float64)
    cu = torch.tensor([0, *torch.cumsum(torch.tensor(lengths), 0).tolist()], dtype=torch.int32)
    return x, cu


@pytest.mark.parametrize("lq", [[7, 0, 13, 1], [5, 5, 5], [33]])
def test_self_attention_matches_per_sequence_reference(lq):
    q, cu = packed(lq, 3, 16, 1)
    k, _ = packed(lq, 3, 16, 2)
    v, _ = packed(lq, 3, 16, 3)
    out = varlen_attention(q, k, v, cu, cu)
    assert out.dtype == torch.float64 and out.shape == q.shape
    for a, b in zip(cu.tolist(), cu.tolist()[1:]):
        if b > a:
            torch.testing.assert_close(out[a:b], naive(q[a:b], k[a:b], v[a:b]), rtol=1e-12, atol=1e-12)


def test_cross_attention_to_image_tokens():
    lq, lk = [11, 4], [6, 6]
    q, cq = packed(lq, 2, 8, 4)
    k, ck = packed(lk, 2, 8, 5)
    v, _ = packed(lk, 2, 8, 6)
    out = varlen_attention(q, k, v, cq, ck)
    torch.testing.assert_close(out[:11], naive(q[:11], k[:6], v[:6]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[11:], naive(q[11:], k[6:], v[6:]), rtol=1e-12, atol=1e-12)


def test_dense_attention_matches_reference():
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 9, 4, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = attention(q, k, v)
    for b in range(2):
        torch.testing.assert_close(out[b], naive(q[b], k[b], v[b]), rtol=1e-12, atol=1e-12)


def test_bad_offsets_are_rejected():
    q, cu = packed([4, 4], 1, 4, 0)
    with pytest.raises(InputError, match="cu_seqlens_q"):
        varlen_attention(q, q, q, torch.tensor([0, 4, 7]), cu)
    with pytest.raises(InputError, match="samples"):
        varlen_attention(q, q, q, cu, torch.tensor([0, 8]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_varlen_attention_on_gpu_half_precision(dtype):
    lq = [1000, 0, 2100, 37]
    q, cu = packed(lq, 4, 128, 11)
    k, _ = packed(lq, 4, 128, 12)
    v, _ = packed(lq, 4, 128, 13)
    out = varlen_attention(*(t.cuda().to(dtype) for t in (q, k, v)), cu.cuda(), cu.cuda())
    assert out.dtype == dtype
    for a, b in zip(cu.tolist(), cu.tolist()[1:]):
        if b > a:
            ref = naive(q[a:b], k[a:b], v[a:b])
            assert float((out[a:b].double().cpu() - ref).norm() / ref.norm()) < 1e-2


def test_cross_attention_to_dense_image_tokens():
    q, cq = packed([9, 0, 5], 2, 8, 21)
    g = torch.Generator().manual_seed(22)
    k, v = (torch.randn(3, 7, 2, 8, generator=g, dtype=torch.float64) for _ in range(2))
    out = varlen_attention(q, k, v, cq)                       # kv offsets implied: b·7
    torch.testing.assert_close(out[:9], naive(q[:9], k[0], v[0]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[9:], naive(q[9:], k[2], v[2]), rtol=1e-12, atol=1e-12)
