"""Measurement helpers for the asset round trip (tests and benchmarks): surface sampling, exact
point-to-mesh distances through a uniform cell grid, PSNR. Plain arrays in, numbers out."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from propforge.ovoxel.material import surface_attrs
from propforge.ovoxel.voxelize import expand_counts, closest_barycentric
from propforge.types import TexturedMesh


def sample_surface(meshes: Sequence[TexturedMesh], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n area-uniform points over all meshes and the source material's attributes there ([n,3], [n,6])."""
    rng = np.random.default_rng(seed)
    areas = [np.linalg.norm(np.cross(*(lambda t: (t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))(
        m.vertices[m.faces].astype(np.float64))), axis=1) / 2 for m in meshes]
    allA = np.concatenate(areas)
    mid = np.concatenate([np.full(len(a), i) for i, a in enumerate(areas)])
    fid = np.concatenate([np.arange(len(a)) for a in areas])
    pick = rng.choice(len(allA), n, p=allA / allA.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    pts, attrs = np.zeros((n, 3)), np.zeros((n, 6))
    for i in np.unique(mid[pick]):
        s = mid[pick] == i
        m, f = meshes[i], fid[pick][s]
        pts[s] = np.einsum("kv,kvj->kj", bary[s], m.vertices[m.faces[f]].astype(np.float64))
        attrs[s] = surface_attrs(m, f, bary[s])
    return pts, attrs


def closest_on_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                    cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest point of a triangle mesh to each point: (distance, face, barycentrics).

    Distance is inf (face -1) where nothing lies within ``cap``. Triangles are bucketed in cells of
    side ``cap`` by their bounding boxes grown by ``cap``, so every triangle within ``cap`` of a
    point is in that point's cell; candidates farther than the nearest centroid are pruned first.
    """
    tri = vertices[faces].astype(np.float64)
    tlo, thi, centroid = tri.min(1), tri.max(1), tri.mean(1)
    origin = np.minimum(points.min(0), vertices.min(0)) - 2 * cap
    lo = np.floor((tlo - cap - origin) / cap).astype(np.int64)
    hi = np.floor((thi + cap - origin) / cap).astype(np.int64)
    dims = np.maximum(hi.max(0), np.floor((points.max(0) - origin) / cap).astype(np.int64)) + 1
    n = hi - lo + 1
    t, loc = expand_counts(n.prod(1))
    ny_nz = n[t, 1] * n[t, 2]
    cell = np.stack([lo[t, 0] + loc // ny_nz, lo[t, 1] + loc // n[t, 2] % n[t, 1], lo[t, 2] + loc % n[t, 2]], 1)
    key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    order = np.argsort(key, kind="stable")
    key, t = key[order], t[order]
    dist, face, bary = np.full(len(points), np.inf), np.full(len(points), -1), np.zeros((len(points), 3))
    for s in range(0, len(points), 4096):
        q = points[s:s + 4096]
        c = np.floor((q - origin) / cap).astype(np.int64)
        qk = (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]
        a, b = np.searchsorted(key, qk, "left"), np.searchsorted(key, qk, "right")
        qi, j = expand_counts(b - a)
        if len(qi) == 0:
            continue
        cand = t[a[qi] + j]
        ub = np.full(len(q), np.inf)
        np.minimum.at(ub, qi, np.linalg.norm(centroid[cand] - q[qi], axis=1))
        keep = np.linalg.norm(q[qi] - np.clip(q[qi], tlo[cand], thi[cand]), axis=1) <= ub[qi]
        qi, cand = qi[keep], cand[keep]
        lam = closest_barycentric(tri[cand], q[qi])
        d = np.linalg.norm(np.einsum("kv,kvj->kj", lam, tri[cand]) - q[qi], axis=1)
        first = np.lexsort((d, qi))
        first = first[np.r_[True, qi[first][1:] != qi[first][:-1]]]
        hit = d[first] <= cap
        sel = s + qi[first][hit]
        dist[sel], face[sel], bary[sel] = d[first][hit], cand[first][hit], lam[first][hit]
    return dist, face, bary


def point_mesh_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, cap: float) -> np.ndarray:
    """Exact distance from each point to the mesh, inf beyond ``cap``."""
    return closest_on_mesh(points, vertices, faces, cap)[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of values in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def geometry_error(src: Sequence[TexturedMesh], vertices: np.ndarray, faces: np.ndarray, voxel: float,
                   n: int = 10000, cap_voxels: float = 3.0) -> dict[str, float]:
    """Chamfer (mean of both directions), Hausdorff and 99th percentile, in voxels (inf beyond the cap)."""
    p, _ = sample_surface(src, n, 1)
    out_mesh = TexturedMesh(vertices, faces)
    q, _ = sample_surface([out_mesh], n, 2)
    sv = np.concatenate([m.vertices for m in src])
    off = np.cumsum([0] + [len(m.vertices) for m in src])[:-1]
    sf = np.concatenate([m.faces + o for m, o in zip(src, off)])
    d_src = point_mesh_distance(p, vertices, faces, cap_voxels * voxel) / voxel
    d_out = point_mesh_distance(q, sv, sf, cap_voxels * voxel) / voxel
    both = np.concatenate([d_src, d_out])
    return {"chamfer": 0.5 * (np.minimum(d_src, cap_voxels).mean() + np.minimum(d_out, cap_voxels).mean()),
            "hausdorff": float(both.max()), "p99": float(np.percentile(both, 99))}


def align_to(moving: Sequence[TexturedMesh], target: Sequence[TexturedMesh], iters: int = 4) -> list[TexturedMesh]:
    """Meshes of ``moving`` under the scale + translation that best lays them on ``target`` (trimmed ICP).

    The exporter rescales to a height in metres and moves the pivot using its own decimated mesh's
    bounds, so bounding-box normalisation alone drifts when decimation trims an extreme (an ear tip).
    """
    pts, _ = sample_surface(moving, 3000, 3)
    tv = np.concatenate([m.vertices for m in target])
    off = np.cumsum([0] + [len(m.vertices) for m in target])[:-1]
    tf = np.concatenate([m.faces + o for m, o in zip(target, off)])
    scale, shift = 1.0, np.zeros(3)
    for cap in (0.05, 0.02, 0.01, 0.01)[:iters]:
        q = pts * scale + shift
        d, face, bary = closest_on_mesh(q, tv, tf, cap)
        ok = face >= 0
        if ok.sum() < 10:
            break
        c = np.einsum("kv,kvj->kj", bary[ok], tv[tf[face[ok]]].astype(np.float64))
        qq = pts[ok]
        qm, cm = qq.mean(0), c.mean(0)
        scale = float(((qq - qm) * (c - cm)).sum() / ((qq - qm) ** 2).sum())
        shift = cm - scale * qm
    return [TexturedMesh(m.vertices.astype(np.float64) * scale + shift, m.faces, uvs=m.uvs, normals=m.normals,
                         vertex_colors=m.vertex_colors, material=m.material) for m in moving]


def roundtrip(asset, resolution: int, glb: bool = False, n: int = 10000, faces: int = 20000,
              texture_size: int = 1024, validate=None) -> dict[str, float]:
    """Asset -> O-Voxel (-> GLB -> re-read): PSNR of base colour at source surface samples, geometry error.

    ``validate`` (GLB bytes -> None) is called on the exported GLB when given.
    """
    import tempfile
    import time
    from pathlib import Path

    from propforge.gltf_read import load_gltf, normalize_to_unit_cube
    from propforge.ovoxel import mesh_to_ovoxel, ovoxel_to_mesh, sample_attrs_trilinear

    src, _, _ = normalize_to_unit_cube(load_gltf(asset))
    t0 = time.perf_counter()
    ov = mesh_to_ovoxel(src, resolution)
    row = {"voxels": ov.num_voxels, "seconds": time.perf_counter() - t0}
    p, ref = sample_surface(src, n)
    row["psnr"] = psnr(sample_attrs_trilinear(ov, p)[:, :3], ref[:, :3])
    mesh = ovoxel_to_mesh(ov)
    row.update(geometry_error(src, mesh.vertices, mesh.faces, 1.0 / resolution, n))
    if glb:
        from propforge.export import export_glb
        from propforge.options import ExportOptions
        from propforge.types import Generation

        data = export_glb(Generation(ov, "roundtrip", 0), ExportOptions(faces=faces, texture_size=texture_size))
        if validate is not None:
            validate(data)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "roundtrip.glb"
            path.write_bytes(data)
            back, _, _ = normalize_to_unit_cube(load_gltf(path))
        back = align_to(back, src)
        bv = np.concatenate([m.vertices for m in back])
        off = np.cumsum([0] + [len(m.vertices) for m in back])[:-1]
        bf = np.concatenate([m.faces + o for m, o in zip(back, off)])
        mid = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(back)])
        dist, face, bary = closest_on_mesh(p, bv, bf, 0.02)    # decimated surface: 2 % of the box
        found = face >= 0
        got = np.zeros((len(p), 6))
        for i, m in enumerate(back):
            sel = found & (mid[np.maximum(face, 0)] == i)
            got[sel] = surface_attrs(m, face[sel] - int(np.searchsorted(mid, i)), bary[sel])
        row["glb_psnr"] = psnr(got[found, :3], ref[found, :3])
        row["glb_found"] = float(found.mean())
        row["glb_faces"] = int(len(bf))
    return row
