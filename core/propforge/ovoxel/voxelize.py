"""Textured mesh -> O-Voxel: flexible-dual-grid geometry (spec §3.3) and volumetric PBR (spec §3.4).

Everything runs over plain arrays in *grid units* (AABB-local position · R), chunked over triangles
so memory stays bounded; there is no Python loop per voxel or per triangle (only per chunk, per axis
and per mesh/material). Squared distances in grid units are R² times those in world units for every
quadric term alike, so the QEF minimiser is the same as upstream's world-unit solve.

Geometry, per spec §3.3 (face weight 1, boundary weight 0.2, regularisation 1e-2):
  1. intersection pass: every interior grid line crossing a triangle activates the 4 voxels around
     that edge (flag on the owner, whose max-corner edge it is) and gives them the triangle's plane
     quadric and the crossing point (mean / count);
  2. face pass: every *existing* voxel whose cell overlaps a triangle (13-axis separating-axis test)
     gets that triangle's plane quadric once; candidates are enumerated per projected column;
  3. boundary pass: edges used by one face (after welding coincident positions, so UV seams are not
     boundaries) add 0.2 · squared-distance-to-line quadrics to every existing voxel they traverse;
  4. regularisation towards the mean crossing point; 5. QEF solve with a rank-revealing
     (eigen-thresholded) solver, and for solutions outside the voxel the exact constrained minimum
     over its 6 faces, 12 edges and 8 corners (all 26 solved as batched 3x3 systems).
Attributes, per spec §3.4: each distinct (triangle, voxel) pair of the same 4-voxel rule samples the
material (``material.surface_attrs``) near the voxel centre; the voxel keeps the weighted mean.
Deliberate deviations, for quality: the sample point is the triangle's closest point to the voxel
centre (upstream projects onto the plane and extrapolates barycentrics beyond the triangle, which
reads texels of neighbouring atlas islands); factors and vertex colours multiply the base colour in
linear space (glTF semantics) before re-encoding to sRGB; textures are read bilinearly with the
sampler's wrap mode from a box-filtered mip pyramid at half a voxel's UV footprint
(``mipmap=False``: level 0 only). Attributes stay float in [0, 1] (no uint8 quantisation here).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..types import ATTR_CHANNELS, UNIT_AABB, Mesh, OVoxel, TexturedMesh
from .material import (_PYRAMIDS, linear_to_srgb, mip_pyramid, sample_texture, sample_texture_mip,  # noqa: F401
                       srgb_to_linear, surface_attrs)

FACE_WEIGHT = 1.0
BOUNDARY_WEIGHT = 0.2
REGULARIZATION_WEIGHT = 1e-2
MAX_RESOLUTION = 2048
_BUDGET = 1 << 20          # candidates (lattice points, columns or voxels) per chunk
_EPS = 1e-9
_SYM = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]   # packed symmetric 3x3 entries


# ---------------------------------------------------------------- small array helpers

def expand_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For per-item counts, the item index and the local index 0..count-1 of every expanded slot."""
    counts = counts.astype(np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.arange(len(owner), dtype=np.int64) - start


def _chunks(counts: np.ndarray, budget: int = _BUDGET) -> Iterator[np.ndarray]:
    """Index ranges over items such that each range expands to about ``budget`` slots (>= 1 item)."""
    nz = np.nonzero(counts > 0)[0]
    if len(nz) == 0:
        return
    cs = np.cumsum(counts[nz].astype(np.int64))
    start = 0
    while start < len(nz):
        base = cs[start - 1] if start else 0
        stop = max(int(np.searchsorted(cs, base + budget, side="right")), start + 1)
        yield nz[start:stop]
        start = stop


def _keys(c: np.ndarray, R: int) -> np.ndarray:
    c = c.astype(np.int64)
    return (c[..., 0] * R + c[..., 1]) * R + c[..., 2]


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each key in ``sorted_keys`` or -1."""
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, pos, -1)


def _scatter(acc: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    """acc[idx] += vals for [K, C] vals via one bincount per column (much faster than np.add.at)."""
    for ch in range(acc.shape[1]):
        acc[:, ch] += np.bincount(idx, weights=vals[:, ch], minlength=len(acc))


# ---------------------------------------------------------------- input soup

class _Soup:
    """All meshes as one triangle soup in grid units, with per-face mesh ids and unit plane equations."""

    def __init__(self, meshes: Sequence[TexturedMesh], aabb: np.ndarray, R: int):
        verts, faces, mesh_id, off = [], [], [], 0
        for i, m in enumerate(meshes):
            verts.append(np.asarray(m.vertices, np.float64))
            faces.append(np.asarray(m.faces, np.int64) + off)
            mesh_id.append(np.full(len(m.faces), i, np.int32))
            off += len(m.vertices)
        lo, hi = aabb[0].astype(np.float64), aabb[1].astype(np.float64)
        self.R = R
        self.P = (np.concatenate(verts) - lo) / (hi - lo) * R
        self.faces = np.concatenate(faces)
        self.mesh_id = np.concatenate(mesh_id)
        tri = self.P[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(n, axis=1)
        keep = length > 1e-12                                     # drop degenerate triangles
        self.faces, self.mesh_id = self.faces[keep], self.mesh_id[keep]
        self.normal = n[keep] / length[keep, None]                 # unit normal (grid units)
        self.d0 = -(self.normal * self.P[self.faces[:, 0]]).sum(1)  # plane: n·x + d0 = 0
        self.keep = np.nonzero(keep)[0]                            # soup face -> input face index

    def tri(self, t: np.ndarray) -> np.ndarray:
        return self.P[self.faces[t]]

    def plane_quadrics(self, t: np.ndarray) -> np.ndarray:
        """[K, 10] packed (A[6], b[3], c) of Q = p pᵀ with p = (n, d0)."""
        n, d = self.normal[t], self.d0[t]
        A = np.stack([n[:, i] * n[:, j] for i, j in _SYM], 1)
        return np.concatenate([A, n * d[:, None], (d * d)[:, None]], 1)


# ---------------------------------------------------------------- pass 1: grid-line crossings

def _crossings(soup: _Soup) -> tuple[np.ndarray, ...]:
    """All crossings of interior grid lines with triangles: (tri, axis, owner voxel [M,3], point [M,3])."""
    R, out = soup.R, []
    tri_all = soup.tri(np.arange(len(soup.faces)))
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        pb, pc = tri_all[:, :, b], tri_all[:, :, c]
        area = (pb[:, 1] - pb[:, 0]) * (pc[:, 2] - pc[:, 0]) - (pc[:, 1] - pc[:, 0]) * (pb[:, 2] - pb[:, 0])
        j0 = np.maximum(np.ceil(pb.min(1)), 1).astype(np.int64)
        k0 = np.maximum(np.ceil(pc.min(1)), 1).astype(np.int64)
        nj = np.clip(np.minimum(np.floor(pb.max(1)), R - 1).astype(np.int64) - j0 + 1, 0, None)
        nk = np.clip(np.minimum(np.floor(pc.max(1)), R - 1).astype(np.int64) - k0 + 1, 0, None)
        counts = np.where(np.abs(area) > 1e-12, nj * nk, 0)
        for ids in _chunks(counts):
            owner, loc = expand_counts(counts[ids])
            t = ids[owner]
            j = j0[t] + loc // nk[t]
            k = k0[t] + loc % nk[t]
            tri = tri_all[t]
            lam = _bary2d(tri[:, :, b], tri[:, :, c], j.astype(np.float64), k.astype(np.float64), area[t])
            inside = (lam >= -_EPS).all(1)
            x = (lam * tri[:, :, a]).sum(1)
            ka = np.floor(x).astype(np.int64)
            ok = inside & (ka >= 0) & (ka < R)
            m = ok.sum()
            owner_c = np.empty((m, 3), np.int64)
            owner_c[:, a], owner_c[:, b], owner_c[:, c] = ka[ok], j[ok] - 1, k[ok] - 1
            point = np.empty((m, 3))
            point[:, a], point[:, b], point[:, c] = x[ok], j[ok], k[ok]
            out.append((t[ok], np.full(m, a, np.int8), owner_c, point))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros((0, 3), np.int64), np.zeros((0, 3))
    return tuple(np.concatenate(parts) for parts in zip(*out))


def _bary2d(pb: np.ndarray, pc: np.ndarray, qb: np.ndarray, qc: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [K, 3] of 2-D points q in triangles (pb, pc) [K, 3] with signed area."""
    def edge(i: int, k: int) -> np.ndarray:
        return (pb[:, k] - pb[:, i]) * (qc - pc[:, i]) - (pc[:, k] - pc[:, i]) * (qb - pb[:, i])
    return np.stack([edge(1, 2), edge(2, 0), edge(0, 1)], 1) / area[:, None]


# ---------------------------------------------------------------- pass 2: triangle / cell overlaps

def _min3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(a, b), c)


def _max3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(a, b), c)


def _tri_box_overlap(tri: np.ndarray, centre: np.ndarray, h: float = 0.5) -> np.ndarray:
    """Separating-axis triangle-vs-cube test (3 box axes, triangle normal, 9 edge cross products).

    Written component-wise: numpy reductions over a length-3 axis are several times slower.
    """
    tol = 1e-9
    v = [tri[:, i] - centre for i in range(3)]
    ok = np.ones(len(centre), bool)
    for ax in range(3):
        ok &= (_min3(v[0][:, ax], v[1][:, ax], v[2][:, ax]) <= h + tol)
        ok &= (_max3(v[0][:, ax], v[1][:, ax], v[2][:, ax]) >= -h - tol)
    n = np.cross(v[1] - v[0], v[2] - v[0])
    ok &= np.abs((n * v[0]).sum(1)) <= h * np.abs(n).sum(1) + tol
    for i in range(3):
        e = v[(i + 1) % 3] - v[i]
        for a in range(3):                       # axis L = unit_a x e
            b, c = (a + 1) % 3, (a + 2) % 3      # L_b = -e_c, L_c = e_b
            p = [-e[:, c] * w[:, b] + e[:, b] * w[:, c] for w in v]
            r = h * (np.abs(e[:, c]) + np.abs(e[:, b])) + tol
            ok &= (_min3(*p) <= r) & (_max3(*p) >= -r)
    return ok


def _face_overlaps(soup: _Soup, voxel_keys: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tri, voxel index) pairs of existing voxels whose cell overlaps the triangle, chunk by chunk.

    Candidates: columns of the projected bounding box along the triangle's dominant normal axis, and
    in each column the cells the plane can reach (at most ~3 since |n_a| is the largest component).
    """
    R, F = soup.R, len(soup.faces)
    tri_all = soup.tri(np.arange(F))
    lo_c = np.floor(_min3(tri_all[:, 0], tri_all[:, 1], tri_all[:, 2]))
    hi_c = np.floor(_max3(tri_all[:, 0], tri_all[:, 1], tri_all[:, 2]))
    single = (lo_c == hi_c).all(1)             # triangle inside one cell: it overlaps that cell only
    for lo in range(0, F, _BUDGET):
        t = np.nonzero(single[lo:lo + _BUDGET])[0] + lo
        idx = _find(voxel_keys, _keys(np.clip(lo_c[t], 0, R - 1), R))
        yield t[idx >= 0], idx[idx >= 0]
    dom = np.where(single, -1, np.abs(soup.normal).argmax(1))
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        ts = np.nonzero(dom == a)[0]
        tri_a = tri_all[ts]
        b0 = np.clip(np.floor(tri_a[:, :, b].min(1)), 0, R - 1).astype(np.int64)
        c0 = np.clip(np.floor(tri_a[:, :, c].min(1)), 0, R - 1).astype(np.int64)
        nb = np.clip(np.floor(tri_a[:, :, b].max(1)), 0, R - 1).astype(np.int64) - b0 + 1
        nc = np.clip(np.floor(tri_a[:, :, c].max(1)), 0, R - 1).astype(np.int64) - c0 + 1
        counts = nb * nc
        for ids in _chunks(counts, _BUDGET // 4):
            owner, loc = expand_counts(counts[ids])
            li = ids[owner]                          # index into ts
            t = ts[li]
            cb, cc = b0[li] + loc // nc[li], c0[li] + loc % nc[li]
            n, d = soup.normal[t], soup.d0[t]
            corner_a = [-(d + n[:, b] * (cb + db) + n[:, c] * (cc + dc)) / n[:, a] for db in (0, 1) for dc in (0, 1)]
            lo = np.maximum(np.min(corner_a, 0), tri_all[t, :, a].min(1))
            hi = np.minimum(np.max(corner_a, 0), tri_all[t, :, a].max(1))
            lo_i = np.clip(np.floor(lo), 0, R - 1).astype(np.int64)
            cnt = np.where(hi >= lo, np.clip(np.floor(hi), 0, R - 1).astype(np.int64) - lo_i + 1, 0)
            own2, loc2 = expand_counts(cnt)
            vox = np.empty((len(own2), 3), np.int64)
            vox[:, a], vox[:, b], vox[:, c] = lo_i[own2] + loc2, cb[own2], cc[own2]
            t2 = t[own2]
            idx = _find(voxel_keys, _keys(vox, R))
            sel = idx >= 0
            t2, vox, idx = t2[sel], vox[sel], idx[sel]
            hit = _tri_box_overlap(tri_all[t2], vox + 0.5)
            yield t2[hit], idx[hit]


# ---------------------------------------------------------------- pass 3: boundary edges

def boundary_edges(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[E, 2] vertex pairs used by exactly one face, after welding identical positions."""
    _, weld = np.unique(positions, axis=0, return_inverse=True)
    f = weld.reshape(-1)[faces]
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    e = e[e[:, 0] != e[:, 1]]
    key = e[:, 0].astype(np.int64) * (len(positions) + 1) + e[:, 1]
    uniq, first, count = np.unique(key, return_index=True, return_counts=True)
    edges = e[first[count == 1]]
    # map welded ids back to a representative original vertex
    rep = np.empty(weld.max() + 1 if len(weld) else 0, np.int64)
    rep[weld.reshape(-1)] = np.arange(len(weld))
    return rep[edges]


def _segment_voxels(s: np.ndarray, e: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """(segment id, voxel coord) of every voxel each segment traverses (vectorised 3-D DDA)."""
    d = e - s
    ts, segs = [np.zeros(len(s)), np.ones(len(s))], [np.arange(len(s))] * 2
    for a in range(3):
        lo, hi = np.minimum(s[:, a], e[:, a]), np.maximum(s[:, a], e[:, a])
        first = np.floor(lo).astype(np.int64) + 1
        cnt = np.clip(np.ceil(hi).astype(np.int64) - first, 0, None)
        own, loc = expand_counts(cnt)
        ts.append((first[own] + loc - s[own, a]) / d[own, a])
        segs.append(own)
    t, seg = np.concatenate(ts), np.concatenate(segs)
    order = np.lexsort((t, seg))
    t, seg = t[order], seg[order]
    same = (seg[1:] == seg[:-1]) & (t[1:] - t[:-1] > 1e-12)
    mid = 0.5 * (t[1:] + t[:-1])[same]
    sid = seg[1:][same]
    vox = np.clip(np.floor(s[sid] + mid[:, None] * d[sid]), 0, R - 1).astype(np.int64)
    return sid, vox


def _boundary_quadrics(soup: _Soup, voxel_keys: np.ndarray, Q: np.ndarray, weight: float) -> None:
    """Add weight · squared-distance-to-line quadrics of boundary edges to traversed voxels."""
    edges = boundary_edges(soup.P, soup.faces)
    if len(edges) == 0:
        return
    s, e = soup.P[edges[:, 0]], soup.P[edges[:, 1]]
    length = np.linalg.norm(e - s, axis=1)
    keep = length > 1e-6 * soup.R
    s, e, length = s[keep], e[keep], length[keep]
    for lo in range(0, len(s), _BUDGET // 8):
        ss, ee = s[lo:lo + _BUDGET // 8], e[lo:lo + _BUDGET // 8]
        sid, vox = _segment_voxels(ss, ee, soup.R)
        idx = _find(voxel_keys, _keys(vox, soup.R))
        hit = idx >= 0
        pair = np.unique(sid[hit].astype(np.int64) * len(voxel_keys) + idx[hit])
        sid, idx = pair // len(voxel_keys), pair % len(voxel_keys)
        dd = (ee - ss) / length[lo:lo + _BUDGET // 8, None]
        dd, p0 = dd[sid], ss[sid]
        A = np.eye(3)[None] - dd[:, :, None] * dd[:, None, :]
        bv = -np.einsum("kij,kj->ki", A, p0)
        cv = np.einsum("ki,ki->k", p0, -bv)
        packed = np.concatenate([np.stack([A[:, i, j] for i, j in _SYM], 1), bv, cv[:, None]], 1)
        _scatter(Q, idx, weight * packed)


# ---------------------------------------------------------------- QEF solve

def _unpack(Q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A = np.empty((len(Q), 3, 3))
    for col, (i, j) in enumerate(_SYM):
        A[:, i, j] = A[:, j, i] = Q[:, col]
    return A, Q[:, 6:9], Q[:, 9]


def _qef_error(A: np.ndarray, b: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("ki,kij,kj->k", v, A, v) + 2 * (b * v).sum(1) + c


def solve_qef(Q: np.ndarray, lo: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Minimise [v,1]ᵀQ[v,1] per voxel inside the box [lo, lo+1]^3 (grid units).

    Rank-revealing: eigenvalues below 1e-9 of the largest are dropped and the solution is the one
    closest to ``origin`` (the mean crossing point) along those undetermined directions.
    """
    A, b, c = _unpack(Q)
    w, U = np.linalg.eigh(A)
    inv = np.where(w > 1e-9 * np.maximum(w[:, -1:], 1e-30), 1.0 / np.where(w > 0, w, 1.0), 0.0)
    r = -b - np.einsum("kij,kj->ki", A, origin)
    v = origin + np.einsum("kij,kj->ki", U * inv[:, None, :], np.einsum("kji,kj->ki", U, r))
    outside = ~((v >= lo - 1e-6) & (v <= lo + 1 + 1e-6)).all(1)
    if outside.any():
        v[outside] = _solve_in_box(A[outside], b[outside], c[outside], lo[outside].astype(np.float64))
    return v


def _solve3(M: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched 3x3 solve; the pseudo-inverse only when a system is singular (no regularisation)."""
    try:
        return np.linalg.solve(M, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.einsum("kij,kj->ki", np.linalg.pinv(M), rhs)


def _solve_in_box(A: np.ndarray, b: np.ndarray, c: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Best of the constrained minima on the 6 faces, 12 edges and 8 corners of each voxel box.

    Fixing axes turns A v = -b into a 3x3 system whose fixed rows are identity rows, so all 26
    restrictions are batched solves; a candidate counts only if it lies in the box.
    """
    best_v, best_e = lo + 0.5, np.full(len(A), np.inf)
    for pattern in np.ndindex(3, 3, 3):                # per axis: 0 free, 1 at lo, 2 at lo+1
        fixed = np.array(pattern) > 0
        if not fixed.any():
            continue
        M, rhs = A.copy(), -b.copy()
        for ax in np.nonzero(fixed)[0]:
            M[:, ax, :] = 0.0
            M[:, ax, ax] = 1.0
            rhs[:, ax] = lo[:, ax] + (pattern[ax] - 1)
        v = _solve3(M, rhs) if not fixed.all() else rhs
        inside = ((v >= lo - 1e-6) & (v <= lo + 1 + 1e-6)).all(1)
        err = np.where(inside, _qef_error(A, b, c, v), np.inf)
        better = err < best_e
        best_v[better], best_e[better] = v[better], err[better]
    return np.clip(best_v, lo, lo + 1)


# ---------------------------------------------------------------- attributes (§3.4)

def closest_barycentric(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Barycentrics of the point of each triangle closest to p (plane projection, else nearest edge)."""
    e0, e1, w = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    d20, d21 = (w * e0).sum(1), (w * e1).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    l1, l2 = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
    lam = np.stack([1 - l1 - l2, l1, l2], 1)
    out = lam.min(1) < 0
    if out.any():                                   # outside: closest point on the 3 edges
        t3, p3 = tri[out], p[out]
        best_d, best = np.full(len(t3), np.inf), np.zeros((len(t3), 3))
        for i, k in ((0, 1), (1, 2), (2, 0)):
            e = t3[:, k] - t3[:, i]
            s = np.clip(((p3 - t3[:, i]) * e).sum(1) / np.maximum((e * e).sum(1), 1e-30), 0, 1)
            d = np.linalg.norm(t3[:, i] + s[:, None] * e - p3, axis=1)
            bary = np.zeros((len(t3), 3))
            bary[:, i], bary[:, k] = 1 - s, s
            better = d < best_d
            best_d[better], best[better] = d[better], bary[better]
        lam[out] = best
    return lam


def _uv_footprint(mesh: TexturedMesh, face: np.ndarray, tri_grid: np.ndarray) -> np.ndarray | None:
    """Mip footprint in UV units: half the UV span of one voxel, sqrt(UV area / grid area) / 2.

    Half a voxel (mip level offset -1) measured best on the real assets: the trilinear read-back
    already blurs over one voxel, so a full-voxel prefilter over-smooths (-0.8 dB on two assets)."""
    if mesh.uvs is None:
        return None
    uv = mesh.uvs[mesh.faces[face]].astype(np.float64)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area_uv = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    area_xyz = np.linalg.norm(np.cross(tri_grid[:, 1] - tri_grid[:, 0], tri_grid[:, 2] - tri_grid[:, 0]), axis=1)
    return 0.5 * np.sqrt(area_uv / np.maximum(area_xyz, 1e-30))


def _varies(mesh: TexturedMesh) -> bool:
    """Whether the material changes over the surface (textures with UVs, or vertex colours)."""
    mat = mesh.material
    textured = mesh.uvs is not None and (mat.base_color_texture is not None or mat.metallic_roughness_texture is not None)
    return textured or mesh.vertex_colors is not None


def _attributes(soup: _Soup, meshes: Sequence[TexturedMesh], tri: np.ndarray, vox: np.ndarray,
                coords: np.ndarray, mipmap: bool = True) -> np.ndarray:
    """Weighted mean of material samples over the (triangle, voxel) pairs of the crossing rule.

    Pairs come out of the unique() sorted by triangle, hence grouped by mesh; a mesh whose material
    is uniform skips the closest-point search and texture lookups altogether.
    """
    N = len(coords)
    pair = np.unique(tri.astype(np.int64) * N + vox)
    tri, vox = pair // N, pair % N
    centre = coords[vox] + 0.5
    w = np.clip(1.0 - np.abs((soup.normal[tri] * centre).sum(1) + soup.d0[tri]) / soup.R, 1e-3, None)
    vals = np.empty((len(tri), ATTR_CHANNELS), np.float32)
    first_face = np.cumsum([0] + [len(m.faces) for m in meshes])
    bounds = np.searchsorted(soup.mesh_id[tri], np.arange(len(meshes) + 1))
    for m, mesh in enumerate(meshes):
        if not _varies(mesh):
            vals[bounds[m]:bounds[m + 1]] = surface_attrs(mesh, np.zeros(1, np.int64), np.full((1, 3), 1 / 3))
            continue
        for lo in range(bounds[m], bounds[m + 1], _BUDGET):
            sl = slice(lo, min(lo + _BUDGET, bounds[m + 1]))
            t = tri[sl]
            tri_grid, face = soup.tri(t), soup.keep[t] - first_face[m]
            fp = _uv_footprint(mesh, face, tri_grid) if mipmap else None
            vals[sl] = surface_attrs(mesh, face, closest_barycentric(tri_grid, centre[sl]), fp)
    for mesh in meshes:                                         # release this call's mip pyramids
        for tex in (mesh.material.base_color_texture, mesh.material.metallic_roughness_texture):
            _PYRAMIDS.pop(id(tex), None)
    acc = np.zeros((N, ATTR_CHANNELS))
    for lo in range(0, len(tri), 8 * _BUDGET):                # few large scatters, not one per mesh
        sl = slice(lo, lo + 8 * _BUDGET)
        _scatter(acc, vox[sl], vals[sl] * w[sl, None])
    return acc / np.maximum(np.bincount(vox, weights=w, minlength=N), 1e-12)[:, None]


# ---------------------------------------------------------------- driver

class _Laps:
    """Accumulates wall seconds per named step into a caller's dict (no-op without one)."""

    def __init__(self, out: dict[str, float] | None):
        import time

        self.out, self.clock, self.last = out, time.perf_counter, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = self.clock()
        if self.out is not None:
            self.out[name] = self.out.get(name, 0.0) + now - self.last
        self.last = now


def _check_inputs(meshes: Sequence[TexturedMesh | Mesh], resolution: int, aabb: np.ndarray) -> list[TexturedMesh]:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or not 2 <= resolution <= MAX_RESOLUTION:
        raise InputError(f"resolution must be an integer in [2, {MAX_RESOLUTION}], got {resolution!r}")
    if isinstance(meshes, (Mesh, TexturedMesh)):
        meshes = [meshes]
    ext = aabb[1] - aabb[0]
    if aabb.shape != (2, 3) or not (ext > 0).all() or not np.allclose(ext, ext[0], rtol=1e-6):
        raise InputError(f"the O-Voxel box must be a cube [min, max] with max > min, got {aabb.tolist()}")
    out = [m if isinstance(m, TexturedMesh) else TexturedMesh(m.vertices, m.faces) for m in meshes]
    if not out or sum(len(m.faces) for m in out) == 0:
        raise InputError("mesh_to_ovoxel needs at least one triangle")
    for i, m in enumerate(out):
        if len(m.faces) and (m.faces.min() < 0 or m.faces.max() >= len(m.vertices)):
            raise InputError(f"mesh {i}: face indices outside its {len(m.vertices)} vertices")
        for name, cols in (("uvs", (2,)), ("vertex_colors", (3, 4))):
            arr = getattr(m, name)
            if arr is not None and (np.ndim(arr) != 2 or len(arr) != len(m.vertices) or np.shape(arr)[1] not in cols):
                raise InputError(f"mesh {i}: {name} has shape {np.shape(arr)}, expected "
                                 f"[{len(m.vertices)}, {' or '.join(map(str, cols))}]")
        mask = np.zeros(len(m.vertices), bool)
        mask[m.faces.reshape(-1)] = True
        used = m.vertices[mask]
        if not np.isfinite(used).all():
            raise InputError(f"mesh {i}: vertices contain NaN or infinity")
        if (used < aabb[0] - 1e-6).any() or (used > aabb[1] + 1e-6).any():
            raise InputError(f"mesh {i}: vertices outside the O-Voxel box {aabb.tolist()}; "
                             "normalise first (propforge.gltf_read.normalize_to_unit_cube)")
    return out


def mesh_to_ovoxel(meshes: Sequence[TexturedMesh | Mesh] | TexturedMesh | Mesh, resolution: int, *,
                   aabb: np.ndarray = UNIT_AABB, face_weight: float = FACE_WEIGHT,
                   boundary_weight: float = BOUNDARY_WEIGHT,
                   regularization_weight: float = REGULARIZATION_WEIGHT, mipmap: bool = True,
                   timings: dict[str, float] | None = None) -> OVoxel:
    """Voxelise meshes given in the O-Voxel frame (inside ``aabb``) at grid ``resolution``.

    Returns coords in lexicographic (x, y, z) order, offsets = dual·R − coord clamped to [0, 1],
    flags, and attrs in [0, 1] with ATTR_LAYOUT. ``timings`` collects seconds per pass.
    """
    lap = _Laps(timings)
    aabb = np.asarray(aabb, np.float64)
    meshes = _check_inputs(meshes, resolution, aabb)
    R = int(resolution)
    soup = _Soup(meshes, aabb, R)
    tri, axis, owner, point = _crossings(soup)
    lap("crossings")
    if len(tri) == 0:
        raise InputError(f"the mesh crosses no interior grid line at resolution {R} (too small or flat "
                         "on grid planes); use a higher resolution")
    quad = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])        # transverse (b, c) steps of the 4 voxels
    b_ax, c_ax = (axis + 1) % 3, (axis + 2) % 3
    vox4 = np.repeat(owner[:, None, :], 4, 1)
    rows = np.arange(len(owner))[:, None]
    vox4[rows, :, b_ax[:, None]] += quad[None, :, 0]
    vox4[rows, :, c_ax[:, None]] += quad[None, :, 1]
    keys4 = _keys(vox4, R)                                      # [M, 4]
    voxel_keys, inv = np.unique(keys4.reshape(-1), return_inverse=True)
    inv = inv.reshape(-1, 4)
    N = len(voxel_keys)
    coords = np.stack([voxel_keys // (R * R), voxel_keys // R % R, voxel_keys % R], 1)

    flags = np.zeros((N, 3), bool)
    flags[inv[:, 0], axis] = True                               # slot 0 is the owner
    count = np.bincount(inv.reshape(-1), minlength=N).astype(np.float64)
    mean = np.zeros((N, 3))
    _scatter(mean, inv.reshape(-1), np.repeat(point, 4, 0))
    mean /= count[:, None]
    Q = np.zeros((N, 10))
    for lo in range(0, len(tri), _BUDGET // 4):
        sl = slice(lo, lo + _BUDGET // 4)
        _scatter(Q, inv[sl].reshape(-1), np.repeat(soup.plane_quadrics(tri[sl]), 4, 0))
    lap("voxels")
    if face_weight > 0:                                         # [Q] upstream: on/off, unweighted
        for t, idx in _face_overlaps(soup, voxel_keys):
            _scatter(Q, idx, soup.plane_quadrics(t))
        lap("face_pass")
    if boundary_weight > 0:
        _boundary_quadrics(soup, voxel_keys, Q, boundary_weight)
        lap("boundary_pass")
    rw = regularization_weight * count
    for col, (i, j) in enumerate(_SYM):
        if i == j:
            Q[:, col] += rw
    Q[:, 6:9] -= rw[:, None] * mean
    Q[:, 9] += rw * (mean * mean).sum(1)
    dual = solve_qef(Q, coords.astype(np.float64), mean)
    offsets = np.clip(dual - coords, 0.0, 1.0)
    lap("qef")
    attrs = _attributes(soup, meshes, np.repeat(tri, 4), inv.reshape(-1), coords, mipmap)
    lap("attributes")
    return OVoxel(coords.astype(np.int32), offsets.astype(np.float32), flags, attrs.astype(np.float32), R,
                  aabb=aabb.astype(np.float32))


def gltf_to_ovoxel(path: str | Path, resolution: int) -> tuple[OVoxel, np.ndarray, float]:
    """Read a glTF asset, normalise it into the unit cube (Z-up) and voxelise it.

    Returns (O-Voxel, centre, scale) so callers can map back to the asset's frame.
    """
    from ..gltf_read import load_gltf, normalize_to_unit_cube

    meshes, center, scale = normalize_to_unit_cube(load_gltf(path))
    return mesh_to_ovoxel(meshes, resolution), center, scale
