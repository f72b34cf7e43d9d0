"""Mesh clean-up for export (spec §4.4, adapted): engines cull back faces, so orientation matters.

The raw dual-grid decode winds every quad by axis, not by surface side, so about half its faces
point inward. Here: weld duplicate vertices, drop degenerate and duplicate faces, make the winding
consistent across manifold edges (union-find with parity, done as connected components of a
"face x orientation" graph), drop tiny components, fill small holes with fans that follow the
neighbouring winding, and finally turn each component OUTWARD. All vectorised; one edge sort per pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: spec §4.4 thresholds on the unit box (scaled by the mesh extent here)
HOLE_PERIMETER = 0.03
MIN_COMPONENT_AREA = 1e-5


@dataclass
class EdgeTopology:
    """Undirected edges of a triangle mesh, built from one sort of the 3F half-edges.

    Half-edge h = 3·f + k goes from faces[f, k] to faces[f, (k+1) % 3].
    """

    edge_of: np.ndarray      # int64 [3F] undirected edge id of each half-edge
    count: np.ndarray        # int64 [E] faces using each edge
    order: np.ndarray        # int64 [3F] half-edges sorted by edge id
    starts: np.ndarray       # int64 [E] first position of each edge in ``order``


def edge_topology(faces: np.ndarray) -> EdgeTopology:
    a = faces.astype(np.int64)
    src = a.reshape(-1)
    dst = a[:, [1, 2, 0]].reshape(-1)
    n = int(a.max()) + 1 if a.size else 1
    key = np.minimum(src, dst) * n + np.maximum(src, dst)
    order = np.argsort(key)
    sk = key[order]
    new = np.empty(len(sk), dtype=bool)
    new[:1] = True
    new[1:] = sk[1:] != sk[:-1]
    ids_sorted = np.cumsum(new) - 1
    edge_of = np.empty_like(ids_sorted)
    edge_of[order] = ids_sorted
    starts = np.flatnonzero(new)
    count = np.diff(np.append(starts, len(sk)))
    return EdgeTopology(edge_of, count, order, starts)


def flip_faces(faces: np.ndarray, topo: EdgeTopology, flip: np.ndarray) -> tuple[np.ndarray, EdgeTopology]:
    """Reverse the flagged faces and renumber the half-edges so ``topo`` stays valid (no re-sort).

    Reversing (a, b, c) -> (c, b, a) moves half-edge k of a face to slot (1 - k) mod 3.
    """
    if not flip.any():
        return faces, topo
    h = np.arange(3 * len(faces))
    k = h % 3
    new_h = np.where(flip[h // 3], h - k + (1 - k) % 3, h)
    edge_of = np.empty_like(topo.edge_of)
    edge_of[new_h] = topo.edge_of
    flipped = np.where(flip[:, None], faces[:, ::-1], faces)
    return flipped, EdgeTopology(edge_of, topo.count, new_h[topo.order], topo.starts)


def face_normals(vertices: np.ndarray, faces: np.ndarray, unit: bool = True) -> np.ndarray:
    """Face normals in the vertices' precision; unnormalised ones have length 2·area."""
    v = vertices
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    b -= a
    c -= a
    n = np.cross(b, c)
    if unit:
        n /= np.maximum(np.sqrt((n * n).sum(1, keepdims=True)), np.finfo(n.dtype).tiny)
    return n


def merge_duplicate_vertices(vertices: np.ndarray, faces: np.ndarray,
                             rel_tol: float = 2.0 ** -21) -> tuple[np.ndarray, np.ndarray]:
    """Weld vertices that coincide up to ``rel_tol`` of the mesh extent (first occurrence wins)."""
    v, f, _ = _weld(vertices, faces, rel_tol)
    return v, f


def _weld(vertices: np.ndarray, faces: np.ndarray, rel_tol: float = 2.0 ** -21
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """merge_duplicate_vertices plus the kept input index of each output vertex."""
    if len(vertices) == 0:
        return vertices, faces, np.arange(0)
    lo = vertices.min(0)
    step = max(float((vertices.max(0) - lo).max()) * rel_tol, 1e-30)
    q = np.floor((vertices - lo) / step).astype(np.int64)
    key = (q[:, 0] * (int(q[:, 1].max()) + 1) + q[:, 1]) * (int(q[:, 2].max()) + 1) + q[:, 2]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if len(first) == len(vertices):
        return vertices, faces, np.arange(len(vertices))
    keep = np.sort(first)
    remap = np.empty(len(first), dtype=np.int64)
    remap[np.argsort(first)] = np.arange(len(first))  # unique id -> position in `keep`
    return vertices[keep], remap[inverse][faces].astype(faces.dtype), keep


def nondegenerate(vertices: np.ndarray, faces: np.ndarray, n2: np.ndarray | None = None) -> np.ndarray:
    """Mask of faces without a repeated index and with area above spec §4.4's threshold.

    ``n2`` (unnormalised normals, length 2·area) can be passed to avoid recomputing them.
    """
    f = faces
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    n2 = face_normals(vertices, f, unit=False) if n2 is None else n2
    # spec: area < min(1e-12·longest_edge², 1e-24); the min makes it "area ≈ 0" for any real mesh
    area2 = np.einsum("ij,ij->i", n2, n2, dtype=np.float64)     # (2·area)²
    return ok & (area2 > 4e-48)


def remove_degenerate_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Drop faces with a repeated index or (near) zero area (spec §4.4 threshold)."""
    return faces[nondegenerate(vertices, faces)]


def unique_faces(faces: np.ndarray) -> np.ndarray:
    """Mask keeping the first of faces with the same vertex set (any order)."""
    keep = np.zeros(len(faces), dtype=bool)
    if len(faces) == 0:
        return keep
    s = np.sort(faces.astype(np.int64), axis=1)
    n = int(s.max()) + 1
    if n < 2_000_000:
        _, first = np.unique((s[:, 0] * n + s[:, 1]) * n + s[:, 2], return_index=True)
    else:
        _, first = np.unique(s, axis=0, return_index=True)
    keep[first] = True
    return keep


def remove_duplicate_faces(faces: np.ndarray) -> np.ndarray:
    """Faces with the same vertex set (any order) collapse to the first one."""
    return faces[unique_faces(faces)]


def remove_unreferenced_vertices(vertices: np.ndarray, faces: np.ndarray
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compact vertices; returns (vertices, faces, kept old indices)."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    kept = np.flatnonzero(used)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return vertices[kept], remap[faces].astype(np.int32), kept


def orientation_components(faces: np.ndarray, topo: EdgeTopology) -> tuple[np.ndarray, np.ndarray]:
    """(flip [F] bool, component [F] int) making winding consistent across manifold edges.

    Node f = face as stored, node f + F = face flipped. A manifold edge whose two half-edges run in
    opposite directions links (f, g) and (f', g'); same direction links (f, g') and (f', g). A face
    flips if its flipped node has the smaller label, so each component keeps one representative side.
    """
    nf = len(faces)
    manifold = np.flatnonzero(topo.count == 2)
    h0 = topo.order[topo.starts[manifold]]
    h1 = topo.order[topo.starts[manifold] + 1]
    f0, f1 = h0 // 3, h1 // 3
    flat = faces.reshape(-1)
    same_dir = flat[h0] == flat[h1]          # both half-edges start at the same vertex: inconsistent
    a = np.concatenate([f0, f0 + nf])
    b = np.concatenate([np.where(same_dir, f1 + nf, f1), np.where(same_dir, f1, f1 + nf)])
    g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(2 * nf, 2 * nf)).tocsr()
    _, labels = connected_components(g, directed=False)
    lp, lm = labels[:nf], labels[nf:]
    return lm < lp, np.minimum(lp, lm)


def _component_sums(comp: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(comp, values[:, i], minlength=n) for i in range(values.shape[1])], 1)


def orient_outward(vertices: np.ndarray, faces: np.ndarray, comp: np.ndarray,
                   n2: np.ndarray | None = None) -> np.ndarray:
    """Flip whole components so their normals point away from their inside.

    Σ area·n·(centroid − c) is 3·volume for a closed component (divergence theorem) and still tells
    outward from inward for an open, curved one; a flat open sheet (≈ 0) is judged against the
    whole object's centre instead. ``comp``: small non-negative labels; ``n2``: 2·area·normals.
    """
    if len(faces) == 0:
        return faces
    nc = int(comp.max()) + 1
    v = vertices
    n2 = (face_normals(v, faces, unit=False) if n2 is None else n2).astype(np.float64)
    area = 0.5 * np.sqrt((n2 * n2).sum(1))
    cen = (v[faces[:, 0]].astype(np.float64) + v[faces[:, 1]] + v[faces[:, 2]]) / 3.0
    area_c = np.maximum(np.bincount(comp, area, minlength=nc), 1e-300)
    c_comp = _component_sums(comp, cen * area[:, None], nc) / area_c[:, None]
    s = np.bincount(comp, 0.5 * (n2 * (cen - c_comp[comp])).sum(1), minlength=nc)
    flat = np.abs(s) < 1e-3 * area_c * np.sqrt(area_c)
    if flat.any():
        c_all = (cen * area[:, None]).sum(0) / max(area.sum(), 1e-300)
        s_all = np.bincount(comp, 0.5 * (n2 * (cen - c_all)).sum(1), minlength=nc)
        s = np.where(flat, s_all, s)
    flip = (s < 0)[comp]
    out = faces.copy()
    out[flip] = out[flip][:, ::-1]
    return out


def subset_topology(topo: EdgeTopology, keep: np.ndarray) -> EdgeTopology:
    """Topology of ``faces[keep]`` without a new sort: edge ids stay, counts and half-edges shrink."""
    new_face = np.cumsum(keep) - 1
    h = topo.order
    kept_h = h[keep[h // 3]]
    order = 3 * new_face[kept_h // 3] + kept_h % 3
    count = np.bincount(topo.edge_of[kept_h], minlength=len(topo.count))
    starts = np.cumsum(count) - count
    edge_of = np.empty(len(order), dtype=np.int64)
    edge_of[order] = topo.edge_of[kept_h]
    return EdgeTopology(edge_of, count, order, starts)


def fill_small_holes(vertices: np.ndarray, faces: np.ndarray, topo: EdgeTopology,
                     max_perimeter: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Close simple boundary loops shorter than ``max_perimeter`` with a centre fan (spec §4.4).

    Expects consistent winding: the fan triangle on boundary half-edge a→b is (b, a, centre), so it
    agrees with its neighbour. Returns (vertices, new faces only, face index each fan touches).
    """
    empty = (vertices, np.zeros((0, 3), faces.dtype), np.zeros(0, np.int64))
    bedge = np.flatnonzero(topo.count == 1)
    if len(bedge) == 0:
        return empty
    h = topo.order[topo.starts[bedge]]
    flat = faces.reshape(-1)
    src = flat[h].astype(np.int64)
    dst = faces[h // 3, (h % 3 + 1) % 3].astype(np.int64)
    nv = len(vertices)
    # vertices on a non-manifold edge or with more than one in/out boundary edge make loops ambiguous
    bad_v = np.zeros(nv, dtype=bool)
    nm = np.flatnonzero(topo.count > 2)
    if len(nm):
        hn = topo.order[topo.starts[nm]]
        bad_v[flat[hn]] = True
        bad_v[faces[hn // 3, (hn % 3 + 1) % 3]] = True
    bad_v |= np.bincount(src, minlength=nv) > 1
    bad_v |= np.bincount(dst, minlength=nv) > 1
    bad_v |= np.bincount(src, minlength=nv) != np.bincount(dst, minlength=nv)   # not a closed loop
    g = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(nv, nv))
    _, lab = connected_components(g, directed=False)
    loop = lab[src]
    _, loop = np.unique(loop, return_inverse=True)
    nl = int(loop.max()) + 1
    length = np.linalg.norm(vertices[src].astype(np.float64) - vertices[dst], axis=1)
    perim = np.bincount(loop, length, minlength=nl)
    n_edges = np.bincount(loop, minlength=nl)
    bad_loop = np.bincount(loop, (bad_v[src] | bad_v[dst]).astype(np.float64), minlength=nl) > 0
    fill = (~bad_loop) & (perim < max_perimeter) & (n_edges >= 3)
    sel = fill[loop]
    if not sel.any():
        return empty
    loop_ids, loop_sel = np.unique(loop[sel], return_inverse=True)
    mid = 0.5 * (vertices[src[sel]].astype(np.float64) + vertices[dst[sel]])
    centre = _component_sums(loop_sel, mid, len(loop_ids)) / np.bincount(loop_sel)[:, None]
    c_idx = nv + loop_sel
    new_faces = np.stack([dst[sel], src[sel], c_idx], 1).astype(faces.dtype)
    return np.concatenate([vertices, centre.astype(vertices.dtype)]), new_faces, h[sel] // 3


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, hole_perimeter: float = HOLE_PERIMETER,
               min_component_area: float = MIN_COMPONENT_AREA, extent: float | None = None,
               weld: bool = True, return_source: bool = False):
    """The whole clean-up; thresholds are on the unit box and scale with ``extent`` (default: bbox).

    One edge sort serves orientation, component removal and hole filling; duplicate faces (which
    make edges non-manifold) are only searched for when the edge counts show some. ``weld=False``
    skips vertex welding for meshes known to have unique vertices (the dual grid: one per voxel).
    Returns (vertices, faces), plus with ``return_source`` the input index of each output vertex
    (-1 for hole-fan centres).
    """
    v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int32).reshape(-1, 3)
    src = np.arange(len(v))
    empty = (v[:0], f[:0], src[:0]) if return_source else (v[:0], f[:0])
    if len(f) == 0:
        return empty
    if extent is None:
        extent = float((v.max(0) - v.min(0)).max()) or 1.0
    if weld:
        v, f, src = _weld(v, f)
    n2 = face_normals(v, f, unit=False)
    keep = nondegenerate(v, f, n2)
    f, n2 = f[keep], n2[keep]
    if len(f) == 0:
        return empty
    topo = edge_topology(f)
    if topo.count.max() > 2:
        keep = unique_faces(f)
        if not keep.all():
            f, n2 = f[keep], n2[keep]
            topo = subset_topology(topo, keep)
    flip, comp = orientation_components(f, topo)
    f, topo = flip_faces(f, topo, flip)
    n2[flip] *= -1
    area = 0.5 * np.sqrt((n2.astype(np.float64) ** 2).sum(1))
    small = np.bincount(comp, area)[comp] < min_component_area * extent ** 2
    if small.any() and not small.all():
        f, n2, comp = f[~small], n2[~small], comp[~small]
        topo = subset_topology(topo, ~small)
    v, fan, touched = fill_small_holes(v, f, topo, hole_perimeter * extent)
    src = np.concatenate([src, np.full(len(v) - len(src), -1)])
    if len(fan):
        fan_n2 = face_normals(v, fan, unit=False)
        ok = nondegenerate(v, fan, fan_n2)
        f = np.concatenate([f, fan[ok]])
        n2 = np.concatenate([n2, fan_n2[ok]])
        comp = np.concatenate([comp, comp[touched[ok]]])
    f = orient_outward(v, f, comp, n2)
    v, f, kept = remove_unreferenced_vertices(v, f)
    return (v, f, src[kept]) if return_source else (v, f)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (float32); unused or cancelling vertices get +Z."""
    n2 = face_normals(vertices, faces, unit=False)
    acc = np.zeros((len(vertices), 3), np.float64)
    idx = faces.reshape(-1)
    for i in range(3):
        acc[:, i] = np.bincount(idx, np.repeat(n2[:, i], 3), minlength=len(vertices))
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    out = np.where(length > 1e-30, acc / np.maximum(length, 1e-300), [0.0, 0.0, 1.0])
    return out.astype(np.float32)

