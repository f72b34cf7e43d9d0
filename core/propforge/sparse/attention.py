"""Attention over packed variable-length sequences and dense batches (spec generator.md §2.5, §2.9).

Packed layout: q [Tq, H, D], k/v [Tk, H, D], sample b owns rows cu_seqlens[b]:cu_seqlens[b+1] of each.
Self-attention passes the same offsets twice; cross-attention to image tokens passes the cond
offsets (e.g. b·L) for k/v. flash-attn's varlen kernel is used when importable (CUDA, fp16/bf16);
otherwise one batched SDPA call when all segments have equal lengths, else one SDPA call per segment.
softmax scale 1/√D unless given. Works in float64 (for tests) on any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

try:  # optional accelerator
    from flash_attn import flash_attn_varlen_func as _flash_varlen  # type: ignore
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _flash_varlen = None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Dense attention, q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D] (no mask, non-causal)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise InputError(f"attention expects [B, L, H, D] tensors, got {tuple(q.shape)}, {tuple(k.shape)}")
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2)


def _lengths(cu: torch.Tensor, total: int, name: str) -> list[int]:
    if cu.dim() != 1 or cu.numel() < 1:
        raise InputError(f"{name} must be a 1-D tensor [B + 1] of offsets")
    offs = cu.tolist()
    if offs[0] != 0 or offs[-1] != total or any(b < a for a, b in zip(offs, offs[1:])):
        raise InputError(f"{name} must rise from 0 to {total} (the packed length), got {offs[:4]}...{offs[-1:]}")
    return offs


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_kv: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Per-sample full attention over packed sequences; returns [Tq, H, D] in q's dtype.

    k/v may also be dense [B, L, H, D] (e.g. image tokens for cross-attention); then
    ``cu_seqlens_kv`` is implied (b·L) and may be omitted.
    """
    if k.dim() == 4 and v.dim() == 4:
        b, length = k.shape[:2]
        if cu_seqlens_kv is None:
            cu_seqlens_kv = torch.arange(b + 1, dtype=torch.int32) * length
        k, v = k.reshape(b * length, *k.shape[2:]), v.reshape(b * length, *v.shape[2:])
    if cu_seqlens_kv is None:
        raise InputError("varlen_attention needs cu_seqlens_kv for packed [T, H, D] keys")
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise InputError(f"varlen_attention expects packed [T, H, D] tensors, got {tuple(q.shape)}")
    oq = _lengths(cu_seqlens_q, q.shape[0], "cu_seqlens_q")
    ok = _lengths(cu_seqlens_kv, k.shape[0], "cu_seqlens_kv")
    if len(oq) != len(ok):
        raise InputError(f"cu_seqlens_q has {len(oq) - 1} samples, cu_seqlens_kv has {len(ok) - 1}")
    lq = [b - a for a, b in zip(oq, oq[1:])]
    lk = [b - a for a, b in zip(ok, ok[1:])]
    if (_flash_varlen is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[-1] <= 256 and min(lk, default=1) > 0):
        cq = cu_seqlens_q.to(q.device, torch.int32)
        ck = cu_seqlens_kv.to(q.device, torch.int32)
        return _flash_varlen(q, k, v, cq, ck, max(lq), max(lk), softmax_scale=scale)
    nb = len(lq)
    if q.shape[0] == 0:
        return q.new_empty(0, q.shape[1], v.shape[2])
    if nb > 0 and len(set(lq)) == 1 and len(set(lk)) == 1 and lk[0] > 0:   # equal lengths: one batched call
        h, d = q.shape[1], q.shape[2]
        out = attention(q.reshape(nb, lq[0], h, d), k.reshape(nb, lk[0], h, k.shape[2]),
                        v.reshape(nb, lk[0], h, v.shape[2]), scale)
        return out.reshape(q.shape[0], h, v.shape[2])
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2])
    for (a, b), (c, e) in zip(zip(oq, oq[1:]), zip(ok, ok[1:])):
        if b == a:
            continue
        if e == c:   # no keys: softmax over nothing; define the output as zero rather than NaN
            out[a:b] = 0
            continue
        out[a:b] = attention(q[None, a:b], k[None, c:e], v[None, c:e], scale)[0]
    return out
