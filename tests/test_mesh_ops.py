"""Building blocks of the export spine: sdf_to_ovoxel, clean-up/orientation, decimation, UV, raster, sampling."""
from __future__ import annotations

import numpy as np
import pytest

from propforge.bake import BlockIndex, fill_empty_texels, sample_trilinear
from propforge.raster import rasterize_uv, texel_barycentrics
from propforge.errors import InputError
from propforge.mesh.cleanup import (clean_mesh, edge_topology, merge_duplicate_vertices, remove_degenerate_faces,
                                    remove_duplicate_faces)
from propforge.mesh.decimate import decimate
from propforge.mesh.uv import unwrap
from propforge.ovoxel.dual_grid import ovoxel_to_mesh
from propforge.ovoxel.from_sdf import sdf_to_ovoxel
from propforge.ovoxel.sample import sample_attrs_trilinear


def sphere_ov(r=40, radius=0.35, centre=(0.0, 0.0, 0.0)):
    g = np.linspace(-0.5, 0.5, r + 1, dtype=np.float32)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    sdf = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) - radius
    return sdf_to_ovoxel(sdf, lambda p: np.concatenate([p + 0.5, np.ones((len(p), 3))], 1).astype(np.float32))


def volume(v, f):
    p = v.astype(np.float64)[f]
    return np.einsum("ij,ij->i", np.cross(p[:, 0], p[:, 1]), p[:, 2]).sum() / 6.0


def consistent(f):
    topo = edge_topology(f)
    m = topo.count == 2
    h0, h1 = topo.order[topo.starts[m]], topo.order[topo.starts[m] + 1]
    return bool((f.reshape(-1)[h0] != f.reshape(-1)[h1]).all())


# --- sdf_to_ovoxel -------------------------------------------------------------------------------

def test_sdf_sphere_gives_closed_surface_on_the_sphere():
    ov = sphere_ov()
    assert ov.resolution == 40 and ov.coords.dtype == np.int32
    assert (ov.offsets >= 0).all() and (ov.offsets <= 1).all()
    m = ovoxel_to_mesh(ov)
    topo = edge_topology(m.faces)
    assert (topo.count == 2).all()                                    # closed, manifold
    r = np.linalg.norm(m.vertices, axis=1)
    assert np.abs(r - 0.35).max() < 0.5 / 40                          # within half a voxel
    np.testing.assert_allclose(ov.attrs[:, :3], (ov.aabb[0] + (ov.coords + 0.5) / 40) + 0.5, atol=1e-6)


def test_sdf_activation_rule_on_a_single_crossing():
    # one grid vertex (2,2,2) inside: its 6 edges cross; each activates 4 voxels -> the 8 around the vertex
    sdf = np.ones((5, 5, 5), np.float32)
    sdf[2, 2, 2] = -1.0
    ov = sdf_to_ovoxel(sdf, lambda p: np.zeros((len(p), 6)), aabb=np.array([[0, 0, 0], [4, 4, 4]]))
    assert sorted(map(tuple, ov.coords)) == [(x, y, z) for x in (1, 2) for y in (1, 2) for z in (1, 2)]
    # x-edges (1,2,2)-(2,2,2) and (2,2,2)-(3,2,2) are owned by voxels (1,1,1) and (2,1,1)
    flags = {tuple(c): tuple(f) for c, f in zip(ov.coords, ov.flags)}
    assert flags[(1, 1, 1)] == (True, True, True)
    assert flags[(2, 1, 1)] == (True, False, False)
    assert flags[(1, 2, 1)] == (False, True, False)
    assert flags[(1, 1, 2)] == (False, False, True)
    assert sum(map(sum, flags.values())) == 6
    # each voxel sees 3 crossings at 0.5 along the edges through (2,2,2): mean offset 2/3 or 1/3
    off = {tuple(c): o for c, o in zip(ov.coords, ov.offsets)}
    np.testing.assert_allclose(off[(1, 1, 1)], [5 / 6] * 3, atol=1e-6)
    np.testing.assert_allclose(off[(2, 2, 2)], [1 / 6] * 3, atol=1e-6)
    assert len(ovoxel_to_mesh(ov).faces) == 12                        # 6 quads -> 12 triangles


def test_sdf_bad_inputs():
    with pytest.raises(InputError, match="cube"):
        sdf_to_ovoxel(np.zeros((4, 4, 5)), lambda p: p)
    with pytest.raises(InputError, match="NaN"):
        sdf_to_ovoxel(np.full((5, 5, 5), np.nan), lambda p: p)
    sdf = np.ones((5, 5, 5), np.float32)
    sdf[2, 2, 2] = -1
    with pytest.raises(InputError, match="attrs_fn"):
        sdf_to_ovoxel(sdf, lambda p: np.zeros((len(p), 3)))


# --- clean-up ------------------------------------------------------------------------------------

def test_raw_decode_is_mixed_and_cleanup_orients_outward():
    m = ovoxel_to_mesh(sphere_ov())
    assert not consistent(m.faces)                                    # the raw decode is inconsistent
    rng = np.random.default_rng(0)
    f = m.faces.copy()
    flip = rng.random(len(f)) < 0.5
    f[flip] = f[flip][:, ::-1]
    v, f2 = clean_mesh(m.vertices, f)
    assert len(f2) == len(f) and consistent(f2)
    assert volume(v, f2) > 0
    n = np.cross(v[f2[:, 1]] - v[f2[:, 0]], v[f2[:, 2]] - v[f2[:, 0]])
    assert (np.einsum("ij,ij->i", n, v[f2].mean(1)) > 0).all()


def test_two_components_each_outward_and_inner_shell_kept_outward():
    a = ovoxel_to_mesh(sphere_ov(radius=0.15, centre=(-0.25, 0, 0)))
    b = ovoxel_to_mesh(sphere_ov(radius=0.15, centre=(0.25, 0, 0)))
    v = np.concatenate([a.vertices, b.vertices])
    f = np.concatenate([a.faces, b.faces + len(a.vertices)])
    v2, f2 = clean_mesh(v, f)
    c = v2[f2].mean(1)
    n = np.cross(v2[f2[:, 1]] - v2[f2[:, 0]], v2[f2[:, 2]] - v2[f2[:, 0]])
    centre = np.where(c[:, :1] < 0, [-0.25, 0, 0], [0.25, 0, 0])
    assert (np.einsum("ij,ij->i", n, c - centre) > 0).all()


def test_open_hemisphere_faces_away_from_its_centre():
    m = ovoxel_to_mesh(sphere_ov())
    v, f = clean_mesh(m.vertices, m.faces)
    keep = v[f].mean(1)[:, 2] > 0.05
    v2, f2 = clean_mesh(v, f[keep][:, ::-1])                           # open cap, wound inward
    n = np.cross(v2[f2[:, 1]] - v2[f2[:, 0]], v2[f2[:, 2]] - v2[f2[:, 0]])
    assert (np.einsum("ij,ij->i", n, v2[f2].mean(1)) > 0).all()


def test_small_hole_is_filled_consistently_large_one_kept():
    ov = sphere_ov(r=160, radius=0.3)
    m = ovoxel_to_mesh(ov)
    v, f = clean_mesh(m.vertices, m.faces)
    nbr = np.linalg.norm(v[f].mean(1) - [0, 0, 0.3], axis=1)
    small = f[nbr > 0.004]                                            # hole perimeter ~0.025 < 0.03
    v2, f2 = clean_mesh(v, small, extent=1.0)               # thresholds are on the unit box
    assert (edge_topology(f2).count == 2).all() and consistent(f2) and volume(v2, f2) > 0
    big = f[nbr > 0.02]                                               # perimeter ~0.13: stays open
    v3, f3 = clean_mesh(v, big, extent=1.0)
    assert (edge_topology(f3).count == 1).sum() > 0 and len(f3) == len(big)


def test_degenerate_duplicate_faces_and_vertices():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [2, 0, 0]], np.float32)
    f = np.array([[0, 1, 2], [2, 1, 0], [0, 3, 2], [0, 1, 4], [1, 1, 2]], np.int32)
    v2, f2 = merge_duplicate_vertices(v, f)
    assert len(v2) == 4 and (f2[2] == f2[0]).all()
    f3 = remove_degenerate_faces(v2, f2)                               # (0,1,4) is collinear, (1,1,2) repeated
    assert len(f3) == 3
    assert len(remove_duplicate_faces(f3)) == 1


def test_tiny_floater_is_dropped():
    big = ovoxel_to_mesh(sphere_ov(r=64, radius=0.3))
    tiny = np.array([[0.45, 0.45, 0.45], [0.451, 0.45, 0.45], [0.45, 0.451, 0.45], [0.45, 0.45, 0.451]], np.float32)
    tf = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    v = np.concatenate([big.vertices, tiny])
    f = np.concatenate([big.faces, tf + len(big.vertices)])
    v2, f2 = clean_mesh(v, f)
    assert v2.max() < 0.4 and len(f2) == len(big.faces)


# --- decimation, UV ------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [500, 2000])
def test_decimate_respects_budget_and_orientation(budget):
    m = ovoxel_to_mesh(sphere_ov(r=64))
    v, f = clean_mesh(m.vertices, m.faces)
    v2, f2 = decimate(v, f, budget)
    assert budget * 0.8 <= len(f2) <= budget
    assert consistent(f2) and (edge_topology(f2).count == 2).all()
    assert volume(v2, f2) == pytest.approx(volume(v, f), rel=0.05)


def test_unwrap_maps_and_uvs():
    m = ovoxel_to_mesh(sphere_ov(r=32))
    v, f = decimate(*clean_mesh(m.vertices, m.faces), 400)
    vmap, uf, uv = unwrap(v, f, 512)
    assert len(uf) == len(f) and uv.shape == (len(vmap), 2)
    assert (uv >= 0).all() and (uv <= 1).all()
    # the same triangles in the same order, seams only split vertices
    np.testing.assert_allclose(v[vmap][uf], v[f], atol=0)


# --- rasteriser, fill, sampling ------------------------------------------------------------------

def test_rasterize_covers_texel_centres_inside_triangles_only():
    uv = np.array([[0.1, 0.1], [0.9, 0.2], [0.3, 0.8], [0.95, 0.95]], np.float32)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    size = 64
    face_img = rasterize_uv(uv, f, size)
    ys, xs = np.mgrid[0:size, 0:size]
    centres = np.stack([(xs + 0.5) / size, (ys + 0.5) / size], -1).reshape(-1, 2)

    def inside(tri):
        a, b, c = uv[tri]
        cr = lambda p, q, r: (q[0] - p[0]) * (r[..., 1] - p[1]) - (q[1] - p[1]) * (r[..., 0] - p[0])
        s = np.stack([cr(a, b, centres), cr(b, c, centres), cr(c, a, centres)], 1)
        return (s >= -1e-9).all(1) | (s <= 1e-9).all(1)

    expect = np.where(inside(f[1]), 1, np.where(inside(f[0]), 0, -1)).reshape(size, size)
    assert (face_img == expect).mean() > 0.995                      # only ties on the shared edge may differ
    texels = np.flatnonzero(face_img.reshape(-1) >= 0)
    bary = texel_barycentrics(uv, f, texels, face_img.reshape(-1)[texels], size)
    assert bary.min() > -1e-6 and np.abs(bary.sum(1) - 1).max() < 1e-9


def test_degenerate_uv_triangles_raise_no_warning_and_cover_nothing():
    import warnings
    uv = np.array([[0.1, 0.1], [0.9, 0.2], [0.3, 0.8], [0.5, 0.5]], np.float32)
    f = np.array([[0, 1, 2], [3, 3, 3], [0, 0, 1]])                # a point and a segment in UV space
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        face_img = rasterize_uv(uv, f, 32)
        assert set(np.unique(face_img)) <= {-1, 0}
        bary = texel_barycentrics(uv, f, np.array([5, 40]), np.array([1, 2]), 32)
    assert np.isfinite(bary).all() and np.allclose(bary.sum(1), 1)


def test_fill_empty_texels_everything_filled_covered_kept():
    rng = np.random.default_rng(1)
    img = rng.random((64, 64, 3)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[10:20, 30:50] = True
    out = fill_empty_texels(np.where(mask[..., None], img, 0), mask)
    np.testing.assert_array_equal(out[mask], img[mask])
    assert np.isfinite(out).all() and out[~mask].min() >= img[mask].min() - 1e-6
    # right next to the chart, the fill continues the chart's own border colour
    np.testing.assert_array_equal(out[20, 30:50], img[19, 30:50])
    np.testing.assert_array_equal(out[10:20, 55], img[10:20, 49])


def test_block_index_sampler_matches_reference_sampler():
    ov = sphere_ov(r=48)
    rng = np.random.default_rng(2)
    m = ovoxel_to_mesh(ov)
    pts = np.concatenate([m.vertices[rng.integers(0, len(m.vertices), 5000)] + rng.normal(0, 0.01, (5000, 3)),
                          rng.uniform(-0.7, 0.7, (1000, 3))])
    ref = sample_attrs_trilinear(ov, pts)
    fast = sample_trilinear(ov, pts, BlockIndex(ov.coords, ov.resolution), chunk=777)
    np.testing.assert_allclose(fast, ref, atol=2e-6)
    assert (ref == 0).all(1).sum() > 100                              # far points: no neighbours -> 0


def test_tetrahedron_soup_still_meets_the_budget():
    rng = np.random.default_rng(3)
    base = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    tf = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    sizes = rng.uniform(0.01, 0.05, 300)
    v = np.concatenate([base * s + rng.uniform(-0.4, 0.4, 3) for s in sizes]).astype(np.float32)
    f = np.concatenate([tf + 4 * i for i in range(300)])
    v2, f2 = decimate(v, f, 200)
    assert 0 < len(f2) <= 200
    assert consistent(f2) and volume(v2, f2) > 0


def test_flat_prop_in_the_ground_plane_gets_its_largest_extent_as_height():
    from propforge.export.gltf_write import place
    v = np.array([[0, 0, 0], [2, 0, 0], [2, 0, 1], [0, 0, 1]], np.float32)    # glTF frame: flat in XZ
    p = place(v, 1.5)
    assert np.ptp(p[:, 0]) == pytest.approx(1.5) and np.ptp(p[:, 1]) == 0 and p[:, 1].min() == 0


def helicoid(turns: float = 2.0, n_t: int = 200, n_r: int = 6, pitch: float = 0.05):
    """A spiral ramp: normals all near +Z, so one axis chart would fold over itself."""
    t = np.linspace(0, 2 * np.pi * turns, n_t)
    r = np.linspace(0.1, 0.4, n_r)
    tt, rr = np.meshgrid(t, r, indexing="ij")
    v = np.stack([rr * np.cos(tt), rr * np.sin(tt), pitch * tt / (2 * np.pi)], -1).reshape(-1, 3).astype(np.float32)
    i = np.arange(n_t - 1)[:, None] * n_r + np.arange(n_r - 1)[None]
    i = i.reshape(-1)
    f = np.concatenate([np.stack([i, i + n_r, i + 1], 1), np.stack([i + 1, i + n_r, i + n_r + 1], 1)])
    return v, f


def test_unwrap_box_charts_no_flips_and_fold_overs_are_cut():
    from propforge.raster import overlapping_faces
    v, f = helicoid()
    _, bf, buv = unwrap(v, f, 512, method="box")
    assert overlapping_faces(buv, bf, 512)[1] > 0.1              # the naive chart folds over itself
    p = buv[bf]
    signed = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1])
    assert (signed > 0).all()                                    # box charts never flip or mirror a triangle
    vmap, af, auv = unwrap(v, f, 512)                            # auto: cut loose or xatlas
    assert overlapping_faces(auv, af, 512)[1] <= 2e-3
    np.testing.assert_array_equal(v[vmap][af], v[f])


@pytest.mark.parametrize("method", ["box", "xatlas"])
def test_unwrap_methods_keep_faces_and_density(method):
    m = ovoxel_to_mesh(sphere_ov(r=40))
    v, f = decimate(*clean_mesh(m.vertices, m.faces), 1500)
    vmap, uf, uv = unwrap(v, f, 1024, method=method)
    np.testing.assert_array_equal(v[vmap][uf], v[f])
    p = uv[uf].astype(np.float64)
    uv_area = 0.5 * np.abs((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
                           - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))
    q = v[f].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]), axis=1)
    assert uv_area.sum() > 0.4                                   # the atlas is well used
    density = uv_area.sum() / area.sum()
    ratio = (uv_area / np.maximum(area, 1e-12))[area > np.median(area) * 0.5] / density
    assert np.percentile(ratio, 5) > 0.3 and np.percentile(ratio, 95) < 2.0   # stretch stays bounded


def test_texel_projection_lands_on_the_reference_surface():
    from propforge.bake import prepare_reference, project_to_surface, project_via_voxels
    ov = sphere_ov(r=64, radius=0.3)
    raw = ovoxel_to_mesh(ov)
    v, f, src = clean_mesh(raw.vertices, raw.faces, weld=False, return_source=True)
    np.testing.assert_array_equal(v, raw.vertices[src])                 # source map is exact
    ref = prepare_reference(ov, v, f, src)
    rng = np.random.default_rng(4)
    d = rng.normal(size=(4000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    off = rng.uniform(-1.0, 1.0, (4000, 1)) / 64                         # up to a voxel off the surface
    pts = d * (0.3 + off)
    pts[:50] = d[:50] * 0.45                                            # 9 voxels out: k-d tree fallback
    pts[50:100] = d[50:100] * (0.3 + 2.2 / 64)                          # 2 voxels out: wider voxel search
    for proj in (project_via_voxels(ov, pts, ref), project_to_surface(pts, ref.vertices, ref.normals, ref.tree)):
        err = np.abs(np.linalg.norm(proj, axis=1) - 0.3) * 64            # in voxels
        assert np.percentile(err[50:], 99) < 0.1 and err[50:].max() < 0.25
        assert err[:50].max() < 1.5                                      # far points: brought to the surface
        cos = np.einsum("ij,ij->i", proj / np.linalg.norm(proj, axis=1, keepdims=True), d)
        assert cos[50:].min() > 0.999                                    # moved along the normal only


def test_keep_largest_components_fallback():
    from propforge.mesh.decimate import keep_largest_components
    base = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    tf = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    sizes = np.linspace(0.01, 0.1, 30)
    v = np.concatenate([base * s + [3 * i * 0.1, 0, 0] for i, s in enumerate(sizes)]).astype(np.float32)
    f = np.concatenate([tf + 4 * i for i in range(30)])
    v2, f2 = keep_largest_components(v, f, 41)
    assert len(f2) == 40 and len(v2) == 40
    assert np.ptp(v2[:, 0]) > 0.7 and v2[:, 0].min() >= 3 * 20 * 0.1 - 1e-6     # the ten largest, in order
    with pytest.raises(RuntimeError, match="largest piece"):
        keep_largest_components(v, f, 3)


def test_sdf_fast_activation_equals_the_edge_rule():
    from propforge.ovoxel.from_sdf import _active_mask, _active_mask_edges, active_coords
    rng = np.random.default_rng(5)
    sdf = rng.normal(size=(21, 21, 21)).astype(np.float32)
    sdf[[0, -1]] = 1.0
    sdf[:, [0, -1]] = 1.0
    sdf[:, :, [0, -1]] = 1.0                                            # object inside: fast path applies
    exact = _active_mask_edges(sdf < 0)
    np.testing.assert_array_equal(_active_mask(sdf < 0), exact)
    np.testing.assert_array_equal(active_coords(sdf, slab=3), np.argwhere(exact))
    sdf[0, 5:9, 5:9] = -1.0                                             # touching the boundary: exact path
    exact = _active_mask_edges(sdf < 0)
    np.testing.assert_array_equal(_active_mask(sdf < 0), exact)
    np.testing.assert_array_equal(active_coords(sdf, slab=3), np.argwhere(exact))
    assert (_active_mask(sdf < 0) != ((sdf[1:, 1:, 1:] < 0) | True)).any()   # non-trivial masks
