"""Coordinate lookup and the 3x3x3 neighbour map (spec ovoxel-and-export.md §2.3).

``nbr[i, v]`` is the row of voxel ``coords[i] + offset(v)`` in the same batch item, or -1, with
v = 9(ox+1) + 3(oy+1) + (oz+1) (z fastest, v = 13 is the centre). Look-ups outside the occupied
extent [0, max + 1) are missing. Two lookups build the same map: sort + searchsorted (any device,
pure PyTorch) and an open-addressing hash table in Triton (CUDA, see ``hashmap.py``).
"""
from __future__ import annotations

import os

import torch

from ..errors import InputError
from .tensor import SparseTensor

#: [27, 3] (ox, oy, oz) for v = 0..26 in checkpoint order.
OFFSETS = torch.tensor([[ox, oy, oz] for ox in (-1, 0, 1) for oy in (-1, 0, 1) for oz in (-1, 0, 1)],
                       dtype=torch.int64)


def flat_keys(coords: torch.Tensor, extent: tuple[int, int, int]) -> torch.Tensor:
    """int64 key ((b·X + x)·Y + y)·Z + z of int coords [..., 4]; lexicographic in (b, x, y, z)."""
    X, Y, Z = (int(e) for e in extent)
    c = coords.long()
    return ((c[..., 0] * X + c[..., 1]) * Y + c[..., 2]) * Z + c[..., 3]


def neighbor_map_sorted(coords: torch.Tensor, extent: tuple[int, int, int]) -> torch.Tensor:
    """[N, 27] int32 neighbour rows (-1 = missing) by sorting keys and binary search; any device."""
    n = coords.shape[0]
    nbr = torch.full((n, 27), -1, dtype=torch.int32, device=coords.device)
    if n == 0:
        return nbr
    keys = flat_keys(coords, extent)
    sorted_keys, order = torch.sort(keys)
    if n > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
        raise InputError("coords contain duplicate voxels; a sparse tensor needs each voxel once")
    order = order.to(torch.int32)
    c = coords.long()
    hi = torch.tensor(extent, dtype=torch.int64, device=coords.device)
    offsets = OFFSETS.to(device=coords.device, dtype=torch.int64)   # one copy, not 26 small ones
    for v in range(27):
        if v == 13:
            nbr[:, 13] = torch.arange(n, dtype=torch.int32, device=coords.device)
            continue
        q = c[:, 1:] + offsets[v]
        inside = ((q >= 0) & (q < hi)).all(1)
        qk = flat_keys(torch.cat([c[:, :1], q], 1), extent)
        pos = torch.searchsorted(sorted_keys, qk).clamp_(max=n - 1)
        found = inside & (sorted_keys[pos] == qk)
        nbr[:, v] = torch.where(found, order[pos], -1)
    return nbr


def lookup_method(device: torch.device) -> str:
    """'hash' (Triton hash table) on CUDA unless PROPFORGE_SPARSE_LOOKUP says otherwise, else 'sort'."""
    env = os.environ.get("PROPFORGE_SPARSE_LOOKUP", "").strip().lower()
    if env in ("sort", "hash"):
        return env
    if env:
        raise InputError(f"PROPFORGE_SPARSE_LOOKUP={env!r}: expected 'sort' or 'hash'")
    if device.type == "cuda":
        from .hashmap import hash_available
        return "hash" if hash_available() else "sort"
    return "sort"


def build_neighbor_map(coords: torch.Tensor, extent: tuple[int, int, int], method: str | None = None) -> torch.Tensor:
    """Neighbour map by the chosen lookup ('sort' or 'hash'); both give identical maps."""
    method = method or lookup_method(coords.device)
    if method == "hash":
        from .hashmap import neighbor_map_hash
        return neighbor_map_hash(coords, extent)
    return neighbor_map_sorted(coords, extent)


def neighbor_map(x: SparseTensor) -> torch.Tensor:
    """The [N, 27] int32 map of ``x``'s voxel set, built once and kept in ``x.cache``."""
    return x.cached("neighbor_map", lambda: build_neighbor_map(x.coords, x.spatial_shape))
