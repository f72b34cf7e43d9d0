"""Decimation to a face budget (spec §4.5 role; QEM edge collapse from fast-simplification).

Game teams set a triangle budget per prop, so the budget is a hard upper bound: we simplify, clean
(clean-up can add hole fans), and simplify again with the overshoot removed until it holds.
QEM quadrics ignore winding, so orientation is re-established by the clean-up afterwards.
"""
from __future__ import annotations

import numpy as np

from .cleanup import clean_mesh


def _simplify(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    import fast_simplification

    # agg 3 instead of the library's 7: the collapse threshold grows more slowly, so thin extremities
    # survive (agg 7 trimmed Fox's feet by 6 voxels at R = 512 and pushed vertices 8 voxels outside the
    # bounds; on the export benchmark max deviation 1.77 -> 0.74 voxels) at about the same speed
    v, f = fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int32),
                                        target_count=int(target), agg=3.0)
    return np.asarray(v, np.float32), np.asarray(f, np.int32)


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int, extent: float | None = None,
             max_rounds: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Clean mesh with at most ``max_faces`` faces, outward-oriented (no-op if already under budget)."""
    if max_faces < 4:
        raise ValueError(f"face budget must be at least 4, got {max_faces}")
    v = np.asarray(vertices, np.float32)
    f = np.asarray(faces, np.int32)
    if len(f) <= max_faces:
        return v, f
    target = max_faces
    for _ in range(max_rounds):
        dv, df = _simplify(v, f, target)
        dv, df = clean_mesh(dv, df, extent=extent)
        if len(df) <= max_faces:
            return dv, df
        target = max(4, target - (len(df) - max_faces) - max(1, max_faces // 100))
        v, f = dv, df
    return keep_largest_components(dv, df, max_faces)


def keep_largest_components(vertices: np.ndarray, faces: np.ndarray, max_faces: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Last resort when many tiny closed pieces cannot collapse further: drop the smallest pieces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .cleanup import face_normals, remove_unreferenced_vertices

    nv = len(vertices)
    g = coo_matrix((np.ones(2 * len(faces)), (faces[:, [0, 1]].reshape(-1), faces[:, [1, 2]].reshape(-1))),
                   shape=(nv, nv))
    _, lab = connected_components(g, directed=False)
    comp = lab[faces[:, 0]]
    area = np.bincount(comp, np.linalg.norm(face_normals(vertices, faces, unit=False), axis=1))
    n_faces = np.bincount(comp, minlength=len(area))
    order = np.argsort(-area)
    fits = order[np.cumsum(n_faces[order]) <= max_faces]
    if len(fits) == 0:
        raise RuntimeError(f"could not decimate below {max_faces} faces: the largest piece alone has "
                           f"{n_faces[order[0]]} faces")
    keep = np.isin(comp, fits)
    v, f, _ = remove_unreferenced_vertices(vertices, faces[keep])
    return v, f
