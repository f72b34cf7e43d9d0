"""UV unwrapping behind ONE function, so a fast GPU charter can replace it later (issue 2 notes).

Default ("auto"): a vectorised box charter — faces grouped by the closest of the six axis directions
(labels smoothed over edges, then split into connected charts) and projected orthographically onto
that axis' plane — with xatlas only packing the charts (it also evens out each chart's scale).
Orthographic charts cannot flip a triangle (every face has n·d > 0.35); on the export benchmark's
asset per-face texel density stays within 0.81-1.17x of the mean (5th-95th percentile; xatlas's
own charts: 0.95-1.04x) at a quarter to a half of xatlas's charting time. If a chart folds over
itself (a helix, say) the offending faces are cut loose, and if that is not enough, or the caller
asks, xatlas charts the mesh itself (slow on the CPU: over 90 s at 200k faces).
Atlas resolution follows the texture size and the gutter scales with it. xatlas runs in a pooled
child process (``xatlas_worker``): it holds the GIL throughout and its destructor can hang.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import InputError
from .cleanup import edge_topology, face_normals

_DIRS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
MIN_SCORE = 0.35          # a face may only join a direction it faces at less than ~70°
MAX_OVERLAP = 2e-3        # share of doubly covered texels left after cutting loose; above: xatlas charting


def padding_for(texture_size: int) -> int:
    """Gutter in texels: 2 px at 512 and below, growing to 8 px at 4096 (mip levels bleed further)."""
    return int(np.clip(texture_size // 512, 2, 8))


def _plane_basis(d: np.ndarray) -> np.ndarray:
    """(t, b) with t × b = d, so projected triangles keep their counter-clockwise winding."""
    t = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t = t - d * (t @ d)
    t /= np.linalg.norm(t)
    return np.stack([t, np.cross(d, t)])


_BASES = np.stack([_plane_basis(d) for d in _DIRS])                 # [6, 2, 3]


def box_charts(vertices: np.ndarray, faces: np.ndarray, smooth: int = 2, isolate: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axis-projected charts: (vertex map, faces on split vertices, chart-space UVs in world units).

    ``isolate``: face ids that become single-triangle charts (used to undo fold-overs).
    """
    score = face_normals(vertices.astype(np.float64), faces) @ _DIRS.T  # [F, 6]
    label = score.argmax(1)
    topo = edge_topology(faces)
    man = np.flatnonzero(topo.count == 2)
    f0, f1 = topo.order[topo.starts[man]] // 3, topo.order[topo.starts[man] + 1] // 3
    rows = np.arange(len(faces))
    for _ in range(smooth):                  # majority vote with the neighbours, own label weighted 1.5
        votes = np.zeros((len(faces), 6))
        np.add.at(votes, (f0, label[f1]), 1.0)
        np.add.at(votes, (f1, label[f0]), 1.0)
        votes[rows, label] += 1.5
        votes[score < MIN_SCORE] = -1.0
        label = votes.argmax(1)
    same = label[f0] == label[f1]
    if isolate is not None and len(isolate):
        cut = np.zeros(len(faces), bool)
        cut[isolate] = True
        same &= ~(cut[f0] | cut[f1])
    g = coo_matrix((np.ones(int(same.sum()), np.int8), (f0[same], f1[same])), shape=(len(faces),) * 2)
    n_charts, chart = connected_components(g, directed=False)
    key = faces.astype(np.int64) * n_charts + chart[:, None]
    uniq, inv = np.unique(key.reshape(-1), return_inverse=True)
    vmap = uniq // n_charts
    chart_label = np.zeros(n_charts, np.int64)
    chart_label[chart] = label
    vchart = uniq % n_charts
    uvs = np.einsum("vkj,vj->vk", _BASES[chart_label[vchart]], vertices[vmap].astype(np.float64))
    # xatlas finds input charts by UV adjacency: keep charts apart in UV space (the packer moves them)
    span = float(np.ptp(vertices, axis=0).max()) * 3.0 + 1.0
    side = int(np.ceil(np.sqrt(n_charts)))
    uvs += np.stack([vchart % side, vchart // side], 1) * span
    return vmap, inv.reshape(-1, 3).astype(np.int64), uvs.astype(np.float32)


def _atlas(vertices: np.ndarray, faces: np.ndarray, texture_size: int, uvs: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas, in a child process (it holds the GIL throughout and its destructor can hang: see
    ``xatlas_worker``): charts the mesh, or with ``uvs`` only packs the given charts."""
    from . import xatlas_worker

    return xatlas_worker.pack(vertices, faces, uvs, texture_size, padding_for(texture_size))


def _chart_overlaps(uvs: np.ndarray, faces: np.ndarray, texels: float = 2.5e5) -> tuple[np.ndarray, float]:
    """Fold-overs inside charts, found before packing: rasterise the laid-out charts at a density
    giving about ``texels`` covered texels (what a 512² atlas holds) and look for shared texels."""
    from ..raster import overlapping_faces

    lo = uvs.min(0)
    extent = float((uvs.max(0) - lo).max()) or 1.0
    unit = (uvs - lo) / extent
    q = unit[faces].astype(np.float64)
    area = 0.5 * np.abs((q[:, 1, 0] - q[:, 0, 0]) * (q[:, 2, 1] - q[:, 0, 1])
                        - (q[:, 2, 0] - q[:, 0, 0]) * (q[:, 1, 1] - q[:, 0, 1])).sum()
    size = int(np.clip(np.sqrt(texels / max(area, 1e-12)), 64, 1 << 20))
    return overlapping_faces(unit.astype(np.float32), faces, size)


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 1024, method: str = "auto"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chart and pack; returns (vertex map [V'] into ``vertices``, faces [F, 3] on V', uvs [V', 2]).

    Faces keep their order. UVs are in [0, 1] with v = 0 at texture row 0 (spec §4.7/§4.9); seam
    vertices are split, and the map tells which input vertex each output vertex copies.
    ``method``: "auto" (box charts, xatlas charting if they fold over), "box", or "xatlas".
    """
    v = np.asarray(vertices, np.float32)
    f = np.asarray(faces, np.int64)
    if len(f) == 0:
        raise InputError("cannot unwrap an empty mesh")
    if method not in ("auto", "box", "xatlas"):
        raise ValueError(f"unknown unwrap method {method!r}")
    if method != "xatlas":
        cmap, cf, cuv = box_charts(v, f)
        if method == "auto":                 # fold-overs: cut the overlapping faces loose once
            bad, share = _chart_overlaps(cuv, cf)
            if share > 0:
                cmap, cf, cuv = box_charts(v, f, isolate=bad)
                share = _chart_overlaps(cuv, cf)[1]
        if method == "box" or share <= MAX_OVERLAP:
            pmap, pf, puv = _atlas(v[cmap], cf, texture_size, cuv)
            return cmap[pmap], pf, puv
    return _atlas(v, f, texture_size, None)
