"""O-Voxel -> triangle mesh: the flexible dual grid (spec §3.2), vectorised numpy.

One vertex per active voxel; one quad per set intersection flag whose four voxels around the edge
are all active; quads split by the decoder's weights. The winding is fixed per axis (spec trap 11),
so about half the faces point inward; `propforge.mesh.orient` fixes that downstream.
"""
from __future__ import annotations

import numpy as np

from ..types import Mesh, OVoxel

# Neighbour offsets (q0..q3) of the quad around each axis' max-corner edge (spec §3.2).
_QUAD_OFFSETS = np.array([
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0]],   # x-edge
    [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]],   # y-edge
    [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]],   # z-edge
], dtype=np.int64)


def voxel_keys(coords: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Flattened int64 keys ((x·Y)+y)·Z+z of int coords inside ``extent`` (caller masks the rest)."""
    c = coords.astype(np.int64)
    return (c[..., 0] * int(extent[1]) + c[..., 1]) * int(extent[2]) + c[..., 2]


def lookup(coords: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query coord in ``coords`` or -1 (sort + searchsorted, no Python loop)."""
    extent = np.maximum(coords.max(0), queries.reshape(-1, 3).max(0)) + 1 if len(coords) else np.ones(3, int)
    keys = voxel_keys(coords, extent)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    qk = voxel_keys(queries, extent)
    inside = (queries >= 0).all(-1)
    pos = np.clip(np.searchsorted(sorted_keys, qk), 0, max(len(sorted_keys) - 1, 0))
    found = inside & (len(sorted_keys) > 0) & (sorted_keys[pos] == qk) if len(sorted_keys) else np.zeros(qk.shape, bool)
    return np.where(found, order[pos] if len(order) else -1, -1)


def dual_grid_to_mesh(coords: np.ndarray, offsets: np.ndarray, flags: np.ndarray,
                      split_weight: np.ndarray | None, aabb: np.ndarray, grid_size: int | np.ndarray) -> Mesh:
    """Spec §3.2 ``flexible_dual_grid_to_mesh`` (inference variant), faces in upstream order."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    aabb = np.asarray(aabb, dtype=np.float32)
    grid = np.broadcast_to(np.asarray(grid_size), (3,)).astype(np.float32)
    voxel_size = (aabb[1] - aabb[0]) / grid
    vertices = aabb[0] + (coords.astype(np.float32) + np.asarray(offsets, np.float32)) * voxel_size
    flags = np.asarray(flags).astype(bool).reshape(-1, 3)
    vox, axis = np.nonzero(flags)                       # voxel-major, axis-minor order
    if len(vox) == 0:
        return Mesh(vertices, np.zeros((0, 3), np.int32))
    quad_coords = coords[vox][:, None, :] + _QUAD_OFFSETS[axis]          # [Q, 4, 3]
    in_range = (quad_coords < grid.astype(np.int64)).all(-1)
    idx = lookup(coords, np.where(in_range[..., None], quad_coords, -1))
    quads = idx[(idx >= 0).all(1)]
    if split_weight is not None:
        w = np.asarray(split_weight, np.float32).reshape(-1)[quads]
        use02 = w[:, 0] * w[:, 2] > w[:, 1] * w[:, 3]
    else:  # [Q] upstream: diagonal q0-q2 unless triangle (q0,q1,q2) is degenerate
        p = vertices[quads]
        area = np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
        use02 = area > 0
    t02 = np.stack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], 1)
    t13 = np.stack([quads[:, [0, 1, 3]], quads[:, [3, 1, 2]]], 1)
    faces = np.where(use02[:, None, None], t02, t13).reshape(-1, 3)
    return Mesh(vertices, faces)


def ovoxel_to_mesh(ov: OVoxel) -> Mesh:
    """Raw (inconsistently wound) surface of an O-Voxel."""
    return dual_grid_to_mesh(ov.coords, ov.offsets, ov.flags, ov.split_weight, ov.aabb, ov.resolution)
