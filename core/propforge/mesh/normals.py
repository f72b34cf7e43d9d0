"""Vertex normals for export: smooth across gentle curvature, split at creases ("auto smooth").

Decimated voxel surfaces keep a narrow bevel on hard edges; fully smooth normals would shade the
big flat faces next to it as if they were curved (a crate turns into a pillow). Each face corner
averages only the neighbouring faces within ``angle`` of its own face, and output vertices are
split where corners of one vertex disagree, the way DCC tools' auto-smooth does.
"""
from __future__ import annotations

import numpy as np

from .cleanup import face_normals

DEFAULT_ANGLE = 60.0      # degrees; decimated curved surfaces bend far less per edge (QEM slivers reach ~55°)


def corner_normals(vertices: np.ndarray, faces: np.ndarray, angle: float = DEFAULT_ANGLE) -> np.ndarray:
    """Unit normal per face corner [F, 3, 3]: area-weighted mean of the vertex's faces within ``angle``."""
    f = np.asarray(faces, np.int64)
    n2 = face_normals(np.asarray(vertices, np.float64), f, unit=False)      # 2·area·n
    unit = n2 / np.maximum(np.linalg.norm(n2, axis=1, keepdims=True), 1e-300)
    corner_v = f.reshape(-1)
    order = np.argsort(corner_v, kind="stable")
    counts = np.bincount(corner_v, minlength=len(vertices))
    starts = np.concatenate([[0], np.cumsum(counts)])
    # every (corner, face around the corner's vertex) pair
    per = counts[corner_v]
    corner = np.repeat(np.arange(len(corner_v)), per)
    local = np.arange(len(corner)) - np.repeat(np.cumsum(per) - per, per)
    other = order[starts[corner_v[corner]] + local] // 3
    own = corner // 3
    near = (unit[own] * unit[other]).sum(1) >= np.cos(np.radians(angle))
    acc = np.zeros((len(corner_v), 3))
    for i in range(3):
        acc[:, i] = np.bincount(corner[near], n2[other[near], i], minlength=len(corner_v))
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    out = np.where(length > 1e-300, acc / np.maximum(length, 1e-300), [0.0, 0.0, 1.0])   # zero-area fans
    return out.reshape(-1, 3, 3)


def split_by_normals(corner_vertex: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output vertices = distinct (input vertex, normal) pairs.

    ``corner_vertex`` [F, 3] vertex ids, ``normals`` [F, 3, 3] corner normals. Returns (vertex map
    into the input vertices, faces on the new vertices, float32 normals per new vertex).
    """
    cv = corner_vertex.reshape(-1).astype(np.int64)
    q = np.round(normals.reshape(-1, 3) * 1e6).astype(np.int64)          # equal within 1e-6: one vertex
    key = np.concatenate([cv[:, None], q], 1)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    vmap = cv[first]
    n = normals.reshape(-1, 3)[first]
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    return vmap, inv.reshape(-1, 3).astype(np.int32), n.astype(np.float32)


def export_normals(vertices: np.ndarray, faces: np.ndarray, uv_faces: np.ndarray, angle: float = DEFAULT_ANGLE
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normals for the UV-split mesh: (map into UV-split vertices, faces, normals per new vertex).

    ``faces`` (on ``vertices``) and ``uv_faces`` (on the UV-split vertices) list the same triangles
    in the same order; normals are computed on the unsplit mesh so UV seams stay smooth.
    """
    return split_by_normals(np.asarray(uv_faces), corner_normals(vertices, faces, angle))
