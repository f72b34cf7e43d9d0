"""mesh -> O-Voxel (spec §3.3/§3.4) and sparse trilinear sampling (§4.7) on meshes built here."""
from __future__ import annotations

import numpy as np
import pytest

from propforge.errors import InputError
from propforge.ovoxel import mesh_to_ovoxel, ovoxel_to_mesh, sample_attrs_trilinear
from propforge.ovoxel.material import sample_texture
from propforge.types import Mesh, OVoxel, PBRMaterial, TexturedMesh

CUBE_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def cube(h: float = 0.3) -> Mesh:
    v = np.array([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)])
    return Mesh(v, CUBE_FACES)


def icosphere(subdiv: int = 4, r: float = 0.4) -> Mesh:
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                  [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                  [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(subdiv):
        e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
        ue, inv = np.unique(e, axis=0, return_inverse=True)
        m = len(v) + inv.reshape(3, -1).T
        v = np.concatenate([v, (v[ue[:, 0]] + v[ue[:, 1]]) / 2])
        f = np.concatenate([np.stack([f[:, 0], m[:, 0], m[:, 2]], 1), np.stack([f[:, 1], m[:, 1], m[:, 0]], 1),
                            np.stack([f[:, 2], m[:, 2], m[:, 1]], 1), m])
    return Mesh(v / np.linalg.norm(v, axis=1, keepdims=True) * r, f)


def surface_points(mesh: Mesh, n: int, seed: int = 0) -> np.ndarray:
    """Area-uniform random points on a mesh."""
    rng = np.random.default_rng(seed)
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    f = rng.choice(len(tri), n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    return (bary[:, :, None] * tri[f]).sum(1)


def point_mesh_distance(p: np.ndarray, mesh: Mesh) -> np.ndarray:
    """Exact distance of each point to a (small) triangle mesh, brute force in chunks."""
    from propforge.ovoxel.voxelize import closest_barycentric

    tri = mesh.vertices[mesh.faces].astype(np.float64)
    out = np.empty(len(p))
    step = max(1, 2_000_000 // len(tri))
    for i in range(0, len(p), step):
        q = np.repeat(p[i:i + step], len(tri), 0)
        t = np.tile(tri, (len(p[i:i + step]), 1, 1))
        closest = np.einsum("kv,kvj->kj", closest_barycentric(t, q), t)
        out[i:i + step] = np.linalg.norm(closest - q, axis=1).reshape(-1, len(tri)).min(1)
    return out


def chamfer(a: Mesh, b: Mesh, n: int = 1000) -> tuple[float, float]:
    """(symmetric mean, Hausdorff) point-to-surface distance between two meshes from n samples each."""
    ab, ba = point_mesh_distance(surface_points(a, n), b), point_mesh_distance(surface_points(b, n, 1), a)
    return 0.5 * (ab.mean() + ba.mean()), max(ab.max(), ba.max())


def test_cube_flags_are_exactly_the_crossed_grid_edges():
    R, h = 16, 0.3                      # faces at grid coordinates 3.2 and 12.8: never on a grid plane
    ov = mesh_to_ovoxel(cube(h), R)
    lines = range(4, 13)                # interior grid lines inside the face: 4..12
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        expected = set()
        for ka in (3, 12):
            for j in lines:
                for k in lines:
                    v = [0, 0, 0]
                    v[a], v[b], v[c] = ka, j - 1, k - 1
                    expected.add(tuple(v))
        got = {tuple(x) for x in ov.coords[ov.flags[:, a]]}
        assert got == expected, f"axis {a}"
    # the voxel set is exactly the 4 voxels around every flagged edge
    vox = set()
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        for x in ov.coords[ov.flags[:, a]]:
            for db in (0, 1):
                for dc in (0, 1):
                    y = x.copy()
                    y[b] += db
                    y[c] += dc
                    vox.add(tuple(y))
    assert vox == {tuple(x) for x in ov.coords}
    assert (np.diff(ov.coords[:, 0] * R * R + ov.coords[:, 1] * R + ov.coords[:, 2]) > 0).all()  # sorted


def test_cube_dual_vertices_lie_on_faces_edges_and_corners():
    R = 16
    ov = mesh_to_ovoxel(cube(0.3), R, regularization_weight=0.0)
    dual = ov.coords + ov.offsets.astype(np.float64)
    lo, hi = 3.2, 12.8
    on = np.isclose(dual, lo, atol=1e-4) | np.isclose(dual, hi, atol=1e-4)
    assert on.any(1).all(), "every dual vertex lies on a cube face"
    corner_vox = (np.isin(ov.coords, [3, 12])).all(1)
    assert corner_vox.sum() == 8
    np.testing.assert_allclose(np.sort(dual[corner_vox], 0),
                               np.sort(np.array([[x, y, z] for x in (lo, hi) for y in (lo, hi) for z in (lo, hi)]), 0),
                               atol=1e-4)
    # with the default regularisation (1e-2) the pull towards the mean crossing is small
    ov_reg = mesh_to_ovoxel(cube(0.3), R)
    assert np.abs(ov_reg.offsets - ov.offsets).max() < 0.05


def test_cube_round_trip_reproduces_the_surface():
    R = 16
    ov = mesh_to_ovoxel(cube(0.3), R)
    m = ovoxel_to_mesh(ov)
    assert len(m.faces) == 2 * ov.flags.sum()          # every flagged edge has its 4 voxels
    mean, haus = chamfer(m, cube(0.3), 500)
    assert mean < 0.25 / R and haus < 1.0 / R


@pytest.mark.parametrize("R", [16, 32])
def test_sphere_round_trip_within_a_voxel(R):
    sphere = icosphere(3, 0.4)
    ov = mesh_to_ovoxel(sphere, R)
    assert 0.8 * 4.71 * (0.8 * R) ** 2 < ov.num_voxels < 1.2 * 4.71 * (0.8 * R) ** 2   # spec §5.2 estimate
    m = ovoxel_to_mesh(ov)
    r = np.linalg.norm(m.vertices, axis=1)
    assert np.abs(r - 0.4).max() < 0.1 / R               # tessellation error of the sphere is ~0.05 voxel
    mean, haus = chamfer(m, sphere, 250)
    assert mean < 0.2 / R and haus < 1.0 / R


def test_open_quad_boundary_stays_at_the_edge():
    """Boundary quadrics keep dual vertices of an open sheet on its border (no overshoot)."""
    v = np.array([[-0.3, -0.3, 0.013], [0.3, -0.3, 0.013], [0.3, 0.3, 0.013], [-0.3, 0.3, 0.013]])
    ov = mesh_to_ovoxel(Mesh(v, [[0, 1, 2], [0, 2, 3]]), 32)
    dual = (ov.coords + ov.offsets) / 32 - 0.5
    np.testing.assert_allclose(dual[:, 2], 0.013, atol=1e-4)
    assert np.abs(dual[:, :2]).max() <= 0.3 + 1e-4


def checker_quad(z: float = 0.013, cells: int = 4, px: int = 16) -> tuple[TexturedMesh, np.ndarray]:
    """A quad over [-0.4, 0.4]^2 at height z with a red/blue/green/white checker (cells x cells)."""
    palette = np.array([[255, 0, 0, 255], [0, 0, 255, 255], [0, 255, 0, 255], [255, 255, 255, 255]], np.uint8)
    ii, jj = np.mgrid[0:cells * px, 0:cells * px] // px
    tex = palette[(ii + 2 * jj) % 4]
    v = np.array([[-0.4, -0.4, z], [0.4, -0.4, z], [0.4, 0.4, z], [-0.4, 0.4, z]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)      # u along x, v along y (row = v·H)
    mat = PBRMaterial(base_color_texture=tex, metallic_factor=0.25, roughness_factor=0.75)
    return TexturedMesh(v, [[0, 1, 2], [0, 2, 3]], uvs=uv, material=mat), tex


def test_checker_colour_at_each_voxel_matches_the_texel():
    R, cells = 32, 4
    quad, tex = checker_quad(cells=cells)
    ov = mesh_to_ovoxel(quad, R)
    centre = (ov.coords + 0.5) / R - 0.5
    uv = (centre[:, :2] + 0.4) / 0.8                         # affine map of the quad
    cell = uv * cells
    interior = ((uv > 0) & (uv < 1)).all(1) & (np.abs(cell - np.round(cell)) > 1.0 / R / 0.8 * cells).all(1)
    assert interior.sum() > 100
    H, W = tex.shape[:2]
    texel = tex[(uv[interior, 1] * H).astype(int), (uv[interior, 0] * W).astype(int)] / 255.0
    np.testing.assert_allclose(ov.attrs[interior, :3], texel[:, :3], atol=1e-6)
    np.testing.assert_allclose(ov.attrs[:, 3], 0.25, atol=1e-6)      # metallic factor (no texture)
    np.testing.assert_allclose(ov.attrs[:, 4], 0.75, atol=1e-6)
    np.testing.assert_allclose(ov.attrs[:, 5], 1.0)                   # OPAQUE ignores alpha


def test_checker_psnr_through_trilinear_sampling():
    quad, tex = checker_quad(cells=4, px=8)
    ov = mesh_to_ovoxel(quad, 64)
    rng = np.random.default_rng(0)
    p = np.c_[rng.uniform(-0.4, 0.4, (5000, 2)), np.full(5000, 0.013)]
    ref = sample_texture(tex, (p[:, :2] + 0.4) / 0.8)[:, :3]
    got = sample_attrs_trilinear(ov, p)[:, :3]
    psnr = 10 * np.log10(1.0 / np.mean((ref - got) ** 2))
    assert psnr > 15          # hard checker edges blur over one voxel; smooth content is in the asset test
    far = (np.abs((p[:, :2] + 0.4) / 0.8 * 4 - np.round((p[:, :2] + 0.4) / 0.8 * 4)) > 2.5 / 64 / 0.8 * 4).all(1)
    np.testing.assert_allclose(got[far], ref[far], atol=1e-5)


def test_factors_vertex_colours_and_alpha_modes():
    quad, _ = checker_quad()
    white = np.full((4, 4, 4), 255, np.uint8)
    white[..., 3] = 100
    mat = PBRMaterial(base_color_factor=(0.5, 1.0, 1.0, 1.0), base_color_texture=white, alpha_mode="MASK",
                      alpha_cutoff=0.5)
    m = TexturedMesh(quad.vertices, quad.faces, uvs=quad.uvs, material=mat)
    ov = mesh_to_ovoxel(m, 16)
    # linear 0.5 re-encoded to sRGB: 0.7354
    np.testing.assert_allclose(ov.attrs[:, 0], 0.7353569, atol=1e-4)
    np.testing.assert_allclose(ov.attrs[:, 1:3], 1.0, atol=1e-6)
    np.testing.assert_array_equal(ov.attrs[:, 5], 0.0)               # 100/255 < cutoff 0.5
    mat.alpha_mode = "BLEND"
    np.testing.assert_allclose(mesh_to_ovoxel(m, 16).attrs[:, 5], 100 / 255, atol=1e-6)
    vc = np.tile([[0.0, 1.0, 1.0, 1.0]], (4, 1))
    m2 = TexturedMesh(quad.vertices, quad.faces, uvs=quad.uvs, vertex_colors=vc,
                      material=PBRMaterial(base_color_texture=white))
    np.testing.assert_allclose(mesh_to_ovoxel(m2, 16).attrs[:, 0], 0.0, atol=1e-6)


def test_rgb_and_gray_textures_are_accepted():
    quad, _ = checker_quad()
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 255
    gray = np.full((4, 4), 51, np.uint8)
    m = TexturedMesh(quad.vertices, quad.faces, uvs=quad.uvs,
                     material=PBRMaterial(base_color_texture=rgb, metallic_roughness_texture=gray, alpha_mode="BLEND"))
    ov = mesh_to_ovoxel(m, 16)
    np.testing.assert_allclose(ov.attrs[:, :3], np.tile([0.0, 1.0, 0.0], (ov.num_voxels, 1)), atol=1e-6)
    np.testing.assert_allclose(ov.attrs[:, 3:5], 0.2, atol=1e-6)     # gray MR: B = G = 51/255
    np.testing.assert_allclose(ov.attrs[:, 5], 1.0)                   # no alpha channel = opaque


def test_sample_texture_wrap_modes():
    tex = np.arange(4, dtype=np.uint8).reshape(1, 4, 1) * 60              # one row: 0 60 120 180
    at = np.array([[1.125, 0.5], [-0.125, 0.5]])                         # texel 0 centre, shifted by ±1
    np.testing.assert_allclose(sample_texture(tex, at, (10497, 10497))[:, 0] * 255, [0, 180], atol=1e-4)
    np.testing.assert_allclose(sample_texture(tex, at, (33071, 33071))[:, 0] * 255, [180, 0], atol=1e-4)
    np.testing.assert_allclose(sample_texture(tex, at, (33648, 33648))[:, 0] * 255, [180, 0], atol=1e-4)


def test_mip_pyramid_averages_channels_straight():
    """Transparent texels keep their colour in coarser levels (no alpha premultiplication)."""
    from propforge.ovoxel.material import mip_pyramid, sample_texture_mip

    tex = np.zeros((8, 6, 4), np.uint8)
    tex[..., 0] = 200
    tex[::2, :, 3] = 255                      # every other row transparent
    levels = mip_pyramid(tex)
    assert [lv.shape[:2] for lv in levels] == [(8, 6), (4, 3), (2, 2), (1, 1)]
    for lv in levels[1:]:
        np.testing.assert_array_equal(lv[..., 0], 200)
        np.testing.assert_allclose(lv[..., 3], 128, atol=1)
    uv = np.full((3, 2), 0.5)
    got = sample_texture_mip(tex, uv, (10497, 10497), np.array([1.0, 4.0, 1000.0]))
    np.testing.assert_allclose(got[:, 0], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(got[2, 3], 128 / 255, atol=1 / 255)


def test_trilinear_sampling_rules():
    coords = np.array([[0, 0, 0], [1, 0, 0]])
    attrs = np.zeros((2, 6))
    attrs[0], attrs[1] = 0.2, 1.0
    ov = OVoxel(coords, np.full((2, 3), 0.5), np.zeros((2, 3), bool), attrs, 4)
    pts = np.array([[-0.375, -0.375, -0.375], [-0.25, -0.375, -0.375], [-0.3, -0.3, -0.3], [0.4, 0.4, 0.4]])
    got = sample_attrs_trilinear(ov, pts)
    assert got.shape == (4, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], [0.2, 0.6, 0.2 * 0.7 + 1.0 * 0.3, 0.0], atol=1e-6)


def test_trilinear_reproduces_linear_fields_on_a_dense_block():
    R = 8
    coords = np.stack(np.meshgrid(*[np.arange(R)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centre = (coords + 0.5) / R - 0.5
    attrs = np.repeat((centre @ [0.3, -0.2, 0.5] + 0.5)[:, None], 6, 1)
    ov = OVoxel(coords, np.full(coords.shape, 0.5), np.zeros(coords.shape, bool), attrs, R)
    p = np.random.default_rng(0).uniform(-0.5 + 0.5 / R, 0.5 - 0.5 / R, (1000, 3))
    np.testing.assert_allclose(sample_attrs_trilinear(ov, p)[:, 0], p @ [0.3, -0.2, 0.5] + 0.5, atol=1e-5)


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="resolution"):
        mesh_to_ovoxel(cube(), 0)
    with pytest.raises(InputError, match="resolution"):
        mesh_to_ovoxel(cube(), 16.5)
    with pytest.raises(InputError, match="outside the O-Voxel box"):
        mesh_to_ovoxel(cube(0.7), 16)
    with pytest.raises(InputError, match="at least one triangle"):
        mesh_to_ovoxel([], 16)
    with pytest.raises(InputError, match="face indices"):
        mesh_to_ovoxel(Mesh(cube().vertices, [[0, 1, 99]]), 16)
    with pytest.raises(InputError, match="NaN"):
        mesh_to_ovoxel(Mesh(np.full((3, 3), np.nan), [[0, 1, 2]]), 16)
    with pytest.raises(InputError, match="uvs has shape"):
        mesh_to_ovoxel(TexturedMesh(cube().vertices, CUBE_FACES, uvs=np.zeros((3, 2))), 16)
    with pytest.raises(InputError, match="must be a cube"):
        mesh_to_ovoxel(cube(), 16, aabb=np.array([[-0.5, -0.5, -0.5], [0.5, 0.5, 1.0]]))
    with pytest.raises(InputError, match="crosses no interior grid line"):
        mesh_to_ovoxel(Mesh(cube(0.01).vertices + 0.1, CUBE_FACES), 4)


def test_degenerate_and_duplicate_faces_do_not_change_the_voxels():
    c = cube(0.3)
    extra = np.array([[0, 0, 0], [1, 1, 1], [0, 1, 1]])            # two repeated-index triangles
    v = np.concatenate([c.vertices, [[0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]]])
    dirty = Mesh(v, np.concatenate([c.faces, c.faces[:4], extra, [[8, 9, 10]]]))   # + duplicates + zero-area
    a, b = mesh_to_ovoxel(c, 16), mesh_to_ovoxel(dirty, 16)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.flags, b.flags)
    assert np.abs(a.offsets - b.offsets).max() < 0.05   # duplicates only re-weight quadrics vs the regulariser


def test_voxelisation_is_deterministic():
    quad, _ = checker_quad()
    a, b = mesh_to_ovoxel(quad, 24), mesh_to_ovoxel(quad, 24)
    for name in ("coords", "offsets", "flags", "attrs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
