"""Channel <-> space ×2 resampling of the SC-VAE blocks (spec ovoxel-and-export.md §2.5, §2.12).

Child k of a parent p has coords 2p + (dx, dy, dz) with k = dx + 2·dy + 4·dz (x is the low bit) and
owns channel block k of the parent's features (child-major). Decoder (C2S): parents in input order,
children ascending k where the mask is set. Encoder (S2C): parents = unique(coords // 2) sorted by
flattened key, child k's features into slot k, absent children zero; the map is kept in the
parents' cache so a later C2S at that scale re-creates exactly those children in that order.
The map also keeps a reference to the children's cache, and a cached-mode C2S starts the re-created
children's cache from a copy of it: they get the next finer level's map (and that level's neighbour
maps), so a chain of S2C levels is undone level by level (upstream's scale-keyed spatial cache).
"""
from __future__ import annotations

import torch

from ..errors import InputError
from .neighbors import flat_keys
from .tensor import SparseTensor

S2C_KEY = "spatial_to_channel"


def child_offsets(sub: torch.Tensor) -> torch.Tensor:
    """[M, 3] (dx, dy, dz) of sub-indices k = dx + 2dy + 4dz."""
    return torch.stack([sub & 1, (sub >> 1) & 1, (sub >> 2) & 1], 1)


def sub_index(coords: torch.Tensor) -> torch.Tensor:
    """Sub-index k of each fine voxel inside its parent, from the low bits of (x, y, z)."""
    c = coords.long()
    return (c[:, 1] & 1) + 2 * (c[:, 2] & 1) + 4 * (c[:, 3] & 1)


def _half_scale(scale: tuple, f: float) -> tuple:
    return tuple(s * f for s in scale)


def channel_to_spatial(x: SparseTensor, mask: torch.Tensor | None = None) -> tuple[SparseTensor, torch.Tensor]:
    """Split each parent's 8·Cc channels among its children; returns (children, parent row per child).

    With ``mask`` [N, 8] bool, child k of parent n exists iff mask[n, k]. With ``mask=None`` the
    children left by ``spatial_to_channel`` at this scale are re-created (cached mode), with a copy of
    their cache (so the next finer level's map comes along). The children's cache also holds the sub-index per child (key 'c2s_sub') for ``children_feats``.
    """
    n = len(x)
    if x.feats.dim() != 2 or x.feats.shape[1] % 8:
        raise InputError(f"channel_to_spatial needs feats [N, 8·C], got {tuple(x.feats.shape)}")
    if mask is None:
        if S2C_KEY not in x.cache:
            raise InputError("channel_to_spatial without a mask needs a tensor made by spatial_to_channel")
        child_coords, parent, sub, fine_cache = x.cache[S2C_KEY]
        cache = dict(fine_cache)        # a copy: the decoder's own maps stay out of the encoder's cache
    else:
        if mask.shape != (n, 8):
            raise InputError(f"subdivision mask must be [{n}, 8], got {tuple(mask.shape)}")
        parent, sub = torch.nonzero(mask.to(torch.bool), as_tuple=True)  # parent-major, k ascending
        child_coords = x.coords[parent].clone()
        child_coords[:, 1:] = child_coords[:, 1:] * 2 + child_offsets(sub).to(torch.int32)
        cache = None
    feats = x.feats.reshape(n, 8, -1)[parent, sub]
    child = SparseTensor(feats, child_coords, batch_size=x.batch_size, cache=cache,
                         scale=_half_scale(x.scale, 0.5), check=False)
    child.cache["c2s_parent"], child.cache["c2s_sub"] = parent, sub
    return child, parent


def children_feats(children: SparseTensor, parent_feats: torch.Tensor) -> torch.Tensor:
    """Channel-to-spatial of another parent feature matrix onto ``children``' voxels (same mask)."""
    parent, sub = children.cache["c2s_parent"], children.cache["c2s_sub"]
    return parent_feats.reshape(parent_feats.shape[0], 8, -1)[parent, sub]


def spatial_to_channel(x: SparseTensor) -> tuple[SparseTensor, torch.Tensor]:
    """Gather children into their parent's channel slots; returns (parents [M, 8·C], parent row per child)."""
    if x.feats.dim() != 2:
        raise InputError(f"spatial_to_channel needs feats [N, C], got {tuple(x.feats.shape)}")
    pc = x.coords.clone()
    pc[:, 1:] = torch.div(pc[:, 1:], 2, rounding_mode="floor")
    extent = tuple(int(v) + 1 for v in pc[:, 1:].amax(0).tolist()) if len(x) else (1, 1, 1)
    uniq, parent = torch.unique(flat_keys(pc, extent), sorted=True, return_inverse=True)
    m = uniq.shape[0]
    parent_coords = torch.empty(m, 4, dtype=torch.int32, device=x.coords.device)
    parent_coords[parent] = pc
    sub = sub_index(x.coords)
    feats = x.feats.new_zeros(m, 8, x.feats.shape[1])
    feats[parent, sub] = x.feats
    parents = SparseTensor(feats.reshape(m, -1), parent_coords, batch_size=x.batch_size,
                           scale=_half_scale(x.scale, 2.0), check=False)
    parents.cache[S2C_KEY] = (x.coords, parent, sub, x.cache)     # x.cache: the finer levels' maps
    return parents, parent
