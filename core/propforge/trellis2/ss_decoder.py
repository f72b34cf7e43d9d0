"""Sparse-structure decoder: dense 3-D conv net, 16³×8 latent -> 64³ occupancy logits.

Spec ovoxel-and-export.md §1 (the TRELLIS v1 ``ss_dec_conv3d_16l8_fp16`` checkpoint the TRELLIS.2
pipeline reuses). fp32 input/output layers around an fp16 torso (conv weights only; channel
LayerNorms compute in fp32), keys as upstream.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SSDecoderConfig:
    out_channels: int = 1
    latent_channels: int = 8
    num_res_blocks: int = 2
    channels: tuple[int, ...] = (512, 128, 32)
    num_res_blocks_middle: int = 2
    norm_type: str = "layer"
    use_fp16: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "SSDecoderConfig":
        unknown = sorted(set(args) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unsupported SS-decoder args {unknown}")
        cfg = cls(**args)
        if cfg.norm_type != "layer":
            raise ValueError(f"only norm_type='layer' is implemented, got {cfg.norm_type!r}")
        cfg.channels = tuple(cfg.channels)
        return cfg

    def as_float32(self) -> "SSDecoderConfig":
        return replace(self, use_fp16=False)


class ChannelLayerNorm32(nn.LayerNorm):
    """LayerNorm over the channel axis of [B, C, X, Y, Z], fp32 math, eps 1e-5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 2, 3, 4, 1).float()
        return super().forward(h).to(x.dtype).permute(0, 4, 1, 2, 3).contiguous()


def conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """Conv in the weights' dtype; fp16 on CPU runs in fp32 and rounds (CPU lacks half conv3d)."""
    if x.device.type == "cpu" and conv.weight.dtype == torch.float16:
        return F.conv3d(x.float(), conv.weight.float(), conv.bias.float(), padding=1).half()
    return conv(x.to(conv.weight.dtype))


def pixel_shuffle_3d(x: torch.Tensor, s: int = 2) -> torch.Tensor:
    """Channel c·8 + 4·sx + 2·sy + sz -> channel c at (2x+sx, 2y+sy, 2z+sz)."""
    b, c, h, w, d = x.shape
    x = x.reshape(b, c // s ** 3, s, s, s, h, w, d).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // s ** 3, h * s, w * s, d * s)


class ResBlock3d(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = ChannelLayerNorm32(c, eps=1e-5), ChannelLayerNorm32(c, eps=1e-5)
        self.conv1, self.conv2 = nn.Conv3d(c, c, 3, padding=1), nn.Conv3d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = conv3d(self.conv1, F.silu(self.norm1(x)))
        h = conv3d(self.conv2, F.silu(self.norm2(h)))
        return h + x


class UpsampleBlock3d(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out * 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(conv3d(self.conv, x))


class SparseStructureDecoder(nn.Module):
    """z [B, 8, r, r, r] fp32 -> logits [B, 1, 4r, 4r, 4r] fp32 (two ×2 pixel-shuffle stages)."""

    config_class = SSDecoderConfig

    def __init__(self, cfg: SSDecoderConfig) -> None:
        super().__init__()
        self.config = cfg
        ch = cfg.channels
        self.input_layer = nn.Conv3d(cfg.latent_channels, ch[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(ch[0]) for _ in range(cfg.num_res_blocks_middle)])
        blocks: list[nn.Module] = []
        for i, c in enumerate(ch):
            blocks += [ResBlock3d(c) for _ in range(cfg.num_res_blocks)]
            if i < len(ch) - 1:
                blocks.append(UpsampleBlock3d(c, ch[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(ChannelLayerNorm32(ch[-1], eps=1e-5), nn.SiLU(),
                                       nn.Conv3d(ch[-1], cfg.out_channels, 3, padding=1))
        if cfg.use_fp16:
            for m in [*self.middle_block.modules(), *self.blocks.modules()]:
                if isinstance(m, nn.Conv3d):
                    m.half()

    @property
    def torso_dtype(self) -> torch.dtype:
        return torch.float16 if self.config.use_fp16 else torch.float32

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(z.float()).to(self.torso_dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.float())


def occupied_coords(logits: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """int32 (b, x, y, z) rows, row-major, of logits > 0, after a ``pool``³ max-pool (64³ -> 32³: 2)."""
    occ = (logits > 0).float()
    if pool > 1:
        occ = F.max_pool3d(occ, pool, pool)
    return torch.argwhere(occ > 0.5)[:, [0, 2, 3, 4]].int()
