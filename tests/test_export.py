"""O-Voxel -> engine-ready GLB: validity, budget, winding, frame/placement, metadata, formats, alpha, bake."""
from __future__ import annotations

import io
import os

import numpy as np
import pygltflib
import pytest
from PIL import Image

from propforge.errors import InputError
from propforge.export import export_glb
from propforge.mesh.cleanup import edge_topology
from propforge.options import ExportOptions
from propforge.ovoxel.from_sdf import sdf_to_ovoxel
from propforge.types import ATTR_CHANNELS, Generation, OVoxel

R = 48


def grid(r: int = R):
    g = np.linspace(-0.5, 0.5, r + 1, dtype=np.float32)
    return np.meshgrid(g, g, g, indexing="ij")


def sphere_sdf(radius: float = 0.4, r: int = R) -> np.ndarray:
    x, y, z = grid(r)
    return np.sqrt(x * x + y * y + z * z) - radius


def box_sdf(half=(0.1, 0.2, 0.4), r: int = R) -> np.ndarray:
    x, y, z = grid(r)
    q = np.stack([np.abs(x) - half[0], np.abs(y) - half[1], np.abs(z) - half[2]], -1)
    return (np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)).astype(np.float32)


def attrs_fn(color=(0.8, 0.5, 0.2), alpha=None, split=False):
    """Constant PBR attributes; ``split``: red where internal z > 0, blue below."""
    def fn(p: np.ndarray) -> np.ndarray:
        a = np.zeros((len(p), ATTR_CHANNELS), np.float32)
        a[:, 0:3] = color
        if split:
            top = p[:, 2] > 0
            a[:, 0:3] = np.where(top[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
        a[:, 3] = 0.25                         # metallic
        a[:, 4] = 0.75                         # roughness
        a[:, 5] = 1.0 if alpha is None else alpha(p)
        return a
    return fn


def gen(ov: OVoxel, **kw) -> Generation:
    return Generation(ov, generator="test-shape", seed=kw.pop("seed", 7), source_sha256="ab" * 32,
                      notes="synthetic test shape", **kw)


def small_opts(**kw) -> ExportOptions:
    base = dict(faces=1200, texture_size=256)
    base.update(kw)
    return ExportOptions(**base)


class Glb:
    """Read a GLB back into arrays (what an importer sees)."""

    def __init__(self, data: bytes) -> None:
        self.g = pygltflib.GLTF2.load_from_bytes(data)
        self.blob = self.g.binary_blob()
        prim = self.g.meshes[0].primitives[0]
        self.pos = self.accessor(prim.attributes.POSITION)
        self.nrm = self.accessor(prim.attributes.NORMAL)
        self.uv = self.accessor(prim.attributes.TEXCOORD_0)
        self.faces = self.accessor(prim.indices).reshape(-1, 3).astype(np.int64)
        self.material = self.g.materials[prim.material]

    def view(self, i: int) -> bytes:
        bv = self.g.bufferViews[i]
        return self.blob[bv.byteOffset or 0:(bv.byteOffset or 0) + bv.byteLength]

    def accessor(self, i: int) -> np.ndarray:
        a = self.g.accessors[i]
        dt = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[a.componentType]
        n = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[a.type]
        return np.frombuffer(self.view(a.bufferView), dt, a.count * n).reshape(a.count, n)

    def image(self, i: int) -> Image.Image:
        return Image.open(io.BytesIO(self.view(self.g.images[i].bufferView)))

    def texture_image(self, tex: int) -> np.ndarray:
        return np.asarray(self.image(self.g.textures[tex].source))


@pytest.fixture(scope="module")
def sphere_glb() -> bytes:
    ov = sdf_to_ovoxel(sphere_sdf(), attrs_fn(split=True))
    return export_glb(gen(ov), small_opts(height=1.5))


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    p = v.astype(np.float64)[f]
    return float(np.einsum("ij,ij->i", np.cross(p[:, 0], p[:, 1]), p[:, 2]).sum() / 6.0)


def test_sphere_glb_is_valid_and_within_budget(sphere_glb, assert_valid_glb):
    rep = assert_valid_glb(sphere_glb)
    assert rep.num_warnings == 0, rep.warnings
    glb = Glb(sphere_glb)
    assert 0 < len(glb.faces) <= 1200
    assert glb.material.doubleSided is False
    assert glb.material.pbrMetallicRoughness.baseColorTexture is not None
    assert glb.material.pbrMetallicRoughness.metallicRoughnessTexture is not None


def test_winding_is_consistent_and_outward(sphere_glb):
    glb = Glb(sphere_glb)
    # welded by position (UV seams split vertices), every edge is shared by two faces running opposite ways
    _, weld = np.unique(glb.pos.round(6), axis=0, return_inverse=True)
    f = weld.reshape(-1)[glb.faces]
    topo = edge_topology(f)
    assert (topo.count == 2).all(), "closed sphere must stay closed after decimation"
    h0, h1 = topo.order[topo.starts], topo.order[topo.starts + 1]
    assert (f.reshape(-1)[h0] != f.reshape(-1)[h1]).all(), "neighbouring faces disagree on winding"
    assert signed_volume(glb.pos, glb.faces) > 0
    centre = (glb.pos.min(0) + glb.pos.max(0)) / 2
    p = glb.pos.astype(np.float64)[glb.faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert (np.einsum("ij,ij->i", n, p.mean(1) - centre) > 0).all(), "a face points inward"
    # stored vertex normals agree with the faces they belong to
    assert (np.einsum("ij,ij->i", glb.nrm[glb.faces[:, 0]], n) > 0).mean() > 0.99


def test_frame_height_and_pivot(assert_valid_glb):
    # internal extents x 0.2, y 0.4, z 0.8 (Z-up) -> glTF X 0.2, Y 0.8 (up), Z 0.4
    ov = sdf_to_ovoxel(box_sdf((0.1, 0.2, 0.4)), attrs_fn())
    data = export_glb(gen(ov), small_opts(height=2.0))
    assert_valid_glb(data)
    glb = Glb(data)
    lo, hi = glb.pos.min(0), glb.pos.max(0)
    assert hi[1] - lo[1] == pytest.approx(2.0, rel=1e-5)
    assert lo[1] == pytest.approx(0.0, abs=1e-6)
    assert abs(lo[0] + hi[0]) < 1e-5 and abs(lo[2] + hi[2]) < 1e-5
    ext = hi - lo
    assert ext[0] / ext[1] == pytest.approx(0.25, rel=0.08)
    assert ext[2] / ext[1] == pytest.approx(0.5, rel=0.08)
    acc = glb.g.accessors[glb.g.meshes[0].primitives[0].attributes.POSITION]
    np.testing.assert_allclose(acc.min, lo, atol=1e-6)
    np.testing.assert_allclose(acc.max, hi, atol=1e-6)
    assert glb.g.nodes[0].matrix is None and glb.g.nodes[0].translation is None


def test_frame_maps_internal_up_to_gltf_y():
    # a cone pointing to internal +Z: its tip must end up at the top (max glTF Y)
    x, y, z = grid()
    sdf = np.maximum(np.sqrt(x * x + y * y) - (0.4 - z) * 0.5, np.abs(z) - 0.4)
    data = export_glb(gen(sdf_to_ovoxel(sdf.astype(np.float32), attrs_fn())), small_opts(height=1.0))
    glb = Glb(data)
    top = glb.pos[:, 1] > 0.9
    bottom = glb.pos[:, 1] < 0.1
    width = lambda m: np.ptp(glb.pos[m][:, [0, 2]], axis=0).max()
    assert width(bottom) > 3 * width(top)
    # internal +Y must go to glTF -Z: a sphere with a small bump at internal +y has its narrow end at -Z
    sdf2 = np.minimum(np.sqrt(x * x + y * y + z * z) - 0.3, np.sqrt(x * x + (y - 0.35) ** 2 + z * z) - 0.1)
    p = Glb(export_glb(gen(sdf_to_ovoxel(sdf2.astype(np.float32), attrs_fn())), small_opts())).pos
    near_min = p[p[:, 2] < p[:, 2].min() + 0.03]
    near_max = p[p[:, 2] > p[:, 2].max() - 0.03]
    assert np.ptp(near_min[:, :2], 0).max() < 0.75 * np.ptp(near_max[:, :2], 0).max()


def test_metadata_in_asset_extras(sphere_glb):
    g = Glb(sphere_glb).g
    assert g.asset.generator.startswith("PropForge ")
    ex = g.asset.extras
    assert ex["generator"] == "test-shape"
    assert ex["seed"] == 7
    assert ex["source_sha256"] == "ab" * 32
    assert ex["notes"] == "synthetic test shape"
    assert ex["options"]["export"]["faces"] == 1200
    assert ex["options"]["export"]["height"] == 1.5
    assert ex["stats"]["faces"] == len(Glb(sphere_glb).faces)


@pytest.mark.parametrize("fmt,mime", [("png", "image/png"), ("jpeg", "image/jpeg")])
def test_texture_formats(fmt, mime, assert_valid_glb):
    ov = sdf_to_ovoxel(sphere_sdf(r=32), attrs_fn())
    data = export_glb(gen(ov), small_opts(texture_format=fmt))
    assert_valid_glb(data)
    g = Glb(data).g
    assert [im.mimeType for im in g.images] == [mime, mime]
    assert not g.extensionsUsed and not g.extensionsRequired


def test_webp_is_optional_with_png_fallback(assert_valid_glb):
    ov = sdf_to_ovoxel(sphere_sdf(r=32), attrs_fn())
    data = export_glb(gen(ov), small_opts(texture_format="webp"))
    assert_valid_glb(data)
    glb = Glb(data)
    g = glb.g
    assert g.extensionsUsed == ["EXT_texture_webp"]
    assert not g.extensionsRequired
    for tex in g.textures:
        assert g.images[tex.source].mimeType == "image/png"
        webp = tex.extensions["EXT_texture_webp"]["source"]
        assert g.images[webp].mimeType == "image/webp"
        assert glb.image(webp).format == "WEBP" and glb.image(tex.source).format == "PNG"
        assert glb.image(webp).size == glb.image(tex.source).size


def _alpha_export(alpha, **kw) -> Glb:
    ov = sdf_to_ovoxel(sphere_sdf(r=32), attrs_fn(alpha=alpha))
    return Glb(export_glb(gen(ov), small_opts(**kw)))


def test_alpha_auto_opaque():
    glb = _alpha_export(None)
    assert glb.material.alphaMode == "OPAQUE"
    assert glb.material.alphaCutoff is None
    assert glb.texture_image(glb.material.pbrMetallicRoughness.baseColorTexture.index).shape[-1] == 3


def test_alpha_auto_mask_for_binary_cutout(assert_valid_glb):
    glb = _alpha_export(lambda p: (p[:, 0] > 0.1).astype(np.float32))
    assert glb.material.alphaMode == "MASK"
    assert glb.material.alphaCutoff == 0.5
    img = glb.texture_image(glb.material.pbrMetallicRoughness.baseColorTexture.index)
    assert img.shape[-1] == 4 and img[..., 3].min() < 10 and img[..., 3].max() > 245


def test_alpha_auto_blend_for_translucency():
    glb = _alpha_export(lambda p: np.full(len(p), 0.5, np.float32))
    assert glb.material.alphaMode == "BLEND"


def test_alpha_forced_mode_wins():
    glb = _alpha_export(lambda p: np.full(len(p), 0.5, np.float32), alpha_mode="OPAQUE")
    assert glb.material.alphaMode == "OPAQUE"


def test_jpeg_with_alpha_keeps_base_colour_png(assert_valid_glb):
    ov = sdf_to_ovoxel(sphere_sdf(r=32), attrs_fn(alpha=lambda p: (p[:, 0] > 0.1).astype(np.float32)))
    data = export_glb(gen(ov), small_opts(texture_format="jpeg"))
    assert_valid_glb(data)
    glb = Glb(data)
    pbr = glb.material.pbrMetallicRoughness
    mime = lambda t: glb.g.images[glb.g.textures[t].source].mimeType
    assert mime(pbr.baseColorTexture.index) == "image/png"
    assert mime(pbr.metallicRoughnessTexture.index) == "image/jpeg"
    assert any("PNG" in n for n in glb.g.asset.extras["export_notes"])


def test_baked_colours_follow_the_attribute_volume(sphere_glb):
    """Red above the sphere's equator, blue below: sample the texture at each face's UV centroid."""
    glb = Glb(sphere_glb)
    pbr = glb.material.pbrMetallicRoughness
    img = glb.texture_image(pbr.baseColorTexture.index).astype(int)
    mr = glb.texture_image(pbr.metallicRoughnessTexture.index).astype(int)
    h, w = img.shape[:2]
    uvc = glb.uv[glb.faces].mean(1)
    px = np.clip((uvc * [w, h]).astype(int), 0, [w - 1, h - 1])
    col = img[px[:, 1], px[:, 0], :3]
    y = glb.pos[glb.faces].mean(1)[:, 1]
    mid = (glb.pos[:, 1].max() + glb.pos[:, 1].min()) / 2
    band = 0.06 * np.ptp(glb.pos[:, 1])
    top, bottom = y > mid + band, y < mid - band
    assert top.sum() > 100 and bottom.sum() > 100
    is_red = (col[:, 0] > 200) & (col[:, 2] < 55)
    is_blue = (col[:, 2] > 200) & (col[:, 0] < 55)
    assert is_red[top].mean() > 0.98 and is_blue[bottom].mean() > 0.98
    m = mr[px[:, 1], px[:, 0]]
    assert np.abs(m[:, 1] - 191).max() <= 2      # roughness 0.75 -> truncate(191.25)
    assert np.abs(m[:, 2] - 63).max() <= 2       # metallic 0.25 -> 63
    assert m[:, 0].max() == 0


def test_progress_stages_and_atomic_path(tmp_path):
    ov = sdf_to_ovoxel(sphere_sdf(r=32), attrs_fn())
    events = []
    out = tmp_path / "sub" / "prop.glb"
    data = export_glb(gen(ov), small_opts(), path=out, progress=events.append)
    assert out.read_bytes() == data
    assert os.listdir(out.parent) == ["prop.glb"]
    stages = [e.stage for e in events]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == ["mesh", "uv", "bake", "write"]
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)


def test_empty_ovoxel_is_a_clear_error():
    ov = OVoxel(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3), bool), np.zeros((0, 6)), resolution=64)
    with pytest.raises(InputError, match="no surface"):
        export_glb(gen(ov), small_opts())


@pytest.mark.parametrize("bad", [dict(faces=10), dict(texture_size=300), dict(texture_format="gif"),
                                 dict(height=0.0), dict(alpha_mode="ADD")])
def test_bad_options_are_rejected(bad):
    ov = sdf_to_ovoxel(sphere_sdf(r=16), attrs_fn())
    with pytest.raises(InputError):
        export_glb(gen(ov), small_opts(**bad))


@pytest.mark.parametrize("b", [0, 1])
def test_decoder_style_ovoxel_exports_valid_glb(b, assert_valid_glb):
    """The reference decoder's own mesh inputs (offsets outside [0, 1], split weights, open sheets)."""
    from safetensors.numpy import load_file

    from conftest import GOLDEN, need_shared
    out = load_file(need_shared(GOLDEN / "shape_dec_fp32" / "outputs.safetensors"))
    coords = out[f"mesh{b}_in_coords"]
    attrs = np.random.default_rng(b).random((len(coords), ATTR_CHANNELS)).astype(np.float32)
    ov = OVoxel(coords, out[f"mesh{b}_in_dual_vertices"], out[f"mesh{b}_in_intersected"].reshape(-1, 3), attrs,
                int(np.asarray(out[f"mesh{b}_grid_size"]).reshape(-1)[0]), split_weight=out[f"mesh{b}_in_split_weight"])
    data = export_glb(gen(ov), small_opts(faces=400))
    assert_valid_glb(data)
    assert 0 < len(Glb(data).faces) <= 400


def test_normals_smooth_on_curves_and_across_uv_seams(sphere_glb):
    glb = Glb(sphere_glb)
    _, group = np.unique(glb.pos.round(6), axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    g, n = group[order], glb.nrm[order]
    same = g[1:] == g[:-1]
    assert same.sum() > 50                                         # UV seams split vertices...
    angle = np.degrees(np.arccos(np.clip((n[1:][same] * n[:-1][same]).sum(1), -1, 1)))
    assert np.percentile(angle, 99) < 1.0 and angle.max() < 5.0    # ...but keep (nearly) one normal
    np.testing.assert_allclose(np.linalg.norm(glb.nrm, axis=1), 1.0, atol=1e-5)


def test_normals_crisp_on_hard_edges():
    """A box: flat sides keep flat normals up to the bevel instead of shading like a pillow."""
    ov = sdf_to_ovoxel(box_sdf((0.3, 0.3, 0.3)), attrs_fn())
    glb = Glb(export_glb(gen(ov), small_opts(faces=300)))
    p = glb.pos.astype(np.float64)[glb.faces]
    fn = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    side = np.abs(fn).max(1) > np.cos(np.radians(5))             # faces of the six flat sides
    assert side.mean() > 0.3
    cos = np.einsum("fkj,fj->fk", glb.nrm[glb.faces][side], fn[side])
    assert cos.min() > np.cos(np.radians(10))


def test_non_finite_inputs():
    ov = sdf_to_ovoxel(sphere_sdf(r=24), attrs_fn())
    ov.attrs[::7] = np.nan                                          # broken attributes: exported, NaN -> 0
    data = export_glb(gen(ov), small_opts(faces=300))
    assert len(Glb(data).faces) > 0
    ov.offsets[3] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        export_glb(gen(ov), small_opts(faces=300))


def test_xatlas_unwrap_path_exports_valid_glb(assert_valid_glb):
    ov = sdf_to_ovoxel(sphere_sdf(r=32), attrs_fn(split=True))
    data = export_glb(gen(ov), small_opts(faces=600), unwrap_method="xatlas")
    assert_valid_glb(data)
    assert 0 < len(Glb(data).faces) <= 600
