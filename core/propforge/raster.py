"""UV-space rasterisation on the CPU (spec §4.7 conventions), vectorised numpy.

Texel (row r, column c) has its centre at (u, v) = ((c + 0.5)/W, (r + 0.5)/H); a texel is covered
when its centre is inside the triangle (no conservative coverage). Candidates are enumerated per
(triangle, row) span, so the work is about the number of covered texels, not of bounding boxes.
Used by the baker (face id + barycentrics per texel) and by the UV charter (overlap check).
"""
from __future__ import annotations

import numpy as np

_RASTER_CHUNK = 1 << 22   # candidate texels per pass (bounds memory to ~100 MB)


def _row_spans(p: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (triangle, texel row) the column range whose centres may be inside: (face, row, c0, count).

    Rows come from each triangle's y-range; columns from where the row crosses the triangle's
    edges, widened by a hair so the exact barycentric test decides ties.
    """
    y_lo = np.clip(np.ceil(p[:, :, 1].min(1)), 0, size).astype(np.int64)
    y_hi = np.clip(np.floor(p[:, :, 1].max(1)), -1, size - 1).astype(np.int64)
    n_rows = np.maximum(y_hi - y_lo + 1, 0)
    tri = np.repeat(np.arange(len(p)), n_rows)
    y = (y_lo[tri] + np.arange(len(tri)) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)).astype(np.float64)
    xl = np.full(len(tri), np.inf)
    xr = np.full(len(tri), -np.inf)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        xa, ya, xb, yb = p[tri, a, 0], p[tri, a, 1], p[tri, b, 0], p[tri, b, 1]
        hit = (y >= np.minimum(ya, yb) - 1e-9) & (y <= np.maximum(ya, yb) + 1e-9)
        flat = ya == yb
        t = np.clip((y - ya) / np.where(flat, 1.0, yb - ya), 0.0, 1.0)
        x = xa + t * (xb - xa)
        xl = np.where(hit, np.minimum(xl, np.where(flat, np.minimum(xa, xb), x)), xl)
        xr = np.where(hit, np.maximum(xr, np.where(flat, np.maximum(xa, xb), x)), xr)
    ok = np.isfinite(xl) & np.isfinite(xr)
    c0 = np.clip(np.ceil(np.where(ok, xl, 0) - 1e-6), 0, size).astype(np.int64)
    c1 = np.clip(np.floor(np.where(ok, xr, -1) + 1e-6), -1, size - 1).astype(np.int64)
    return tri, y.astype(np.int64), c0, np.maximum(c1 - c0 + 1, 0)


def _covered_texels(uvs: np.ndarray, faces: np.ndarray, size: int):
    """Yield chunks (face id, flat texel, l1, l2) of texel centres inside UV triangles, in face order."""
    p = uvs.astype(np.float64)[faces] * size - 0.5                       # texel-centre coordinates
    v0, v1 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    live = np.abs(den) > 1e-12
    tri, row, c0, count = _row_spans(p, size)
    count = np.where(live[tri], count, 0)
    ends = np.cumsum(count)
    start = 0
    while start < len(tri):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _RASTER_CHUNK, side="right")), start + 1)
        c = count[start:stop]
        f = tri[start:stop]
        x0, y = c0[start:stop], row[start:stop]
        dx0, dy = x0 - p[f, 0, 0], y - p[f, 0, 1]
        inv = 1.0 / np.where(live[f], den[f], 1.0)        # degenerate triangles cover nothing (count 0)
        l1s, g1 = (dx0 * v1[f, 1] - v1[f, 0] * dy) * inv, v1[f, 1] * inv      # barycentrics are linear
        l2s, g2 = (v0[f, 0] * dy - dx0 * v0[f, 1]) * inv, -v0[f, 1] * inv     # along a row: start + k·step
        k = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        l1 = np.repeat(l1s, c) + k * np.repeat(g1, c)
        l2 = np.repeat(l2s, c) + k * np.repeat(g2, c)
        inside = (l1 >= -1e-9) & (l2 >= -1e-9) & (l1 + l2 <= 1 + 1e-9)
        tex = np.repeat(y * size + x0, c) + k
        yield np.repeat(f, c)[inside], tex[inside], l1[inside], l2[inside]
        start = stop


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int, with_bary: bool = False):
    """Face id per texel (int32 [size, size], -1 = empty): texel centres inside each UV triangle.

    ``with_bary`` also returns float32 [size, size, 2] barycentrics (l1, l2) of each covered texel.
    Candidates are enumerated per row span (about the covered count, not the bounding boxes);
    where triangles overlap, the later face wins (as the reference's chunked rasteriser does).
    """
    face_img = np.full(size * size, -1, dtype=np.int32)
    bary_img = np.zeros((size * size, 2), dtype=np.float32) if with_bary else None
    for fid, tex, l1, l2 in _covered_texels(uvs, faces, size):
        face_img[tex] = fid
        if with_bary:
            bary_img[tex] = np.stack([l1, l2], 1)
    if with_bary:
        return face_img.reshape(size, size), bary_img.reshape(size, size, 2)
    return face_img.reshape(size, size)


def overlapping_faces(uvs: np.ndarray, faces: np.ndarray, size: int = 512) -> tuple[np.ndarray, float]:
    """Faces whose UV triangle covers a texel centre another face also covers, and the share of
    covered texels that are covered more than once (UV charts folding over each other)."""
    tex, fid = [], []
    for f, t, _, _ in _covered_texels(uvs, faces, size):
        tex.append(t)
        fid.append(f)
    if not tex:
        return np.zeros(0, np.int64), 0.0
    tex, fid = np.concatenate(tex), np.concatenate(fid)
    order = np.argsort(tex, kind="stable")
    tex, fid = tex[order], fid[order]
    dup = np.flatnonzero(tex[1:] == tex[:-1])
    covered = len(tex) - len(dup)
    return np.unique(fid[dup + 1]), float(len(np.unique(tex[dup]))) / max(covered, 1)


def texel_barycentrics(uvs: np.ndarray, faces: np.ndarray, texels: np.ndarray, fid: np.ndarray,
                       size: int) -> np.ndarray:
    """Barycentrics [K, 3] of texel centres (flat indices) in their UV triangles."""
    p = uvs.astype(np.float64)[faces[fid]] * size - 0.5
    x, y = texels % size, texels // size
    v0, v1 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    dx, dy = x - p[:, 0, 0], y - p[:, 0, 1]
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) > 1e-12, den, np.inf)    # a degenerate UV triangle: its first corner
    l1 = (dx * v1[:, 1] - v1[:, 0] * dy) / den
    l2 = (v0[:, 0] * dy - dx * v0[:, 1]) / den
    return np.stack([1.0 - l1 - l2, l1, l2], 1)
