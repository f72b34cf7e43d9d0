"""Sparse trilinear sampling of the O-Voxel attribute volume (spec §4.7, trap 14).

The baker maps every texel to a 3-D point and asks for the PBR attributes there. Voxels hold values
at their centres; a point blends the up to 8 surrounding active centres with trilinear weights, and
weights are renormalised over the corners that exist, so a point near the surface edge of the sparse
set is not darkened by missing (empty) neighbours. No neighbour at all gives 0.
"""
from __future__ import annotations

import numpy as np

from ..types import ATTR_CHANNELS, OVoxel
from .dual_grid import lookup

# The 8 corner offsets of a trilinear cell, x slowest.
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)
_CHUNK = 1 << 19  # points per lookup batch: bounds memory to ~8·CHUNK int64 keys at a time


def trilinear_corners(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corner voxel coords [M, 8, 3] and unnormalised weights [M, 8] for grid positions q [M, 3]."""
    base = np.floor(q - 0.5).astype(np.int64)
    corners = base[:, None, :] + _CORNERS[None]
    frac = 1.0 - np.abs(q[:, None, :] - (corners + 0.5))
    return corners, np.clip(frac, 0.0, 1.0).prod(-1)


def sample_attrs_trilinear(ov: OVoxel, points: np.ndarray) -> np.ndarray:
    """Attributes [M, 6] float32 at ``points`` [M, 3] given in the O-Voxel's aabb frame.

    q = (p - a_min) / voxel_size; corners floor(q - 0.5) + {0,1}^3; weight prod(1 - |q - centre|);
    corners outside [0, R) or inactive are dropped and the rest renormalised (sum floored at 1e-12).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(pts), ATTR_CHANNELS), dtype=np.float32)
    if len(pts) == 0 or ov.num_voxels == 0:
        return out
    a_min = ov.aabb[0].astype(np.float64)
    voxel = (ov.aabb[1] - ov.aabb[0]).astype(np.float64) / ov.resolution
    for s in range(0, len(pts), _CHUNK):
        q = (pts[s:s + _CHUNK] - a_min) / voxel
        corners, w = trilinear_corners(q)
        in_range = ((corners >= 0) & (corners < ov.resolution)).all(-1)
        idx = lookup(ov.coords, np.where(in_range[..., None], corners, -1).reshape(-1, 3)).reshape(w.shape)
        w = np.where(idx >= 0, w, 0.0)
        vals = ov.attrs[np.maximum(idx, 0)].astype(np.float64)              # [m, 8, 6]
        acc = (vals * w[..., None]).sum(1)
        out[s:s + _CHUNK] = acc / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return out


def sample_attrs_nearest(ov: OVoxel, points: np.ndarray) -> np.ndarray:
    """Spec §4.7 nearest mode: the attributes of voxel floor(q) if active, else 0."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    q = np.floor((pts - ov.aabb[0]) / ((ov.aabb[1] - ov.aabb[0]) / ov.resolution)).astype(np.int64)
    q = np.where(((q >= 0) & (q < ov.resolution)).all(-1, keepdims=True), q, -1)
    idx = lookup(ov.coords, q) if ov.num_voxels else np.full(len(q), -1)
    return np.where((idx >= 0)[:, None], ov.attrs[np.maximum(idx, 0)], 0).astype(np.float32)
