"""Bake the O-Voxel's PBR volume into UV textures (spec §4.7-4.8, CPU, vectorised numpy).

Each texel centre covered by a UV triangle gets the 3-D point it maps to on the decimated mesh; that
point is moved onto the dense reference surface (the pre-decimation mesh), the attribute volume is
sampled there trilinearly, values are quantised by truncation, and empty texels take the nearest
covered texel's value so bilinear/mip sampling across chart seams never reads black.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.spatial import cKDTree

from .raster import rasterize_uv
from .types import ATTR_LAYOUT, OVoxel


@dataclass
class BakedTextures:
    base_color: np.ndarray          # uint8 [H, W, 4] RGBA, row 0 <-> v ≈ 0
    metallic_roughness: np.ndarray  # uint8 [H, W, 3] R = 0, G = roughness, B = metallic
    coverage: np.ndarray            # bool [H, W] texels inside some UV triangle


def project_to_surface(points: np.ndarray, ref_vertices: np.ndarray, ref_normals: np.ndarray,
                       tree: cKDTree | None = None) -> np.ndarray:
    """Move points onto the reference surface: tangent plane of a nearest reference vertex.

    The reference is dense (one vertex per voxel), so the plane through a nearest vertex is the
    closest-point answer up to curvature terms, at the cost of one k-d tree query per texel; the
    query is approximate (eps = 1: within twice the true nearest distance), ~1.5x cheaper, and any
    vertex that close has the same tangent plane to first order.
    """
    tree = tree if tree is not None else cKDTree(ref_vertices)
    _, idx = tree.query(points, k=1, eps=1.0, workers=-1)
    n = ref_normals[idx].astype(np.float64)
    d = ((points - ref_vertices[idx]) * n).sum(1, keepdims=True)
    return points - d * n


def fill_empty_texels(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give every texel outside ``mask`` the value of the nearest covered texel (exact EDT).

    Dilation to infinity: seams and gutters continue each chart's own border colour, so bilinear
    and mip-mapped sampling never blends in black; one distance transform, one gather.
    """
    from scipy.ndimage import distance_transform_edt

    if mask.all() or not mask.any():
        return img
    idx = distance_transform_edt(~mask, return_distances=False, return_indices=True)
    return img[idx[0], idx[1]]


class BlockIndex:
    """Voxel coord -> O-Voxel row in O(1): a coarse table of 8³ blocks pointing at dense slabs.

    Texel sampling asks for 8 corners per texel (millions of look-ups); a sort-based search per
    query dominated the bake, this is two gathers. Coords are stored shifted by +1 inside a padded
    table so the neighbours of any voxel (-1 .. R) need no range checks; missing blocks point at
    an all-empty slab. Memory ~ 2 KiB per occupied block.
    """

    def __init__(self, coords: np.ndarray, resolution: int) -> None:
        c = coords.astype(np.int64) + 1
        self.res = resolution
        self.nb = (resolution + 2 + 7) // 8
        b = c >> 3
        bkey = (b[:, 0] * self.nb + b[:, 1]) * self.nb + b[:, 2]
        occupied, inv = np.unique(bkey, return_inverse=True)
        self.table = np.full(self.nb ** 3, len(occupied), dtype=np.int64)        # default: the empty slab
        self.table[occupied] = np.arange(len(occupied))
        self.slabs = np.full((len(occupied) + 1) * 512, -1, dtype=np.int32)
        l = c & 7
        self.slabs[inv * 512 + ((l[:, 0] << 6) | (l[:, 1] << 3) | l[:, 2])] = np.arange(len(c), dtype=np.int32)

    def axis_keys(self, c: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(block-key part, in-block part) of int coords along one axis, already clamped to [-1, R]."""
        c = c + 1
        stride = self.nb ** (2 - axis)
        return (c >> 3) * stride, (c & 7) << (3 * (2 - axis))

    def lookup_parts(self, bx, lx, by, ly, bz, lz) -> np.ndarray:
        # np.take: ~1.7x faster than fancy indexing for 1-D gathers
        return np.take(self.slabs, np.take(self.table, bx + by + bz) * 512 + (lx | ly | lz))

    def lookup(self, q: np.ndarray) -> np.ndarray:
        """Row of each int coord [..., 3] or -1 (inactive or outside the grid)."""
        q = np.asarray(q, np.int64)
        inside = ((q >= 0) & (q < self.res)).all(-1)
        qc = np.clip(q, -1, self.res)
        parts = [p for i in range(3) for p in self.axis_keys(qc[..., i], i)]
        return np.where(inside, self.lookup_parts(*parts), -1)


def _corners(q: np.ndarray, index: BlockIndex) -> tuple[np.ndarray, np.ndarray]:
    """The 8 voxel centres around each grid point ``q`` [M, 3] (voxel units, clamped to [-0.5, R + 0.5]).

    Returns (rows [M, 8] int32: O-Voxel row or -1, w [M, 8] float32: trilinear weight, not zeroed
    for missing rows); corner k is offset ((k >> 2) & 1, (k >> 1) & 1, k & 1) from the lower one.
    Both are stored corner-major (transposed views) so each corner's column is contiguous.
    """
    base = np.floor(q - 0.5)
    frac = (q - (base + 0.5)).astype(np.float32)                 # weight of the +1 corner per axis
    base = base.astype(np.int64)
    keys = [[index.axis_keys(base[:, i] + d, i) for d in (0, 1)] for i in range(3)]
    wts = [[1.0 - frac[:, i], frac[:, i]] for i in range(3)]
    rows = np.empty((8, len(q)), np.int32)
    w = np.empty((8, len(q)), np.float32)
    for k in range(8):
        dx, dy, dz = (k >> 2) & 1, (k >> 1) & 1, k & 1
        (bx, lx), (by, ly), (bz, lz) = keys[0][dx], keys[1][dy], keys[2][dz]
        rows[k] = index.lookup_parts(bx, lx, by, ly, bz, lz)
        w[k] = wts[0][dx] * wts[1][dy] * wts[2][dz]
    return rows.T, w.T


def sample_trilinear(ov: OVoxel, points: np.ndarray, index: BlockIndex | None = None,
                     chunk: int = 1 << 18) -> np.ndarray:
    """Same result as ``ovoxel.sample.sample_attrs_trilinear`` (spec §4.7), with O(1) look-ups."""
    index = index or BlockIndex(ov.coords, ov.resolution)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(pts), ov.attrs.shape[1]), dtype=np.float32)
    a_min = ov.aabb[0].astype(np.float64)
    voxel = (ov.aabb[1] - ov.aabb[0]).astype(np.float64) / ov.resolution
    attrs = np.concatenate([ov.attrs, np.zeros((1, ov.attrs.shape[1]), np.float32)])   # row -1: zeros
    r = ov.resolution

    def run(s: int) -> None:
        # corners outside [0, R) must not count: clamp far points so both corners stay in [-1, R]
        q = np.clip((pts[s:s + chunk] - a_min) / voxel, -0.5, r + 0.5)
        rows, weights = _corners(q, index)
        acc = np.zeros((len(q), attrs.shape[1]), dtype=np.float32)
        wsum = np.zeros(len(q), dtype=np.float32)
        for k in range(8):
            w = weights[:, k] * (rows[:, k] >= 0)
            acc += w[:, None] * np.take(attrs, rows[:, k], axis=0)  # rows = -1 reads the zero row
            wsum += w
        out[s:s + chunk] = acc / np.maximum(wsum, 1e-12)[:, None]

    parallel_chunks(run, range(0, len(pts), chunk))
    return out


def parallel_chunks(fn: Callable[[int], None], starts: range) -> None:
    """Run independent chunks on all cores: numpy releases the GIL inside these array operations."""
    workers = min(os.cpu_count() or 1, len(starts), 8)
    if workers <= 1:
        for s in starts:
            fn(s)
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, starts):
            pass


def quantize(values: np.ndarray) -> np.ndarray:
    """Spec §4.8: truncate(clip(value·255, 0, 255)); NaN (a broken decoder output) becomes 0."""
    return np.clip(np.nan_to_num(values * 255.0, nan=0.0), 0.0, 255.0).astype(np.uint8)


@dataclass
class ReferenceSurface:
    """What texel re-projection and sampling need from the dense pre-decimation surface.

    Built once per export (in the background while the decimated mesh is unwrapped). Each voxel
    row knows its reference vertex and normal (the dual grid has one vertex per voxel), so a texel
    finds a nearby surface point through the same O(1) voxel look-ups the sampler uses; the k-d tree
    over the reference vertices is only built for texels with no surface voxel around them.
    """

    vertices: np.ndarray
    normals: np.ndarray
    index: BlockIndex
    voxel_vertex: np.ndarray        # float64 [N + 1, 3]; last row for "no voxel"
    voxel_normal: np.ndarray        # float64 [N + 1, 3]; zero where the voxel has no reference vertex
    _tree: cKDTree | None = None

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.vertices)
        return self._tree


def prepare_reference(ov: OVoxel, vertices: np.ndarray, faces: np.ndarray,
                      voxel_of_vertex: np.ndarray | None = None) -> ReferenceSurface:
    """``voxel_of_vertex``: O-Voxel row of each reference vertex (-1 for added ones), if known."""
    from .mesh.cleanup import vertex_normals

    normals = vertex_normals(vertices, faces)
    n = ov.num_voxels
    vv = np.zeros((n + 1, 3))
    vn = np.zeros((n + 1, 3))
    if voxel_of_vertex is not None:
        ok = (voxel_of_vertex >= 0) & (voxel_of_vertex < n)
        vv[voxel_of_vertex[ok]] = vertices[ok]
        vn[voxel_of_vertex[ok]] = normals[ok]
    return ReferenceSurface(vertices, normals, BlockIndex(ov.coords, ov.resolution), vv, vn)


def project_via_voxels(ov: OVoxel, points: np.ndarray, ref: ReferenceSurface,
                       chunk: int = 1 << 18) -> np.ndarray:
    """Tangent-plane projection through a nearby surface voxel's reference vertex and normal.

    The containing voxel when it is on the surface (one look-up, most texels), else the nearest of
    the 8 around the point, else of a 5³ block, else the nearest reference vertex.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = pts.copy()
    missing = np.zeros(len(pts), dtype=bool)
    a_min = ov.aabb[0].astype(np.float64)
    voxel = (ov.aabb[1] - ov.aabb[0]).astype(np.float64) / ov.resolution
    has_normal = np.concatenate([(ref.voxel_normal[:-1] ** 2).sum(1) > 0, [False]])
    r, index = ov.resolution, ref.index

    def run(s: int) -> None:
        p = pts[s:s + chunk]
        q = np.clip((p - a_min) / voxel, -0.5, r + 0.5)
        cell = np.floor(q).astype(np.int64)                 # the containing voxel: the nearest centre
        best = index.lookup_parts(*[k for i in range(3) for k in index.axis_keys(cell[:, i], i)])
        far = np.flatnonzero(~has_normal[best])
        if len(far):                                         # else the nearest surface voxel of the 8
            best[far], ok = _best_corner(q[far], index, has_normal)
            missing[s + far[~ok]] = True
        n = ref.voxel_normal[best]
        d = ((p - ref.voxel_vertex[best]) * n).sum(1, keepdims=True)
        out[s:s + chunk] = p - d * n

    parallel_chunks(run, range(0, len(pts), chunk))
    if missing.any():
        idx = np.flatnonzero(missing)
        proj, found = _project_wide(ov, pts[idx], ref, has_normal)
        out[idx[found]] = proj[found]
        rest = idx[~found]
        if 0 < len(rest) <= 256:             # a handful: brute force beats building a k-d tree
            near = np.array([np.argmin(((ref.vertices - x) ** 2).sum(1)) for x in pts[rest]])
            n = ref.normals[near].astype(np.float64)
            out[rest] = pts[rest] - ((pts[rest] - ref.vertices[near]) * n).sum(1, keepdims=True) * n
        elif len(rest):
            out[rest] = project_to_surface(pts[rest], ref.vertices, ref.normals, ref.tree)
    return out


def _best_corner(q: np.ndarray, index: BlockIndex, has_normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of the surface voxel with the largest trilinear weight among the 8 around each grid point."""
    rows, w = _corners(q, index)
    w[~has_normal[rows]] = -1.0
    pick = w.argmax(1)
    at = np.arange(len(q))
    return rows[at, pick], w[at, pick] >= 0


_WIDE = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)], np.int64)


def _project_wide(ov: OVoxel, p: np.ndarray, ref: ReferenceSurface, has_normal: np.ndarray,
                  chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Points a voxel or two off the surface: nearest surface voxel centre within a 5³ block."""
    out = p.copy()
    found = np.zeros(len(p), dtype=bool)
    voxel = (ov.aabb[1] - ov.aabb[0]).astype(np.float64) / ov.resolution
    for s in range(0, len(p), chunk):
        q = (p[s:s + chunk] - ov.aabb[0]) / voxel
        cand = np.floor(q).astype(np.int64)[:, None, :] + _WIDE[None]          # [m, 125, 3]
        rows = ref.index.lookup(cand)
        d2 = ((cand + 0.5 - q[:, None, :]) ** 2).sum(-1)
        d2 = np.where(has_normal[rows], d2, np.inf)
        pick = d2.argmin(1)
        best = rows[np.arange(len(q)), pick]
        ok = np.isfinite(d2[np.arange(len(q)), pick])
        n = ref.voxel_normal[best]
        d = ((p[s:s + chunk] - ref.voxel_vertex[best]) * n).sum(1, keepdims=True)
        out[s:s + chunk] = np.where(ok[:, None], p[s:s + chunk] - d * n, p[s:s + chunk])
        found[s:s + chunk] = ok
    return out, found


def bake_textures(ov: OVoxel, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray,
                  reference: ReferenceSurface, size: int, timings: dict[str, float] | None = None
                  ) -> BakedTextures:
    """Textures for the UV-mapped mesh (``vertices``/``faces``/``uvs`` share indices).

    ``timings`` (optional) receives process-CPU seconds of the sub-steps as "cpu:bake.<step>".
    """
    clock = [time.process_time()]

    def lap(name: str) -> None:
        if timings is not None:
            now = time.process_time()
            key = "cpu:bake." + name
            timings[key] = timings.get(key, 0.0) + now - clock[0]
            clock[0] = now

    face_img, bary_img = rasterize_uv(uvs, faces, size, with_bary=True)
    face_img = face_img.reshape(-1)
    texels = np.flatnonzero(face_img >= 0)
    fid = face_img[texels]
    l12 = bary_img.reshape(-1, 2)[texels]
    tri = vertices.astype(np.float32)[faces]                          # [F, 3, 3]
    a = tri[:, 0]
    e1, e2 = tri[:, 1] - a, tri[:, 2] - a
    pos = (a[fid] + l12[:, :1] * e1[fid] + l12[:, 1:] * e2[fid]).astype(np.float64)
    lap("raster")
    pos = project_via_voxels(ov, pos, reference)
    lap("project")
    attrs = quantize(sample_trilinear(ov, pos, reference.index))
    lap("sample")
    dense = np.zeros((size * size, attrs.shape[1]), np.uint8)
    dense[texels] = attrs
    mask = (face_img >= 0).reshape(size, size)
    dense = fill_empty_texels(dense.reshape(size, size, -1), mask)
    lap("fill")
    out = _pack(dense, mask)
    lap("pack")
    return out


def _pack(dense: np.ndarray, mask: np.ndarray) -> BakedTextures:
    """uint8 attribute images -> baseColor RGBA and metallicRoughness (R = 0, G = roughness, B = metallic)."""
    def ch(name: str) -> list[int]:
        return list(range(*ATTR_LAYOUT[name]))

    base = np.ascontiguousarray(dense[..., ch("base_color") + ch("alpha")])
    mr = np.zeros(dense.shape[:2] + (3,), np.uint8)
    mr[..., 1] = dense[..., ch("roughness")[0]]
    mr[..., 2] = dense[..., ch("metallic")[0]]
    return BakedTextures(base, mr, mask)
