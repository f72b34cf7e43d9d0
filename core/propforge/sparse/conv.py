"""Submanifold 3x3x3 sparse convolution in the checkpoint layout (spec ovoxel-and-export.md §2.3).

out[p] = bias + Σ_v W[:, v, :] · in[p + offset(v)] over present neighbours (cross-correlation, no
flip); the output keeps the input's voxel set and row order. Weight [Co, 3, 3, 3, Ci] reshaped to
[Co, 27, Ci] uses the neighbour index v of ``neighbors.py``. Accumulation is fp32 for fp16/bf16.

Backends: 'triton' (implicit GEMM over the neighbour map, ``conv_triton.py``) on CUDA, 'torch'
(vectorised gather-GEMM in row chunks) everywhere. ``PROPFORGE_SPARSE_BACKEND`` forces one. The
Triton kernel is forward-only: when autograd needs a graph the torch path runs instead.
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn

from ..errors import BackendUnavailable, InputError
from .conv_triton import choose_block_m, choose_groups, sparse_conv3d_triton, triton_available
from .neighbors import neighbor_map
from .tensor import SparseTensor

_CHUNK_ELEMS = 1 << 25  # im2col elements per chunk of the torch path (128 MB in fp32)


def conv_backend(device: torch.device) -> str:
    """'triton' on CUDA when importable, else 'torch'; PROPFORGE_SPARSE_BACKEND overrides."""
    env = os.environ.get("PROPFORGE_SPARSE_BACKEND", "").strip().lower()
    if env in ("torch", "triton"):
        return env
    if env:
        raise InputError(f"PROPFORGE_SPARSE_BACKEND={env!r}: expected 'torch' or 'triton'")
    if device.type == "cuda":
        return "triton" if triton_available() else "torch"
    return "torch"


def sparse_conv3d_torch(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None) -> torch.Tensor:
    """Reference/fallback: im2col gather of the 27 neighbours (zero row for missing) and one GEMM.

    On CPU fp16/bf16 are upcast to fp32 (CPU half GEMMs are slow); on CUDA the GEMM runs in the
    input dtype, which cuBLAS accumulates in fp32.
    """
    n, ci = feats.shape
    co = weight.shape[0]
    work = torch.float32 if (feats.device.type == "cpu" and feats.dtype in (torch.float16, torch.bfloat16)) \
        else feats.dtype
    src = torch.cat([feats.to(work), feats.new_zeros(1, ci, dtype=work)])
    idx = torch.where(nbr < 0, n, nbr).long()
    w = weight.to(work).reshape(co, 27 * ci).t()
    b = None if bias is None else bias.to(work)
    step = max(1, _CHUNK_ELEMS // (27 * max(ci, 1)))
    parts = []
    for s in range(0, n, step):
        cols = src[idx[s:s + step]].reshape(-1, 27 * ci)
        parts.append(cols @ w if b is None else torch.addmm(b, cols, w))
    if not parts:
        return feats.new_zeros(0, co)
    out = torch.cat(parts) if len(parts) > 1 else parts[0]
    return out.to(feats.dtype)


def sparse_conv3d(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, backend: str | None = None,
                  plan_cache: dict | None = None) -> torch.Tensor:
    """Functional submanifold conv on plain arrays: feats [N, Ci], nbr [N, 27] -> [N, Co] (input dtype)."""
    if weight.dim() != 5 or tuple(weight.shape[1:4]) != (3, 3, 3):
        raise InputError(f"sparse conv weight must be [Co, 3, 3, 3, Ci], got {tuple(weight.shape)}")
    if feats.dim() != 2 or feats.shape[1] != weight.shape[4]:
        raise InputError(f"sparse conv expects feats [N, {weight.shape[4]}], got {tuple(feats.shape)}")
    if nbr.shape != (feats.shape[0], 27):
        raise InputError(f"neighbour map must be [{feats.shape[0]}, 27], got {tuple(nbr.shape)}")
    backend = backend or conv_backend(feats.device)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (feats, weight, bias))
    if backend == "torch" or feats.shape[0] == 0 or needs_grad:   # the Triton kernel has no backward
        return sparse_conv3d_torch(feats, nbr, weight, bias)
    if not triton_available():
        raise BackendUnavailable("sparse conv backend 'triton' requested but triton is not importable")
    block_m = groups = None
    if feats.is_cuda and not os.environ.get("PROPFORGE_SPARSE_BACKEND"):
        block_m, groups = gpu_path(feats, nbr, weight, bias, plan_cache)
    return sparse_conv3d_triton(feats, nbr, weight, bias, plan_cache=plan_cache, block_m=block_m,
                                groups=groups or 1)


_GPU_PATH: dict[tuple, tuple[int, int]] = {}
SMALL_SET = 1 << 17   # voxel sets up to this size get their kernel variant timed once per shape
#: (block rows, offset groups) timed on small sets. 64-row blocks with split passes never won on an
#: H100 (2026-11-27: 64-row tiles run the tensor cores ~30 % slower per multiplied FLOP than 128-row ones).
CANDIDATES = ((128, 1), (128, 2), (128, 3), (64, 1))
SPLIT_MARGIN = 0.03


def gpu_path(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             plan_cache: dict | None = None) -> tuple[int, int]:
    """(block rows, offset groups) of the Triton kernel for a CUDA conv of this shape.

    Why: on small voxel sets (decoder stage 0: ~10-30 k voxels) no variant wins everywhere (64-row
    blocks and split passes waste fewer pairs, 128-row blocks run the tensor cores better, each split
    pass adds an fp32 partial and launches). Such shapes are timed once, every way, and the fastest
    kept (per ×2 bucket of N, Ci, Co, dtype). Larger sets take 128-row blocks where they fill the
    GPU and the groups of ``choose_groups`` (a cost model; timing there would cost seconds).
    """
    n, ci = feats.shape
    co = weight.shape[0]
    if n > SMALL_SET:
        bm = choose_block_m(n, co)
        return bm, choose_groups(nbr, bm, ci, plan_cache)
    key = (n.bit_length(), ci, co, feats.dtype, bias is not None)
    if key not in _GPU_PATH:
        from triton.testing import do_bench

        def run(bm: int, g: int):
            return sparse_conv3d_triton(feats, nbr, weight, bias, plan_cache=plan_cache, block_m=bm, groups=g)
        for cand in CANDIDATES:
            run(*cand)   # compile / autotune outside the timing
        times = dict.fromkeys(CANDIDATES, float("inf"))
        for _ in range(2):   # two interleaved rounds, best of each: clocks and caches warm for all
            for cand in CANDIDATES:
                times[cand] = min(times[cand], do_bench(lambda c=cand: run(*c), warmup=5, rep=20))
        # a split must win by more than noise: each extra pass costs a launch and an fp32 buffer
        _GPU_PATH[key] = min(times, key=lambda c: times[c] * (1 + SPLIT_MARGIN * (c[1] - 1)))
    return _GPU_PATH[key]


class SparseConv3d(nn.Module):
    """Submanifold 3x3x3 conv; state-dict keys ``weight`` [Co, 3, 3, 3, Ci] and ``bias`` [Co]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if kernel_size != 3:
            raise InputError(f"SparseConv3d supports kernel_size 3 only (the released models), got {kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, 3, in_channels, **kw))
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv3d's default init (fan_in = 27·Ci); checkpoints overwrite it."""
        bound = 1.0 / math.sqrt(27 * self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: SparseTensor) -> SparseTensor:
        nbr = neighbor_map(x)
        out = sparse_conv3d(x.feats, nbr, self.weight, self.bias, plan_cache=x.cache)
        return x.replace(out)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=3, bias={self.bias is not None}"
