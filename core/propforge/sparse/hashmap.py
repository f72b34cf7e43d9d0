"""GPU coordinate lookup: an open-addressing hash table in Triton (the alternative to sort+searchsorted).

Why: the neighbour map is rebuilt at every decoder level (up to millions of voxels); a hash table
does one insert per voxel and 26 probes per voxel with no global sort. Keys are the flattened
int64 voxel keys of ``neighbors.flat_keys``; capacity is a power of two ≥ 2N (load ≤ 0.5), linear
probing, insertion by compare-and-swap on the key slot. ``benchmarks/sparse_conv.py`` times both
lookups and checks that they give the same map.
"""
from __future__ import annotations

import torch

from ..errors import InputError

from .triton_utils import tl, triton

EMPTY = -1


def hash_available() -> bool:
    return triton is not None


if triton is not None:
    @triton.jit
    def _slot(key, mask):
        h = key * 0x9E3779B1
        h = h ^ (h >> 29)
        return h & mask

    @triton.jit
    def _flat(b, x, y, z, X, Y, Z):
        return ((b.to(tl.int64) * X + x) * Y + y) * Z + z

    @triton.jit
    def _insert_kernel(coords, n, table_keys, table_vals, dup, cap_mask, X, Y, Z, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = rows < n
        c = coords + rows.to(tl.int64) * 4
        key = _flat(tl.load(c, mask=ok, other=0), tl.load(c + 1, mask=ok, other=0),
                    tl.load(c + 2, mask=ok, other=0), tl.load(c + 3, mask=ok, other=0), X, Y, Z)
        h = _slot(key, cap_mask)
        active = ok
        while tl.max(active.to(tl.int32), axis=0) > 0:
            cmp = tl.where(active, -1, -3).to(tl.int64)   # -3 never matches: inactive lanes write nothing
            prev = tl.atomic_cas(table_keys + h, cmp, key)
            won = active & (prev == -1)
            clash = active & (prev == key)
            tl.store(table_vals + h, rows, mask=won)
            tl.atomic_add(dup + tl.zeros_like(rows), 1, mask=clash)
            active = active & ~(won | clash)
            h = tl.where(active, (h + 1) & cap_mask, h)

    @triton.jit
    def _query_kernel(coords, n, table_keys, table_vals, nbr, cap_mask, X, Y, Z, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = rows < n
        c = coords + rows.to(tl.int64) * 4
        b = tl.load(c, mask=ok, other=0)
        x = tl.load(c + 1, mask=ok, other=0)
        y = tl.load(c + 2, mask=ok, other=0)
        z = tl.load(c + 3, mask=ok, other=0)
        for v in range(27):
            qx = x + v // 9 - 1
            qy = y + (v // 3) % 3 - 1
            qz = z + v % 3 - 1
            inside = ok & (qx >= 0) & (qx < X) & (qy >= 0) & (qy < Y) & (qz >= 0) & (qz < Z)
            key = _flat(b, qx, qy, qz, X, Y, Z)
            h = _slot(key, cap_mask)
            found = tl.full([BLOCK], -1, tl.int32)
            active = inside
            while tl.max(active.to(tl.int32), axis=0) > 0:
                k = tl.load(table_keys + h, mask=active, other=-1)
                hit = active & (k == key)
                found = tl.where(hit, tl.load(table_vals + h, mask=hit, other=-1), found)
                active = active & (k != key) & (k != -1)
                h = tl.where(active, (h + 1) & cap_mask, h)
            tl.store(nbr + rows.to(tl.int64) * 27 + v, found, mask=ok)


def neighbor_map_hash(coords: torch.Tensor, extent: tuple[int, int, int], block: int = 128) -> torch.Tensor:
    """[N, 27] int32 neighbour map through a Triton hash table (same result as the sorted lookup)."""
    if triton is None:
        raise InputError("the hash-table lookup needs triton")
    n = coords.shape[0]
    nbr = torch.empty(n, 27, dtype=torch.int32, device=coords.device)
    if n == 0:
        return nbr
    cap = triton.next_power_of_2(2 * n)
    keys = torch.full((cap,), EMPTY, dtype=torch.int64, device=coords.device)
    vals = torch.empty(cap, dtype=torch.int32, device=coords.device)
    dup = torch.zeros(1, dtype=torch.int32, device=coords.device)
    coords = coords.contiguous()
    X, Y, Z = (int(e) for e in extent)
    grid = (triton.cdiv(n, block),)
    _insert_kernel[grid](coords, n, keys, vals, dup, cap - 1, X, Y, Z, BLOCK=block)
    if int(dup.item()):
        raise InputError("coords contain duplicate voxels; a sparse tensor needs each voxel once")
    _query_kernel[grid](coords, n, keys, vals, nbr, cap - 1, X, Y, Z, BLOCK=block)
    return nbr
