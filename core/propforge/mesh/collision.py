"""Collision meshes for engines: a convex hull within the engines' face limit, or a light triangle mesh.

Physics engines want few faces: Unity (PhysX) rejects convex colliders above 255 triangles, and Godot
builds a ConvexPolygonShape3D from the points. When the exact hull is over the limit it is replaced
by the intersection of the hull's support planes with the largest areas (plus the six axis planes):
each plane still touches the mesh, so the result is convex, encloses every vertex and stays tight
on the big flat sides where props rest and collide.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .cleanup import face_normals

MAX_CONVEX_FACES = 255
AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)


def _hull(points: np.ndarray):
    from scipy.spatial import ConvexHull, QhullError

    try:
        return ConvexHull(points)
    except QhullError:                   # flat or degenerate: joggle so a thin hull still comes out
        try:
            return ConvexHull(points, qhull_options="QJ")
        except QhullError as e:
            raise InputError(f"cannot build a convex collision hull: the mesh has no volume ({e})") from None


def _thicken(points: np.ndarray, rel: float = 1e-3) -> np.ndarray:
    """Points of a flat or line-like mesh (a sheet, a rod) given ``rel`` x its size of depth.

    A convex collider needs volume (PhysX refuses flat hulls) and qhull needs it to run at all.
    """
    centre = points.mean(0)
    _, _, axes = np.linalg.svd(points - centre, full_matrices=False)
    extent = np.ptp((points - centre) @ axes.T, 0)
    depth = rel * float(extent.max())
    out = points
    for axis, e in zip(axes, extent):
        if e < depth:
            pad = (depth - e) / 2
            out = np.concatenate([out + axis * pad, out - axis * pad])
    return out


def _outward_faces(points: np.ndarray, hull) -> tuple[np.ndarray, np.ndarray]:
    """Hull vertices and triangles wound counter-clockwise seen from outside (qhull does not promise it)."""
    used = np.unique(hull.simplices)
    remap = np.full(len(points), -1, np.int64)
    remap[used] = np.arange(len(used))
    v = points[used]
    f = remap[hull.simplices]
    n = face_normals(v, f, unit=False)
    flip = (n * hull.equations[:, :3]).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return v, f.astype(np.int32)


def _plane_directions(hull, count: int) -> np.ndarray:
    """Up to ``count`` unit normals: the six axes, then hull planes far from those chosen, large ones first
    (farthest-point sampling on the sphere of normals, weighted by the square root of plane area)."""
    normals = hull.equations[:, :3]
    tri = hull.points[hull.simplices]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    key = np.round(normals * 1e4).astype(np.int64)                  # coplanar triangles: one plane
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    plane_area = np.bincount(inv.reshape(-1), area, minlength=len(uniq))
    plane_n = np.zeros((len(uniq), 3))
    np.add.at(plane_n, inv.reshape(-1), normals * area[:, None])
    plane_n /= np.maximum(np.linalg.norm(plane_n, axis=1, keepdims=True), 1e-30)
    weight = np.sqrt(plane_area / plane_area.max())
    chosen = list(AXES)
    nearest = (plane_n @ AXES.T).max(1)          # cosine to the closest chosen direction
    while len(chosen) < count:
        score = (1.0 - nearest) * weight         # far from every chosen plane, and large
        i = int(np.argmax(score))
        if score[i] <= 1e-6:
            break
        chosen.append(plane_n[i])
        nearest = np.maximum(nearest, plane_n @ plane_n[i])
    return np.asarray(chosen)


def _support_polytope(points: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Vertices of the intersection of the support half-spaces n·x <= max_p n·p."""
    from scipy.spatial import HalfspaceIntersection

    offsets = (points @ directions.T).max(0)
    centre = points.mean(0)
    # A·x + b <= 0 with b = -offset; pad by a hair so every vertex is inside despite rounding
    pad = 1e-6 * float(np.ptp(points, 0).max())
    halfspaces = np.concatenate([directions, -(offsets + pad)[:, None]], 1)
    return HalfspaceIntersection(halfspaces, centre).intersections


def _weld_close(points: np.ndarray, eps: float) -> np.ndarray:
    """One point per cluster of points closer than ``eps``: slivers make physics engines' cooking unstable."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(points).query_pairs(eps, output_type="ndarray")
    n = len(points)
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(g, directed=False)
    _, first = np.unique(label, return_index=True)
    return points[np.sort(first)]


def _enclosing(corners: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hull of ``corners`` scaled about its centre just enough that every point of ``points`` is inside."""
    hull = _hull(corners)
    centre = corners[hull.vertices].mean(0)
    n, off = hull.equations[:, :3], hull.equations[:, 3]
    h = -(off + n @ centre)                                        # centre-to-plane distances, > 0
    reach = ((points - centre) @ n.T).max(0)
    scale = max(1.0, float((reach / np.maximum(h, 1e-30)).max())) * (1 + 1e-6)
    v, f = _outward_faces(corners, hull)
    return (centre + (v - centre) * scale).astype(np.float32), f


def convex_hull(vertices: np.ndarray, max_faces: int = MAX_CONVEX_FACES) -> tuple[np.ndarray, np.ndarray]:
    """Convex (vertices, faces) enclosing ``vertices`` with at most ``max_faces`` triangles, outward wound.

    Corners closer than 1/1000 of the size (1/10 of the thinnest extent) are merged first (no
    slivers), then the hull is scaled about its centre by the tiny amount that merging gave away,
    so it still encloses every vertex. Flat or line-like meshes get 1/1000 of their size as depth.
    """
    if max_faces < 12:
        raise ValueError(f"a convex hull needs a budget of at least 12 faces, got {max_faces}")
    p = np.asarray(vertices, np.float64)
    if len(p) < 4 or np.ptp(p, 0).max() <= 0:
        raise InputError("cannot build a convex collision hull: the mesh has no extent")
    p = _thicken(p)
    hull = _hull(p)
    size = np.ptp(p @ np.linalg.svd(p - p.mean(0), full_matrices=False)[2].T, 0)
    eps = min(1e-3 * float(size.max()), 0.1 * float(size.min()))     # a thin plate keeps both faces
    if len(hull.simplices) <= max_faces:
        return _enclosing(_weld_close(p[hull.vertices], eps), p)
    count = max_faces // 4 + 3                      # F planes -> at most 4F - 12 triangles
    while count >= 6:
        corners = _weld_close(_support_polytope(p, _plane_directions(hull, count)), eps)
        v, f = _enclosing(corners, p)
        if len(f) <= max_faces:
            return v, f
        count -= 4
    raise InputError("cannot reduce the convex collision hull to the face budget")  # pragma: no cover


def collision_mesh(vertices: np.ndarray, faces: np.ndarray, max_faces: int, extent: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A decimated copy of the surface for concave (triangle-mesh) collision.

    Meshes of many small closed pieces may not get down to ``max_faces``; then the budget doubles
    (up to the mesh itself), since a heavier collider beats a failed job.
    """
    from .decimate import decimate

    budget = max_faces
    while budget < len(faces):
        try:
            return decimate(vertices, faces, budget, extent=extent)
        except RuntimeError:
            budget *= 2
    return np.asarray(vertices, np.float32), np.asarray(faces, np.int32)
