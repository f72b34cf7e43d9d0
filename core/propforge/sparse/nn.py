"""Row-wise layers on sparse features (spec ovoxel-and-export.md §2.4): each acts on ``feats`` only.

They accept a SparseTensor (returning one with the same voxels and cache) or a plain tensor, so the
same block code runs on dense token matrices in tests. State-dict keys are those of the torch layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tensor import SparseTensor

Feats = SparseTensor | torch.Tensor


def _apply(x: Feats, fn) -> Feats:
    return x.replace(fn(x.feats)) if isinstance(x, SparseTensor) else fn(x)


class SparseLinear(nn.Linear):
    """``nn.Linear`` on features (keys ``weight`` [out, in], ``bias`` [out])."""

    def forward(self, x: Feats) -> Feats:  # type: ignore[override]
        return _apply(x, lambda f: F.linear(f, self.weight, self.bias))


class LayerNorm32(nn.LayerNorm):
    """Per-voxel LayerNorm over channels computed in fp32, result cast back to the input dtype."""

    def forward(self, x: Feats) -> Feats:  # type: ignore[override]
        def ln(f: torch.Tensor) -> torch.Tensor:
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            return F.layer_norm(f.float(), self.normalized_shape, w, b, self.eps).to(f.dtype)
        return _apply(x, ln)


class SparseSiLU(nn.SiLU):
    def forward(self, x: Feats) -> Feats:  # type: ignore[override]
        return _apply(x, F.silu)


class SparseGELU(nn.GELU):
    def forward(self, x: Feats) -> Feats:  # type: ignore[override]
        return _apply(x, lambda f: F.gelu(f, approximate=self.approximate))
