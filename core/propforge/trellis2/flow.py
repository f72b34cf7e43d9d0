"""TRELLIS.2 flow transformers: the dense sparse-structure DiT and the sparse SLat DiT, one file.

Both share one torso (spec generator.md §2): fp32 input/time/adaLN/output layers around a stack of
modulated cross-attention blocks whose Linear layers and residual stream run in ``config.dtype``
(bf16 as released, fp32 on request). State-dict keys are upstream's, so released checkpoints load
strictly. Sparse inputs are plain tensors: ``feats [N, C]`` + ``coords [N, 4]`` (batch, x, y, z)
with each batch item's rows contiguous.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class FlowConfig:
    """Constructor args of ``SparseStructureFlowModel`` / ``SLatFlowModel`` (upstream json names)."""

    resolution: int = 16
    in_channels: int = 8
    out_channels: int = 8
    model_channels: int = 1536
    cond_channels: int = 1024
    num_blocks: int = 30
    num_heads: int = 12
    mlp_ratio: float = 5.3334
    pe_mode: str = "rope"
    share_mod: bool = True
    qk_rms_norm: bool = True
    qk_rms_norm_cross: bool = True
    dtype: str = "float32"
    rope_freq: tuple[float, float] = (1.0, 10000.0)

    #: args upstream accepts that change nothing at inference
    IGNORED = ("initialization", "use_checkpoint", "use_fp16", "num_head_channels")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "FlowConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known - set(cls.IGNORED))
        if unknown:
            raise ValueError(f"unsupported flow-model args {unknown}")
        cfg = cls(**{k: v for k, v in args.items() if k in known})
        if cfg.pe_mode != "rope" or not cfg.share_mod:
            raise ValueError(f"only pe_mode='rope' with share_mod=true is implemented "
                             f"(got pe_mode={cfg.pe_mode!r}, share_mod={cfg.share_mod})")
        if cfg.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {cfg.dtype!r}")
        if cfg.model_channels % cfg.num_heads:
            raise ValueError("model_channels must be divisible by num_heads")
        cfg.rope_freq = tuple(cfg.rope_freq)
        return cfg

    def as_float32(self) -> "FlowConfig":
        return replace(self, dtype="float32")

    @property
    def head_dim(self) -> int:
        return self.model_channels // self.num_heads


# ---------------------------------------------------------------------------------------- helpers

def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t (already ×1000), **cos first** (spec §2.4)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_phases(pos: torch.Tensor, head_dim: int, rope_freq: tuple[float, float]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [T, head_dim/2] for integer positions [T, 3]: x|y|z blocks, tail unrotated."""
    freq_dim = head_dim // 2 // 3
    freqs = rope_freq[0] / (rope_freq[1] ** (torch.arange(freq_dim, dtype=torch.float32, device=pos.device) / freq_dim))
    angles = (pos.float()[:, :, None] * freqs).reshape(len(pos), 3 * freq_dim)
    pad = head_dim // 2 - 3 * freq_dim
    if pad:
        angles = torch.cat([angles, angles.new_zeros(len(pos), pad)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


# Memory-bound glue between the matmuls (~35 % of a flow call on an H100, benchmarks/RESULTS.md).
# ``PROPFORGE_COMPILE=1`` (or ``set_compile(True)``) fuses each function with torch.compile on CUDA;
# the eager code is the same function.
_COMPILE = {"on": os.environ.get("PROPFORGE_COMPILE", "") == "1"}


def set_compile(on: bool) -> None:
    _COMPILE["on"] = bool(on)


def _compile(fn: Callable) -> Callable:
    import torch._inductor.config as inductor_config
    inductor_config.emulate_precision_casts = True     # round like eager bf16 ops do (reference parity)
    return torch.compile(fn, dynamic=True)


def _fusable(fn: Callable) -> Callable:
    compiled: list[Callable] = []

    @functools.wraps(fn)
    def run(*args: Any) -> torch.Tensor:
        if _COMPILE["on"] and args[0].is_cuda:
            if not compiled:
                compiled.append(_compile(fn))
            return compiled[0](*args)
        return fn(*args)
    return run


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (re, im) of x [B, T, H, D] by angle tables [T, D/2] in fp32."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[:, None], sin[:, None]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2).to(x.dtype)


def rms_norm(x: torch.Tensor, gamma: torch.Tensor, scale: float) -> torch.Tensor:
    """L2-normalise per head × gamma × sqrt(D) (spec §2.7); no eps inside the root; fp32 math."""
    return (F.normalize(x.float(), dim=-1) * gamma * scale).to(x.dtype)


@_fusable
def rms_rope(x: torch.Tensor, gamma: torch.Tensor, scale: float, cos: torch.Tensor, sin: torch.Tensor
             ) -> torch.Tensor:
    """QK norm then RoPE (the order upstream uses)."""
    return apply_rope(rms_norm(x, gamma, scale), cos, sin)


@_fusable
def ln_modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Affine-free LayerNorm (fp32 stats, eps 1e-6) -> x·(1 + scale) + shift in h's dtype."""
    return F.layer_norm(h.float(), h.shape[-1:], eps=1e-6).to(h.dtype) * (1 + scale) + shift


@_fusable
def ln_affine(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm with fp32 affine parameters (``norm2``), eps 1e-6, result in h's dtype."""
    return F.layer_norm(h.float(), h.shape[-1:], weight, bias, 1e-6).to(h.dtype)


@_fusable
def gated_add(h: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return h + y * gate


class RMSNorm(nn.Module):
    """Per-head QK norm parameters (``gamma`` [H, D]); the math is ``rms_norm``."""

    def __init__(self, heads: int, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(heads, dim))
        self.scale = dim ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.gamma, self.scale)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ/√d) v for [B, T, H, D] tensors, returns [B, T, H, D]."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return o.transpose(1, 2)


# ----------------------------------------------------------------------------------------- blocks

class SelfAttention(nn.Module):
    def __init__(self, c: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(c, 3 * c)
        if qk_norm:
            self.q_rms_norm, self.k_rms_norm = RMSNorm(heads, c // heads), RMSNorm(heads, c // heads)
        self.qk_norm = qk_norm
        self.to_out = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, phases: tuple[torch.Tensor, torch.Tensor], seqlens: list[int]
                ) -> torch.Tensor:
        """x [1, T, C] packed tokens of all samples; each sample attends only to itself."""
        q, k, v = self.to_qkv(x).reshape(*x.shape[:2], 3, self.heads, -1).unbind(2)
        if self.qk_norm:
            qn, kn = self.q_rms_norm, self.k_rms_norm
            q, k = rms_rope(q, qn.gamma, qn.scale, *phases), rms_rope(k, kn.gamma, kn.scale, *phases)
        else:
            q, k = apply_rope(q, *phases), apply_rope(k, *phases)
        if len(seqlens) == 1:
            o = attention(q, k, v)
        else:
            parts = [attention(*a) for a in zip(*(t.split(seqlens, dim=1) for t in (q, k, v)))]
            o = torch.cat(parts, dim=1)
        return self.to_out(o.reshape(*x.shape[:2], -1))


class CrossAttention(nn.Module):
    def __init__(self, c: int, cc: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q, self.to_kv = nn.Linear(c, c), nn.Linear(cc, 2 * c)
        if qk_norm:
            self.q_rms_norm, self.k_rms_norm = RMSNorm(heads, c // heads), RMSNorm(heads, c // heads)
        self.qk_norm = qk_norm
        self.to_out = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
        """x [1, T, C] packed tokens; cond [B, L, Cc], sample b's tokens see cond[b] only."""
        q = self.to_q(x).reshape(*x.shape[:2], self.heads, -1)
        k, v = self.to_kv(cond).reshape(*cond.shape[:2], 2, self.heads, -1).unbind(2)
        if self.qk_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        if len(seqlens) == 1:
            o = attention(q, k, v)
        else:
            parts = [attention(qb, k[b:b + 1], v[b:b + 1]) for b, qb in enumerate(q.split(seqlens, dim=1))]
            o = torch.cat(parts, dim=1)
        return self.to_out(o.reshape(*x.shape[:2], -1))

    def zero_cond_out(self) -> torch.Tensor:
        """Output for an all-zero cond (CFG's negative pass, spec §7): every key is the same, so
        attention is uniform and returns the value bias; [C], the same for every token."""
        c = self.to_q.out_features
        return self.to_out(self.to_kv.bias[c:])


class FeedForward(nn.Module):
    def __init__(self, c: int, ratio: float) -> None:
        super().__init__()
        hidden = int(c * ratio)
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class Block(nn.Module):
    """Modulated cross-attention block with a shared adaLN (spec §2.5)."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        c = cfg.model_channels
        self.self_attn = SelfAttention(c, cfg.num_heads, cfg.qk_rms_norm)
        self.norm2 = nn.LayerNorm(c, eps=1e-6)
        self.cross_attn = CrossAttention(c, cfg.cond_channels, cfg.num_heads, cfg.qk_rms_norm_cross)
        self.mlp = FeedForward(c, cfg.mlp_ratio)
        self.modulation = nn.Parameter(torch.randn(6 * c) / c ** 0.5)

    def forward(self, h: torch.Tensor, mod: torch.Tensor, cond: torch.Tensor,
                phases: tuple[torch.Tensor, torch.Tensor], seqlens: list[int], zero_cond: bool = False
                ) -> torch.Tensor:
        """h [1, T, C]; mod [1, T or 1, 6C] already expanded to tokens."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + mod).to(mod.dtype).chunk(6, dim=-1)
        h = gated_add(h, self.self_attn(ln_modulate(h, shift1, scale1), phases, seqlens), gate1)
        if zero_cond:
            h = h + self.cross_attn.zero_cond_out()
        else:
            h = h + self.cross_attn(ln_affine(h, self.norm2.weight, self.norm2.bias), cond, seqlens)
        return gated_add(h, self.mlp(ln_modulate(h, shift2, scale2)), gate2)


# ----------------------------------------------------------------------------------------- models

class _FlowTorso(nn.Module):
    """Shared fp32 I/O layers and the block stack; subclasses pack tokens."""

    config_class = FlowConfig

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.config = cfg
        c = cfg.model_channels
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, c), nn.SiLU(), nn.Linear(c, c))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.input_layer = nn.Linear(cfg.in_channels, c)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_blocks))
        self.out_layer = nn.Linear(c, cfg.out_channels)
        self.set_dtype(cfg.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]

    def set_dtype(self, dtype: str) -> None:
        """Cast only the Linear layers inside ``blocks`` (norms, gammas, modulation stay fp32)."""
        self.config.dtype = dtype
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                m.to(DTYPES[dtype])

    def _torso(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, token_batch: torch.Tensor | None,
               phases: tuple[torch.Tensor, torch.Tensor], seqlens: list[int]) -> torch.Tensor:
        """x [1, T, Cin] fp32 -> [1, T, Cout] fp32; token_batch maps tokens to their sample's mod row."""
        h = self.input_layer(x).to(self.dtype)
        m = self.adaLN_modulation(self.t_embedder.mlp(timestep_embedding(t))).to(self.dtype)
        m = m[:, None] if token_batch is None else m[token_batch][None]   # [1, 1, 6C] or [1, T, 6C]
        zero_cond = not bool(cond.any())       # CFG negative pass: skip cross-attention (exact)
        cond = cond.to(self.dtype)
        for block in self.blocks:
            h = block(h, m, cond, phases, seqlens, zero_cond)
        h = F.layer_norm(h.float(), h.shape[-1:], eps=1e-5)
        return self.out_layer(h)


class SparseStructureFlowModel(_FlowTorso):
    """Dense DiT over the 16³ sparse-structure latent: [B, 8, R, R, R] -> velocity of the same shape."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__(cfg)
        self._phases: dict[torch.device, tuple] = {}   # upstream's `rope_phases` buffer, not stored

    def grid_phases(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE phases of the dense grid, token n = r²·i + r·j + k (computed once per device)."""
        if device not in self._phases:
            r = self.config.resolution
            grid = torch.stack(torch.meshgrid(*[torch.arange(r, device=device)] * 3, indexing="ij"), -1)
            self._phases[device] = rope_phases(grid.reshape(-1, 3), self.config.head_dim, self.config.rope_freq)
        return self._phases[device]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, r = x.shape[0], x.shape[1], self.config.resolution
        if tuple(x.shape[2:]) != (r, r, r):
            raise ValueError(f"SS flow expects [B, {self.config.in_channels}, {r}, {r}, {r}], got {tuple(x.shape)}")
        tokens = x.reshape(b, c, -1).transpose(1, 2).reshape(1, b * r ** 3, c)
        batch = torch.arange(b, device=x.device).repeat_interleave(r ** 3)
        phases = self.grid_phases(x.device)
        phases = tuple(p.repeat(b, 1) for p in phases) if b > 1 else phases
        out = self._torso(tokens, t, cond, batch if b > 1 else None, phases, [r ** 3] * b)
        return out.reshape(b, r ** 3, -1).transpose(1, 2).reshape(b, -1, r, r, r).contiguous()


class SLatFlowModel(_FlowTorso):
    """Sparse DiT over structured latents: feats [N, Cin] at coords [N, 4] -> velocity [N, Cout]."""

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                concat_feats: torch.Tensor | None = None) -> torch.Tensor:
        if concat_feats is not None:               # texture model: [noisy tex ‖ normalised shape]
            feats = torch.cat([feats, concat_feats], dim=-1)
        batch = coords[:, 0].long()
        seqlens = torch.bincount(batch, minlength=len(t)).tolist()
        phases = rope_phases(coords[:, 1:], self.config.head_dim, self.config.rope_freq)
        token_batch = batch if len(seqlens) > 1 else None
        return self._torso(feats[None], t, cond, token_batch, phases, seqlens)[0]
