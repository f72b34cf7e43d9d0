"""Levels of detail that reuse LOD0's UV atlas, so every level shares one material and one texture set.

Each level decimates the UV-split LOD0 mesh with its UV seams locked (fast-simplification's
``preserve_border``: a seam is an open border of the split mesh): seam vertices keep their exact
position on both sides, so the welded surface never cracks, and the interior of each chart
collapses freely. Vertices that QEM moved get their UV back by projecting them onto LOD0's surface
inside their own chart (barycentric interpolation), so texels stay where LOD0 put them.
Locked seams bound how far a level can go; past that, levels come from the welded surface with
each face mapped into one chart (see ``lod_levels``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np

from ..ovoxel.voxelize import closest_barycentric
from .cleanup import nondegenerate, remove_unreferenced_vertices

CANDIDATES = 24           # nearest LOD0 faces tried per projected vertex


def lod_budgets(lod0_faces: int, levels: int, floor: int = 32) -> list[int]:
    """Face budget of LOD1..LODn: each level halves the previous one (never below ``floor``)."""
    return [max(floor, lod0_faces >> k) for k in range(1, levels + 1)]


def chart_labels(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Connected component per vertex of the UV-split mesh (a chart = a component)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces, np.int64)
    g = coo_matrix((np.ones(2 * len(f)), (f[:, [0, 1]].reshape(-1), f[:, [1, 2]].reshape(-1))),
                   shape=(num_vertices, num_vertices))
    return connected_components(g, directed=False)[1]


def _majority(group: np.ndarray, label: np.ndarray, groups: int) -> np.ndarray:
    """Most frequent ``label`` in each group (sparse counting: groups x labels may be huge)."""
    n_labels = int(label.max()) + 1
    pairs, counts = np.unique(group.astype(np.int64) * n_labels + label, return_counts=True)
    g, lab = pairs // n_labels, pairs % n_labels
    order = np.lexsort((-counts, g))                       # per group, the largest count first
    first = order[np.unique(g[order], return_index=True)[1]]
    out = np.zeros(groups, np.int64)
    out[g[first]] = lab[first]
    return out


def _vertex_charts(v: np.ndarray, f: np.ndarray, ref_centroids: np.ndarray, ref_chart: np.ndarray,
                   tree=None) -> np.ndarray:
    """Chart of each decimated vertex: majority vote of its component's faces' nearest LOD0 faces.

    ``tree``: a cKDTree over ``ref_centroids``, if the caller already has one.
    """
    from scipy.spatial import cKDTree

    comp = chart_labels(f, len(v))
    tree = tree if tree is not None else cKDTree(ref_centroids)
    _, near = tree.query(v[f].mean(1))
    return _majority(comp[f[:, 0]], ref_chart[near], int(comp.max()) + 1)[comp]


def _closest_in(points: np.ndarray, tri: np.ndarray, ref_uv_tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, UV) of the closest point on any of ``tri`` [T, 3, 3] for each point (brute force)."""
    p = np.repeat(points, len(tri), 0)
    t = np.tile(tri, (len(points), 1, 1))
    lam = closest_barycentric(t, p)
    dist = np.linalg.norm((lam[:, :, None] * t).sum(1) - p, axis=1).reshape(len(points), len(tri))
    best = dist.argmin(1)
    lam = lam.reshape(len(points), len(tri), 3)[np.arange(len(points)), best]
    return dist[np.arange(len(points)), best], (lam[:, :, None] * ref_uv_tri[best]).sum(1)


def _transfer_by_chart(points: np.ndarray, point_chart: np.ndarray, tri: np.ndarray, tri_uv: np.ndarray,
                       face_chart: np.ndarray, budget: int = 1 << 21) -> np.ndarray:
    """Brute-force closest point per chart, for points whose chart is not among their nearest faces."""
    order = np.argsort(face_chart, kind="stable")
    starts = np.searchsorted(face_chart[order], np.arange(int(face_chart.max()) + 2))
    out = np.zeros((len(points), 2), np.float32)
    for c in np.unique(point_chart):
        faces = order[starts[c]:starts[c + 1]]
        idx = np.nonzero(point_chart == c)[0]
        step = max(1, budget // max(len(faces), 1))
        for i in range(0, len(idx), step):
            out[idx[i:i + step]] = _closest_in(points[idx[i:i + step]], tri[faces], tri_uv[faces])[1]
    return out


def transfer_uvs(points: np.ndarray, point_chart: np.ndarray, ref_v: np.ndarray, ref_f: np.ndarray,
                 ref_uv: np.ndarray, ref_face_chart: np.ndarray, chunk: int = 1 << 15, tree=None) -> np.ndarray:
    """UV of each point: LOD0's UV at the closest point of LOD0's surface within the point's chart.

    Points go in chunks so a million-face level needs tens of MB, not gigabytes. ``tree``: a
    cKDTree over LOD0's face centroids (``ref_v[ref_f].mean(1)``), if the caller already has one.
    """
    from scipy.spatial import cKDTree

    tree = tree if tree is not None else cKDTree(ref_v[ref_f].mean(1))
    # LOD0's triangles and their UVs in float64 for the brute-force fallback: made once, on first need
    ref_tris = functools.cache(lambda: (ref_v[ref_f].astype(np.float64), ref_uv[ref_f].astype(np.float64)))
    out = np.zeros((len(points), 2), np.float32)
    for i in range(0, len(points), chunk):
        out[i:i + chunk] = _transfer_chunk(tree, points[i:i + chunk], point_chart[i:i + chunk], ref_v, ref_f,
                                           ref_uv, ref_face_chart, ref_tris)
    return out


def _transfer_chunk(tree, points: np.ndarray, point_chart: np.ndarray, ref_v: np.ndarray, ref_f: np.ndarray,
                    ref_uv: np.ndarray, ref_face_chart: np.ndarray,
                    ref_tris: Callable[[], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    out = np.zeros((len(points), 2), np.float32)
    todo = np.arange(len(points))
    for k in (CANDIDATES, 256):                             # widen the search for the few that need it
        if len(todo) == 0:
            break
        k = min(k, len(ref_f))
        _, cand = tree.query(points[todo], k=k)
        cand = cand.reshape(len(todo), -1)
        same = ref_face_chart[cand] == point_chart[todo][:, None]
        found = same.any(1)
        rows, cols = np.nonzero(same)
        tri = ref_v[ref_f[cand[rows, cols]]].astype(np.float64)
        p = points[todo][rows].astype(np.float64)
        lam = closest_barycentric(tri, p)
        dist = np.linalg.norm((lam[:, :, None] * tri).sum(1) - p, axis=1)
        best = np.full(len(todo), np.inf)
        np.minimum.at(best, rows, dist)
        pick = np.nonzero(dist <= best[rows])[0]
        pick = pick[np.unique(rows[pick], return_index=True)[1]]          # first minimum per point
        uv = (lam[pick, :, None] * ref_uv[ref_f[cand[rows[pick], cols[pick]]]]).sum(1)
        out[todo[rows[pick]]] = uv
        todo = todo[~found]
    if len(todo):
        out[todo] = _transfer_by_chart(points[todo].astype(np.float64), point_chart[todo], *ref_tris(),
                                       ref_face_chart)
    return out


def _seam_locked(v: np.ndarray, f: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Decimate the UV-split mesh with its open borders (the seams) locked; None if over budget."""
    import fast_simplification

    target = max_faces
    for _ in range(3):
        try:
            dv, df = fast_simplification.simplify(v, f, target_count=int(target), agg=3.0, preserve_border=True)
        except TypeError:               # fast-simplification < 0.2 has no preserve_border: use the fallback
            return None
        dv, df = np.asarray(dv, np.float32), np.asarray(df, np.int32)
        df = df[nondegenerate(dv, df)]
        if len(df) <= max_faces:
            break
        if len(df) > 1.05 * max_faces:   # far off: the locked seams stopped it, retrying will not help
            return None
        target = max(4, target - (len(df) - max_faces) - max(1, max_faces // 50))
    if len(df) > max_faces or len(df) == 0:
        return None
    dv, df, _ = remove_unreferenced_vertices(dv, df)
    return dv, df


def _split_by_chart(faces: np.ndarray, face_chart: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UV-split faces where a vertex is used by faces of several charts: (vertex map, faces, chart per vertex)."""
    key = np.stack([faces.reshape(-1), np.repeat(face_chart, 3)], 1).astype(np.int64)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    return uniq[:, 0], inv.reshape(-1, 3).astype(np.int32), uniq[:, 1]


Level = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def lod_levels(vertices: np.ndarray, faces: np.ndarray, vmap: np.ndarray, uv_faces: np.ndarray, uvs: np.ndarray,
               budgets: list[int], extent: float | None = None) -> Iterator[Level]:
    """LOD1..n in LOD0's atlas, one per budget, each with fewer faces than the one before.

    In: LOD0's geometric mesh (``vertices``, ``faces``) and its UV split (``vmap`` into vertices,
    ``uv_faces``, ``uvs``). Yields (vertices, faces, vmap, uv_faces, uvs) per level, the exporter's
    layout. Seams stay locked while that reaches the budget; after that the welded surface is
    decimated and each new face takes the chart of the LOD0 face nearest to it (faces that straddle
    a seam then stretch the chart's edge texels: a far-away level's small price). Each level is
    decimated from the one before (less work, same seams); UVs always come from LOD0. The chain
    ends at the first level that cannot be made smaller (many small closed pieces, e.g. a
    vehicle's bolts).
    """
    from scipy.spatial import cKDTree

    from .decimate import decimate

    v = np.asarray(vertices, np.float32)
    sv, sf = v[vmap], np.asarray(uv_faces, np.int32)
    uvs = np.asarray(uvs, np.float32)
    ref_face_chart = chart_labels(sf, len(sv))[sf[:, 0]]
    ref_centroids = sv[sf].mean(1)
    tree = cKDTree(ref_centroids)                                # shared by every level's chart and UV look-ups
    split: tuple[np.ndarray, np.ndarray] | None = (sv, sf)      # the locked chain's last level
    geo = (v, np.asarray(faces, np.int32))                       # the welded chain's last level
    last = len(sf)
    for budget in budgets:
        if budget >= last:
            return
        locked = _seam_locked(*split, budget) if split is not None else None
        if locked is not None:
            dv, dsf = locked
            point_chart = _vertex_charts(dv, dsf, ref_centroids, ref_face_chart, tree)
            gv, gf, smap = weld_exact(dv, dsf)
            level = (gv, gf, smap, dsf, transfer_uvs(dv, point_chart, sv, sf, uvs, ref_face_chart, tree=tree))
            split = locked
        else:
            split = None
            try:
                gv, gf = decimate(*geo, budget, extent=extent)
            except RuntimeError:            # decimate's last resort gave up: no such level
                return
            _, near = tree.query(gv[gf].mean(1))
            smap, dsf, point_chart = _split_by_chart(gf, ref_face_chart[near])
            level = (gv, gf, smap, dsf, transfer_uvs(gv[smap], point_chart, sv, sf, uvs, ref_face_chart,
                                                        tree=tree))
        if len(level[3]) == 0 or len(level[3]) >= last:
            return
        geo, last = (level[0], level[1]), len(level[3])
        yield level


def weld_exact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric mesh of a UV-split mesh: vertices at bit-identical positions become one (seams).

    Returns (welded vertices, welded faces, map from each input vertex to its welded vertex).
    """
    uniq, inv = np.unique(np.asarray(vertices, np.float32), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    return uniq, inv[faces].astype(np.int32), inv.astype(np.int64)
