"""SC-VAE: shape (flexible dual grid) and texture decoders, and the shape encoder.

Spec ovoxel-and-export.md §2. A sparse U-Net half: ``from_latent`` -> stages of ConvNeXt blocks,
each stage but the last ending in a channel-to-space ×2 block that (shape decoder) predicts which
of the 8 children exist or (texture decoder) follows the shape decoder's subdivisions. fp32
input/output layers around an fp16 torso, keys as upstream. Sparse ops come from ``propforge.sparse``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..sparse import (LayerNorm32, SparseConv3d, SparseLinear, SparseTensor, channel_to_spatial,
                      children_feats, spatial_to_channel)

BLOCK = "SparseConvNeXtBlock3d"


@dataclass
class VaeConfig:
    """Constructor args of the released decoder/encoder jsons (upstream names)."""

    model_channels: tuple[int, ...] = (1024, 512, 256, 128, 64)
    latent_channels: int = 32
    num_blocks: tuple[int, ...] = (4, 16, 8, 4, 0)
    block_type: tuple[str, ...] = (BLOCK,) * 5
    up_block_type: tuple[str, ...] = ("SparseResBlockC2S3d",) * 4
    down_block_type: tuple[str, ...] = ("SparseResBlockS2C3d",) * 4
    block_args: list[dict] = field(default_factory=list)
    use_fp16: bool = False
    out_channels: int = 7
    in_channels: int = 6
    pred_subdiv: bool = True
    resolution: int = 512
    voxel_margin: float = 0.5

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "VaeConfig":
        unknown = sorted(set(args) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unsupported SC-VAE args {unknown}")
        cfg = cls(**args)
        for name in ("model_channels", "num_blocks", "block_type", "up_block_type", "down_block_type"):
            setattr(cfg, name, tuple(getattr(cfg, name)))
        if any(b != BLOCK for b in cfg.block_type):
            raise ValueError(f"only {BLOCK} blocks are implemented, got {sorted(set(cfg.block_type))}")
        if len(cfg.num_blocks) != len(cfg.model_channels):
            raise ValueError("num_blocks and model_channels must have the same length")
        return cfg

    def as_float32(self) -> "VaeConfig":
        return replace(self, use_fp16=False)


class SparseConvNeXtBlock3d(nn.Module):
    """h = conv(x) -> LN -> Linear(4C) -> SiLU -> Linear(C); out = h + x."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = SparseConv3d(c, c)
        self.norm = LayerNorm32(c, eps=1e-6)
        self.mlp = nn.Sequential(SparseLinear(c, 4 * c), nn.SiLU(), SparseLinear(4 * c, c))

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.norm(self.conv(x).feats)
        return x.replace(self.mlp(h) + x.feats)


class SparseResBlockC2S3d(nn.Module):
    """Channel-to-space ×2 residual block (spec §2.5); subdivision from ``to_subdiv`` or a guide."""

    def __init__(self, c_in: int, c_out: int, pred_subdiv: bool) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.norm1 = LayerNorm32(c_in, eps=1e-6)
        self.conv1 = SparseConv3d(c_in, 8 * c_out)
        self.norm2 = LayerNorm32(c_out, eps=1e-6, elementwise_affine=False)
        self.conv2 = SparseConv3d(c_out, c_out)
        if pred_subdiv:
            self.to_subdiv = SparseLinear(c_in, 8)

    def forward(self, x: SparseTensor, guide: torch.Tensor | None = None) -> tuple[SparseTensor, torch.Tensor | None]:
        """-> (children, own subdivision logits [N, 8] or None); a ``guide``'s signs pick the children."""
        logits = self.to_subdiv(x.feats) if hasattr(self, "to_subdiv") else None
        signs = guide if guide is not None else logits
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))
        h, _ = channel_to_spatial(h, None if signs is None else signs > 0)   # no signs: cached mode
        skip = children_feats(h, x.feats)                                   # [M, C_in / 8]
        h = self.conv2(h.replace(F.silu(self.norm2(h.feats))))
        r = self.c_out // skip.shape[1]
        return h.replace(h.feats + skip.repeat_interleave(r, dim=1)), logits


class SparseResBlockS2C3d(nn.Module):
    """Space-to-channel ×2 residual block of the encoder (spec §2.12)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.norm1 = LayerNorm32(c_in, eps=1e-6)
        self.conv1 = SparseConv3d(c_in, c_out // 8)
        self.norm2 = LayerNorm32(c_out, eps=1e-6, elementwise_affine=False)
        self.conv2 = SparseConv3d(c_out, c_out)

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))
        h, _ = spatial_to_channel(h)
        xs, _ = spatial_to_channel(x)
        skip = xs.feats.reshape(len(xs), self.c_out, -1).mean(-1)
        h = self.conv2(h.replace(F.silu(self.norm2(h.feats))))
        return h.replace(h.feats + skip)


def _stages(ch: tuple[int, ...], n: tuple[int, ...], resample: Callable[[int, int], nn.Module]) -> nn.ModuleList:
    """``blocks.i``: n[i] ConvNeXt blocks at ch[i], then (all but the last stage) ``resample(ch[i], ch[i+1])``."""
    blocks = nn.ModuleList()
    for i, c in enumerate(ch):
        stage = nn.ModuleList(SparseConvNeXtBlock3d(c) for _ in range(n[i]))
        if i < len(ch) - 1:
            stage.append(resample(c, ch[i + 1]))
        blocks.append(stage)
    return blocks


def _cast_torso(blocks: nn.Module, use_fp16: bool) -> None:
    """fp16 weights for convs and Linears inside ``blocks``; LayerNorm params stay fp32."""
    if use_fp16:
        for m in blocks.modules():
            if isinstance(m, (SparseConv3d, nn.Linear)):
                m.half()


class SparseUnetVaeDecoder(nn.Module):
    """Latent [N, 32] on grid G -> features [N_16G, out] (texture decoder: 6 PBR channels)."""

    config_class = VaeConfig

    def __init__(self, cfg: VaeConfig) -> None:
        super().__init__()
        self.config = cfg
        ch, n = cfg.model_channels, cfg.num_blocks
        self.from_latent = SparseLinear(cfg.latent_channels, ch[0])
        self.blocks = _stages(ch, n, lambda c_in, c_out: SparseResBlockC2S3d(c_in, c_out, cfg.pred_subdiv))
        self.output_layer = SparseLinear(ch[-1], cfg.out_channels)
        _cast_torso(self.blocks, cfg.use_fp16)

    @property
    def torso_dtype(self) -> torch.dtype:
        return torch.float16 if self.config.use_fp16 else torch.float32

    def trunk(self, z: SparseTensor, guide_subs: list[torch.Tensor] | None = None,
              stages: int | None = None) -> tuple[SparseTensor, list[torch.Tensor]]:
        """Run from_latent and ``stages`` stages; -> (features, subdivision logits per up-block)."""
        h = z.replace(self.from_latent(z.feats.float()).to(self.torso_dtype))
        subs: list[torch.Tensor] = []
        for i, stage in enumerate(self.blocks[: stages]):
            for block in stage:
                if isinstance(block, SparseResBlockC2S3d):
                    guide = None if guide_subs is None else guide_subs[i]
                    if guide is not None and len(guide) != len(h):
                        raise ValueError(f"guide subdivision {i} has {len(guide)} rows, level has {len(h)} voxels")
                    h, logits = block(h, guide)
                    if logits is not None:
                        subs.append(logits)
                else:
                    h = block(h)
        return h, subs

    def forward(self, z: SparseTensor, guide_subs: list[torch.Tensor] | None = None
                ) -> tuple[SparseTensor, list[torch.Tensor]]:
        """-> (head output fp32 [N_R, out], subdivision logits per level, fp32).

        ``guide_subs``: subdivision logits to follow (the texture decoder gets the shape decoder's).
        Without them a ``pred_subdiv=False`` decoder re-creates the voxels of the encoder whose
        space-to-channel maps the latent carries in its cache (texturing pipeline)."""
        h, subs = self.trunk(z, guide_subs)
        out = self.output_layer(F.layer_norm(h.feats.float(), h.feats.shape[-1:], eps=1e-5))
        return h.replace(out), [s.float() for s in subs]


class FlexiDualGridVaeDecoder(SparseUnetVaeDecoder):
    """Shape decoder: 7-channel head -> dual-vertex offsets, intersection flags, split weights."""

    def __init__(self, cfg: VaeConfig) -> None:
        super().__init__(replace(cfg, out_channels=7, pred_subdiv=True))

    def upsample(self, z: SparseTensor, upsample_times: int = 4) -> torch.Tensor:
        """int32 coords after ``upsample_times`` subdivision stages (the cascade's HR voxel set)."""
        h, _ = self.trunk(z, stages=upsample_times)
        return h.coords

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw [N, 7] head -> (offsets (1+2m)σ - m, flags h > 0, split weight softplus)."""
        m = self.config.voxel_margin
        return (1 + 2 * m) * torch.sigmoid(h[:, 0:3]) - m, h[:, 3:6] > 0, F.softplus(h[:, 6:7])


class FlexiDualGridVaeEncoder(nn.Module):
    """Shape encoder (texturing pipeline): 6-ch O-Voxel features at grid R -> latent mean at R/16."""

    config_class = VaeConfig

    def __init__(self, cfg: VaeConfig) -> None:
        super().__init__()
        self.config = cfg
        ch, n = cfg.model_channels, cfg.num_blocks
        self.input_layer = SparseLinear(cfg.in_channels, ch[0])
        self.blocks = _stages(ch, n, SparseResBlockS2C3d)
        self.to_latent = SparseLinear(ch[-1], 2 * cfg.latent_channels)
        _cast_torso(self.blocks, cfg.use_fp16)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """-> posterior mean [M, 32]; its cache keeps the S2C maps for cached-mode decoding."""
        dtype = torch.float16 if self.config.use_fp16 else torch.float32
        h = x.replace(self.input_layer(x.feats.float()).to(dtype))
        for stage in self.blocks:
            for block in stage:
                h = block(h)
        out = self.to_latent(F.layer_norm(h.feats.float(), h.feats.shape[-1:], eps=1e-5))
        return h.replace(out[:, : self.config.latent_channels])

