"""Relief generator: a closed, thick, double-sided slab in the spec's frame, coloured from the image."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import make_cutout
from propforge.errors import Cancelled, InputError
from propforge.generators import load_generator
from propforge.generators.relief import ReliefGenerator, choose_resolution
from propforge.ovoxel import ovoxel_to_mesh

RES = 64


@pytest.fixture(scope="module")
def disc():
    img = make_cutout(128, "disc")
    return img, ReliefGenerator().generate(img, resolution=RES)


@pytest.fixture(scope="module")
def ell():
    img = make_cutout(128, "L")
    return img, ReliefGenerator().generate(img, resolution=RES)


def edge_use_counts(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    return np.unique(e, axis=0, return_counts=True)[1]


def test_registry_and_description():
    gen = load_generator("relief")
    assert gen.name == "relief"
    assert "2.5D relief" in gen.description and "not a 3D reconstruction" in gen.description


def test_backend_and_kwargs_passes_the_model_only_to_trellis2():
    """The rule every front end uses: "auto" resolves (relief on a machine without CUDA weights),
    only trellis2 is given the model, so relief never receives (or keys its cache on) a path."""
    import torch

    from propforge.generators import backend_and_kwargs
    assert backend_and_kwargs("relief", "some/model") == ("relief", {})
    assert backend_and_kwargs("trellis2", "/w/TRELLIS.2-4B") == ("trellis2", {"model": "/w/TRELLIS.2-4B"})
    assert backend_and_kwargs("trellis2", "") == ("trellis2", {})
    if not torch.cuda.is_available():
        assert backend_and_kwargs("auto", "/no/such/weights") == ("relief", {})
        assert backend_and_kwargs("", "") == ("relief", {})


@pytest.mark.parametrize("which", ["disc", "ell"])
def test_mesh_is_closed(which, request):
    _, g = request.getfixturevalue(which)
    mesh = ovoxel_to_mesh(g.ovoxel)
    counts = edge_use_counts(mesh.faces)
    assert len(mesh.faces) > 1000
    assert (counts == 2).all(), f"{(counts != 2).sum()} edges are not shared by exactly two faces"


def test_frame_image_right_is_plus_x_image_up_is_plus_z_thickness_along_y(ell):
    _, g = ell
    v = ovoxel_to_mesh(g.ovoxel).vertices
    lo, hi = v.min(0), v.max(0)
    width, thick, height = hi - lo
    assert thick < 0.5 * min(width, height), "thickness must be along Y and smaller than the silhouette"
    assert np.all(np.abs(lo) < 0.5) and np.all(hi < 0.5)
    # the L's foot (bottom of the image) reaches to the right: +X at -Z, but not at +Z
    right = v[:, 0] > 0.6 * hi[0]
    assert right.any() and (v[right, 2] < 0).all()
    # the slab is centred on y = 0 (double-sided: front at -Y, back at +Y)
    assert abs(lo[1] + hi[1]) < 2.0 / RES


def test_thick_rim_and_inflated_middle(disc):
    _, g = disc
    v = ovoxel_to_mesh(g.ovoxel).vertices
    r = np.hypot(v[:, 0], v[:, 2])
    rim = v[r > r.max() - 0.5 / RES]
    middle = v[r < 0.05]
    rim_thickness = rim[:, 1].max() - rim[:, 1].min()
    middle_thickness = middle[:, 1].max() - middle[:, 1].min()
    assert rim_thickness >= 3.0 / RES, "the rim must be several voxels thick (a closed slab, not a sheet)"
    assert middle_thickness > 1.8 * rim_thickness, "the middle should be inflated"


def _front_back_attrs(x: np.ndarray, z: np.ndarray, g) -> tuple[np.ndarray, np.ndarray]:
    """Attributes of the outermost voxel on the front (-Y) and back (+Y) above each (x, z)."""
    ov = g.ovoxel
    ix = np.floor((x - ov.aabb[0, 0]) / ov.voxel_size).astype(int)
    iz = np.floor((z - ov.aabb[0, 2]) / ov.voxel_size).astype(int)
    front, back = [], []
    for i, k in zip(ix, iz):
        col = np.nonzero((ov.coords[:, 0] == i) & (ov.coords[:, 2] == k))[0]
        ys = ov.coords[col, 1]
        front.append(ov.attrs[col[ys.argmin()]])
        back.append(ov.attrs[col[ys.argmax()]])
    return np.array(front), np.array(back)


def test_front_colour_matches_image_and_back_is_darker(disc):
    img, g = disc
    a = np.asarray(img).astype(np.float32) / 255.0
    ys, xs = np.nonzero(a[..., 3] > 0.5)
    v = ovoxel_to_mesh(g.ovoxel).vertices
    # map pixel -> cube via the silhouette's bounding boxes in both spaces
    px = np.array([0.35, 0.5, 0.65])
    cols = xs.min() + px * (xs.max() - xs.min())
    rows = ys.min() + px * (ys.max() - ys.min())
    x = v[:, 0].min() + px * (v[:, 0].max() - v[:, 0].min())
    z = v[:, 2].max() - px * (v[:, 2].max() - v[:, 2].min())
    X, Z = np.meshgrid(x, z)
    C, R = np.meshgrid(cols, rows)
    front, back = _front_back_attrs(X.ravel(), Z.ravel(), g)
    expect = a[R.ravel().round().astype(int), C.ravel().round().astype(int), :3]
    np.testing.assert_allclose(front[:, :3], expect, atol=0.08)
    lum = lambda c: c[:, :3] @ np.array([0.2126, 0.7152, 0.0722])  # noqa: E731
    ratio = lum(back) / lum(front)
    assert np.all((ratio > 0.6) & (ratio < 0.95)), f"back/front luminance {ratio}"
    # the back is the same object seen from behind: same hue family (red still follows image x)
    assert np.corrcoef(back[:, 0], front[:, 0])[0, 1] > 0.9
    assert np.allclose(front[:, 5], 1.0) and np.allclose(back[:, 5], 1.0)


def test_rim_takes_the_nearest_silhouette_colour(disc):
    img, g = disc
    ov = g.ovoxel
    centres = ov.aabb[0] + (ov.coords + 0.5) * ov.voxel_size
    r = np.hypot(centres[:, 0], centres[:, 2])
    side = (r > r.max() - 1.0 / RES) & (np.abs(centres[:, 1]) <= 1.0 / RES)
    assert side.sum() > 20
    colour = ov.attrs[side, :3]
    # red follows +X, green follows -Z on this cut-out (see conftest.make_cutout)
    assert np.corrcoef(colour[:, 0], centres[side, 0])[0, 1] > 0.9
    assert np.corrcoef(colour[:, 1], -centres[side, 2])[0, 1] > 0.9
    assert np.all(colour.max(1) > 0.2), "rim colour must come from the object, not the black background"


def test_material_defaults_are_sane(disc):
    _, g = disc
    rough, metal = g.ovoxel.attr("roughness"), g.ovoxel.attr("metallic")
    assert 0.6 <= float(np.median(rough)) <= 0.85
    assert float(np.median(metal)) < 0.05 and float(metal.max()) <= 0.4


def test_glossy_highlight_is_smoother():
    rgb = np.zeros((96, 96, 4), np.uint8)
    rgb[16:80, 16:80] = (150, 40, 40, 255)
    rgb[40:56, 40:56] = (252, 250, 250, 255)       # specular highlight
    g = ReliefGenerator().generate(Image.fromarray(rgb, "RGBA"), resolution=RES)
    centres = g.ovoxel.aabb[0] + (g.ovoxel.coords + 0.5) * g.ovoxel.voxel_size
    rough = g.ovoxel.attr("roughness")[:, 0]
    near = np.hypot(centres[:, 0], centres[:, 2]) < 0.04
    far = np.hypot(centres[:, 0], centres[:, 2]) > 0.25
    assert rough[near].mean() < rough[far].mean() - 0.1


def test_deterministic_per_seed(ell):
    img, g = ell
    again = ReliefGenerator().generate(img, resolution=RES, seed=0)
    for name in ("coords", "offsets", "flags", "attrs"):
        np.testing.assert_array_equal(getattr(g.ovoxel, name), getattr(again.ovoxel, name))
    assert g.seed == 0 and ReliefGenerator().generate(img, resolution=RES, seed=7).seed == 7


def test_progress_events_and_cancel(cutout):
    events = []
    ReliefGenerator().generate(cutout, resolution=RES, progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "prepare" and stages[-1] == "decode" and set(stages) == {"prepare", "decode"}
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)

    seen = []

    def cancel_at_decode(ev):
        seen.append(ev.stage)
        if ev.stage == "decode":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        ReliefGenerator().generate(cutout, resolution=RES, progress=cancel_at_decode)
    assert seen[-1] == "decode" and seen.count("decode") == 1


def test_metadata_is_honest(disc):
    _, g = disc
    assert g.generator == "relief" and "2.5D relief" in g.notes and "not a 3D reconstruction" in g.notes
    assert g.options["resolution"] == RES


def test_rgb_on_plain_background_is_keyed():
    rgb = np.full((96, 96, 3), 255, np.uint8)
    rgb[20:76, 30:66] = (30, 120, 200)
    g = ReliefGenerator().generate(Image.fromarray(rgb, "RGB"), resolution=RES)
    v = ovoxel_to_mesh(g.ovoxel).vertices
    w, h = np.ptp(v[:, 0]), np.ptp(v[:, 2])
    assert h / w == pytest.approx(56 / 36, rel=0.1), "only the object, not the white page, is inflated"


def test_bad_inputs():
    gen = ReliefGenerator()
    with pytest.raises(InputError, match="fully transparent"):
        gen.generate(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))
    with pytest.raises(InputError, match="resolution"):
        gen.generate(make_cutout(64), resolution=8)
    with pytest.raises(InputError, match="unknown relief option"):
        gen.generate(make_cutout(64), colour="blue")
    with pytest.raises(InputError, match="thickness"):
        gen.generate(make_cutout(64), thickness=0)
    line = np.zeros((40, 1000, 4), np.uint8)
    line[19, 10:990] = (255, 0, 0, 255)                  # 1 px tall: under a voxel after fitting
    with pytest.raises(InputError, match="too thin or small"):
        gen.generate(Image.fromarray(line, "RGBA"), resolution=RES)
    with pytest.raises(InputError, match="PIL image"):
        gen.generate(np.zeros((64, 64, 4)))


def test_resolution_follows_image_size():
    assert choose_resolution(200, 150) == 128
    assert choose_resolution(300, 380) == 192
    assert choose_resolution(1024, 1024) == 256
    assert choose_resolution(4000, 4000) == 256


def test_thin_diagonal_strokes_stay_closed_and_manifold():
    """Strokes thinner than a voxel (hair, wires, grass) must not leave non-manifold seams."""
    a = np.zeros((160, 160, 4), np.uint8)
    yy, xx = np.mgrid[0:160, 0:160]
    a[(xx - 80) ** 2 + (yy - 80) ** 2 < 30 ** 2] = (200, 180, 60, 255)
    for k in range(6):                                   # 1-2 px diagonal lines at several angles
        t = np.linspace(0, 1, 400)
        x = (20 + 120 * t).astype(int)
        y = (10 + 14 * k + (40 + 10 * k) * t).astype(int) % 160
        a[y, x] = (90, 60, 30, 255)
        a[np.clip(y + k % 2, 0, 159), x] = (90, 60, 30, 255)
    g = ReliefGenerator().generate(Image.fromarray(a, "RGBA"), resolution=RES)
    counts = edge_use_counts(ovoxel_to_mesh(g.ovoxel).faces)
    assert (counts == 2).all(), f"{(counts != 2).sum()} non-manifold or open edges"


def test_remove_checkerboards_joins_diagonal_corners():
    from propforge.generators.relief import remove_checkerboards
    sdf = np.ones((5, 5, 5), np.float32)
    sdf[1, 2, 1] = sdf[2, 2, 2] = -1.0                   # inside corners diagonal on the y = 2 face
    assert remove_checkerboards(sdf) > 0
    neg = sdf < 0
    assert neg[1, 2, 2] and neg[2, 2, 1], "the two outside corners of the face were joined"
    assert neg.sum() == 4


def test_real_image(need_real_image):
    g = ReliefGenerator().generate(Image.open(need_real_image), resolution=96)
    counts = edge_use_counts(ovoxel_to_mesh(g.ovoxel).faces)
    assert (counts == 2).all()


@pytest.fixture
def need_real_image():
    from conftest import IMAGES, need_shared
    return need_shared(IMAGES / "04_1c359e94.webp")


def _read_glb(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions, normals, uvs, base colour texture) as an importer sees them."""
    import io

    import pygltflib

    g = pygltflib.GLTF2.load_from_bytes(data)
    blob = g.binary_blob()

    def view(i: int) -> bytes:
        bv = g.bufferViews[i]
        return blob[bv.byteOffset or 0:(bv.byteOffset or 0) + bv.byteLength]

    def acc(i: int) -> np.ndarray:
        a = g.accessors[i]
        n = {"VEC2": 2, "VEC3": 3}[a.type]
        return np.frombuffer(view(a.bufferView), np.float32, a.count * n).reshape(a.count, n)

    prim = g.meshes[0].primitives[0]
    tex = g.materials[prim.material].pbrMetallicRoughness.baseColorTexture.index
    img = np.asarray(Image.open(io.BytesIO(view(g.images[g.textures[tex].source].bufferView))).convert("RGB"))
    return acc(prim.attributes.POSITION), acc(prim.attributes.NORMAL), acc(prim.attributes.TEXCOORD_0), img


def test_exported_relief_faces_the_viewer_in_engines(ell, assert_valid_glb):
    """glTF: image up = +Y, image right = +X, the image side faces +Z (towards an engine camera)."""
    from propforge import ExportOptions, export_glb

    img, g = ell
    data = export_glb(g, ExportOptions(faces=3000, texture_size=256, height=2.0))
    assert_valid_glb(data)
    pos, nrm, uv, tex = _read_glb(data)
    ext = pos.max(0) - pos.min(0)
    assert ext[1] == pytest.approx(2.0, rel=1e-3) and pos[:, 1].min() == pytest.approx(0.0, abs=1e-4)
    assert ext[2] < 0.5 * ext[0]
    right = pos[:, 0] > pos[:, 0].min() + 0.8 * ext[0]
    assert (pos[right, 1] < 0.5 * ext[1]).all(), "the L's foot is at the bottom"
    h, w = tex.shape[:2]
    texel = tex[np.clip((uv[:, 1] * h).astype(int), 0, h - 1), np.clip((uv[:, 0] * w).astype(int), 0, w - 1)]
    texel = texel.astype(np.float32) / 255.0
    front, back = nrm[:, 2] > 0.9, nrm[:, 2] < -0.9
    assert front.sum() > 20 and back.sum() > 20
    lum = texel @ np.array([0.2126, 0.7152, 0.0722])
    assert lum[front].mean() > 1.1 * lum[back].mean(), "the image side is the front, the back is darker"
    # on the front, red follows +X and green follows -Y, as in the image (conftest.make_cutout)
    assert np.corrcoef(texel[front, 0], pos[front, 0])[0, 1] > 0.8
    assert np.corrcoef(texel[front, 1], -pos[front, 1])[0, 1] > 0.8
