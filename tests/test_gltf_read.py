"""glTF reader: small files written here with pygltflib, plus the real assets when ../shared exists."""
from __future__ import annotations

import base64
import io
import struct
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from PIL import Image

from conftest import ASSETS, need_shared
from propforge.errors import InputError
from propforge.gltf_read import load_gltf, normalize_to_unit_cube

TRI = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


class Builder:
    """Tiny glTF writer for tests: one binary buffer, accessors appended as views."""

    def __init__(self):
        self.g = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0"))
        self.blob = bytearray()

    def view(self, data: bytes) -> int:
        while len(self.blob) % 4:
            self.blob += b"\0"
        self.g.bufferViews.append(pygltflib.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data)))
        self.blob += data
        return len(self.g.bufferViews) - 1

    def accessor(self, arr: np.ndarray, ctype: int = pygltflib.FLOAT, normalized: bool = False) -> int:
        arr = np.ascontiguousarray(arr)
        kind = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}[arr.shape[1] if arr.ndim == 2 else 1]
        acc = pygltflib.Accessor(bufferView=self.view(arr.tobytes()), componentType=ctype, count=len(arr),
                                 type=kind, normalized=normalized or None)
        if ctype == pygltflib.FLOAT and kind == "VEC3":
            acc.min, acc.max = arr.min(0).tolist(), arr.max(0).tolist()
        self.g.accessors.append(acc)
        return len(self.g.accessors) - 1

    def mesh(self, pos, idx=None, uv=None, color=None, material=None, mode=4) -> int:
        attrs = pygltflib.Attributes(POSITION=self.accessor(np.asarray(pos, np.float32)))
        if uv is not None:
            attrs.TEXCOORD_0 = self.accessor(np.asarray(uv, np.float32))
        if color is not None:
            attrs.COLOR_0 = self.accessor(np.asarray(color))
        prim = pygltflib.Primitive(attributes=attrs, mode=mode, material=material,
                                   indices=None if idx is None else
                                   self.accessor(np.asarray(idx, np.uint16).reshape(-1), pygltflib.UNSIGNED_SHORT))
        self.g.meshes.append(pygltflib.Mesh(primitives=[prim]))
        return len(self.g.meshes) - 1

    def texture_material(self, rgba: np.ndarray, wrap=(10497, 10497), embed="view", **mat) -> int:
        data = png_bytes(rgba)
        if embed == "view":
            img = pygltflib.Image(bufferView=self.view(data), mimeType="image/png")
        elif embed == "datauri":
            img = pygltflib.Image(uri="data:image/png;base64," + base64.b64encode(data).decode())
        else:  # an external file name; the caller writes it
            img = pygltflib.Image(uri=embed)
            self.external_image = data
        self.g.images.append(img)
        self.g.samplers.append(pygltflib.Sampler(wrapS=wrap[0], wrapT=wrap[1]))
        self.g.textures.append(pygltflib.Texture(source=len(self.g.images) - 1, sampler=len(self.g.samplers) - 1))
        pbr = pygltflib.PbrMetallicRoughness(baseColorTexture=pygltflib.TextureInfo(index=len(self.g.textures) - 1),
                                             **{k: v for k, v in mat.items() if k in ("baseColorFactor", "metallicFactor", "roughnessFactor")})
        self.g.materials.append(pygltflib.Material(pbrMetallicRoughness=pbr, alphaMode=mat.get("alphaMode", "OPAQUE"),
                                                   alphaCutoff=mat.get("alphaCutoff"), doubleSided=mat.get("doubleSided", False)))
        return len(self.g.materials) - 1

    def node(self, **kw) -> int:
        self.g.nodes.append(pygltflib.Node(**kw))
        return len(self.g.nodes) - 1

    def save(self, path: Path, roots: list[int]) -> Path:
        self.g.scenes = [pygltflib.Scene(nodes=roots)]
        self.g.scene = 0
        if path.suffix == ".glb":
            self.g.buffers = [pygltflib.Buffer(byteLength=len(self.blob))]
            self.g.set_binary_blob(bytes(self.blob))
            self.g.save_binary(str(path))
        else:
            if getattr(self, "buffer_data_uri", False):
                uri = "data:application/octet-stream;base64," + base64.b64encode(bytes(self.blob)).decode()
            else:
                (path.parent / "data.bin").write_bytes(bytes(self.blob))
                uri = "data.bin"
            self.g.buffers = [pygltflib.Buffer(byteLength=len(self.blob), uri=uri)]
            if getattr(self, "external_image", None):
                (path.parent / self.g.images[-1].uri).write_bytes(self.external_image)
            self.g.save_json(str(path))
        return path


def test_node_hierarchy_trs_and_matrix(tmp_path):
    b = Builder()
    m = b.mesh(TRI, [0, 1, 2])
    # child: 90° about +Z then scale 2 (matrix, column-major); parent: translate (10, 0, 0)
    mat = np.array([[0, -2, 0, 0], [2, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]], float)
    child = b.node(mesh=m, matrix=mat.T.reshape(-1).tolist())
    q = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]
    parent = b.node(children=[child], translation=[10, 0, 0], rotation=q)   # another 90° about +Z
    meshes = load_gltf(b.save(tmp_path / "a.glb", [parent]))
    assert len(meshes) == 1
    # total: rotate 180° about Z, scale 2, then translate
    np.testing.assert_allclose(meshes[0].vertices, [[10, 0, 0], [8, 0, 0], [10, -2, 0]], atol=1e-5)
    np.testing.assert_array_equal(meshes[0].faces, [[0, 1, 2]])


def test_negative_scale_flips_winding(tmp_path):
    b = Builder()
    n = b.node(mesh=b.mesh(TRI, [0, 1, 2]), scale=[-1, 1, 1])
    (m,) = load_gltf(b.save(tmp_path / "a.glb", [n]))
    tri = m.vertices[m.faces[0]]
    normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
    assert normal[2] > 0          # still facing +Z as in the source after the mirror


def test_strip_fan_and_unindexed_primitives(tmp_path):
    b = Builder()
    quad = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    nodes = [b.node(mesh=b.mesh(quad, mode=5)), b.node(mesh=b.mesh(quad[[0, 1, 3, 2]], mode=6)),
             b.node(mesh=b.mesh(quad[:3])), b.node(mesh=b.mesh(quad, mode=1))]   # lines are skipped
    meshes = load_gltf(b.save(tmp_path / "a.glb", nodes))
    assert [len(m.faces) for m in meshes] == [2, 2, 1]
    for m in meshes:
        tri = m.vertices[m.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        assert (n[:, 2] > 0).all(), "consistent counter-clockwise winding"


@pytest.mark.parametrize("embed", ["view", "datauri", "tex.png"])
def test_texture_material_and_sampler(tmp_path, embed):
    rgba = np.random.default_rng(0).integers(0, 256, (8, 16, 4), dtype=np.uint8)
    b = Builder()
    mat = b.texture_material(rgba, wrap=(33071, 33648), embed=embed, baseColorFactor=[0.5, 1, 1, 0.8],
                             metallicFactor=0.3, roughnessFactor=0.6, alphaMode="MASK", alphaCutoff=0.25,
                             doubleSided=True)
    uv = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
    n = b.node(mesh=b.mesh(TRI, [0, 1, 2], uv=uv, material=mat))
    path = b.save(tmp_path / ("a.glb" if embed != "tex.png" else "a.gltf"), [n])
    (m,) = load_gltf(path)
    np.testing.assert_array_equal(m.material.base_color_texture, rgba)
    np.testing.assert_allclose(m.uvs, uv)
    assert m.material.base_color_sampler_wrap == (33071, 33648)
    assert m.material.base_color_factor == pytest.approx((0.5, 1, 1, 0.8))
    assert (m.material.metallic_factor, m.material.roughness_factor) == pytest.approx((0.3, 0.6))
    assert (m.material.alpha_mode, m.material.alpha_cutoff, m.material.double_sided) == ("MASK", 0.25, True)


def test_khr_texture_transform_applied_to_uvs(tmp_path):
    b = Builder()
    mat = b.texture_material(np.zeros((2, 2, 4), np.uint8))
    b.g.materials[mat].pbrMetallicRoughness.baseColorTexture.extensions = {
        "KHR_texture_transform": {"offset": [0.5, 0.25], "rotation": np.pi / 2, "scale": [2.0, 3.0]}}
    b.g.extensionsUsed = ["KHR_texture_transform"]
    uv = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
    (m,) = load_gltf(b.save(tmp_path / "a.glb", [b.node(mesh=b.mesh(TRI, [0, 1, 2], uv=uv, material=mat))]))
    # T·R·S with the rotation the implementations agree on (KhronosGroup/glTF#1563): u' = u·c + v·s,
    # v' = -u·s + v·c on the scaled coordinates, then the offset
    np.testing.assert_allclose(m.uvs, [[0.5, 0.25], [0.5, -1.75], [3.5, 0.25]], atol=1e-6)


def test_gltf_with_data_uri_buffer(tmp_path):
    b = Builder()
    b.buffer_data_uri = True
    n = b.node(mesh=b.mesh(TRI, [0, 1, 2]), translation=[0, 0, 5])
    (m,) = load_gltf(b.save(tmp_path / "inline.gltf", [n]))
    np.testing.assert_allclose(m.vertices, TRI + [0, 0, 5])
    assert not (tmp_path / "data.bin").exists()


def test_vertex_colours_normalised_ushort(tmp_path):
    b = Builder()
    col = np.array([[65535, 0, 0, 65535], [0, 32768, 0, 65535], [0, 0, 65535, 0]], np.uint16)
    n = b.node(mesh=b.mesh(TRI, [0, 1, 2], color=col))
    b.g.accessors[b.g.meshes[0].primitives[0].attributes.COLOR_0].componentType = pygltflib.UNSIGNED_SHORT
    b.g.accessors[b.g.meshes[0].primitives[0].attributes.COLOR_0].normalized = True
    (m,) = load_gltf(b.save(tmp_path / "a.glb", [n]))
    np.testing.assert_allclose(m.vertex_colors, col / 65535.0, atol=1e-6)


def test_normalize_to_unit_cube_axes_and_scale(tmp_path):
    b = Builder()
    box = np.array([[0, 0, 0], [2, 0, 0], [0, 4, 0], [0, 0, 1]], np.float32)   # tall along glTF +Y
    n = b.node(mesh=b.mesh(box, [0, 1, 2, 0, 2, 3]))
    meshes, center, scale = normalize_to_unit_cube(load_gltf(b.save(tmp_path / "a.glb", [n])))
    np.testing.assert_allclose(center, [1, 2, 0.5])
    assert scale == pytest.approx(0.99999 / 4)
    v = meshes[0].vertices
    assert np.abs(v).max() <= 0.5
    np.testing.assert_allclose(v.max(0) - v.min(0), np.array([2, 1, 4]) * scale, rtol=1e-6)  # glTF Y -> Z
    np.testing.assert_allclose(v[2], [(0 - 1) * scale, -(0 - 0.5) * scale, (4 - 2) * scale], rtol=1e-6)


def test_unreadable_inputs_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_gltf(tmp_path / "missing.glb")
    junk = tmp_path / "junk.glb"
    junk.write_bytes(b"this is not a glb at all")
    with pytest.raises(InputError, match="junk.glb"):
        load_gltf(junk)
    with pytest.raises(InputError, match=".glb or .gltf"):
        load_gltf(tmp_path / "image.png")
    b = Builder()
    good = b.save(tmp_path / "good.glb", [b.node(mesh=b.mesh(TRI, [0, 1, 2]))])
    data = good.read_bytes()
    cut = tmp_path / "cut.glb"
    cut.write_bytes(data[:len(data) - 20])
    with pytest.raises(InputError, match="cut.glb"):
        load_gltf(cut)
    b = Builder()
    lines = b.save(tmp_path / "lines.glb", [b.node(mesh=b.mesh(TRI, mode=1))])
    with pytest.raises(InputError, match="no triangle geometry"):
        load_gltf(lines)
    b = Builder()
    bad_idx = b.save(tmp_path / "idx.glb", [b.node(mesh=b.mesh(TRI, [0, 1, 7]))])
    with pytest.raises(InputError, match="indices outside"):
        load_gltf(bad_idx)
    g = tmp_path / "noimg.gltf"
    b = Builder()
    rgba = np.zeros((2, 2, 4), np.uint8)
    mat = b.texture_material(rgba, embed="missing.png")
    b.external_image = None
    b.save(g, [b.node(mesh=b.mesh(TRI, [0, 1, 2], uv=np.zeros((3, 2)), material=mat))])
    with pytest.raises(InputError, match="missing.png"):
        load_gltf(g)


def huge_png_header(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims width x height (a decompression bomb)."""
    import zlib

    data = bytearray(png_bytes(np.zeros((1, 1, 4), np.uint8)))
    struct.pack_into(">II", data, 16, width, height)                  # IHDR width/height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_texture_decompression_bomb_is_refused(tmp_path):
    b = Builder()
    mat = b.texture_material(np.zeros((1, 1, 4), np.uint8))
    b.g.bufferViews[b.g.images[0].bufferView] = pygltflib.BufferView(buffer=0, byteOffset=0, byteLength=0)
    b.g.images[0] = pygltflib.Image(bufferView=b.view(huge_png_header(30000, 30000)), mimeType="image/png")
    path = b.save(tmp_path / "bomb.glb", [b.node(mesh=b.mesh(TRI, [0, 1, 2], uv=np.zeros((3, 2)), material=mat))])
    with pytest.raises(InputError, match="30000x30000|too large"):
        load_gltf(path)


def test_compressed_assets_are_refused_by_name(tmp_path):
    b = Builder()
    b.g.extensionsUsed = b.g.extensionsRequired = ["KHR_draco_mesh_compression"]
    path = b.save(tmp_path / "draco.glb", [b.node(mesh=b.mesh(TRI, [0, 1, 2]))])
    with pytest.raises(InputError, match="KHR_draco_mesh_compression"):
        load_gltf(path)


def test_truncated_glb_header_lengths(tmp_path):
    """A GLB whose BIN chunk is shorter than the buffer it declares is reported, not read past."""
    b = Builder()
    path = b.save(tmp_path / "a.glb", [b.node(mesh=b.mesh(TRI, [0, 1, 2]))])
    data = bytearray(path.read_bytes())
    json_len = struct.unpack_from("<I", data, 12)[0]
    bin_off = 20 + json_len
    struct.pack_into("<I", data, bin_off, 8)            # claim a tiny BIN chunk
    data = data[:bin_off + 8 + 8]
    struct.pack_into("<I", data, 8, len(data))
    path.write_bytes(bytes(data))
    with pytest.raises(InputError):
        load_gltf(path)


def test_real_assets_load_posed_and_textured():
    need_shared(ASSETS)
    fox = load_gltf(ASSETS / "Fox.glb")                     # skinned: posed through its joints
    assert len(fox) == 1 and np.isfinite(fox[0].vertices).all()
    ext = fox[0].vertices.max(0) - fox[0].vertices.min(0)
    assert ext[1] > 50 and ext[2] > 100                      # a ~1 m fox in centimetres, not collapsed
    vc = load_gltf(ASSETS / "VertexColorTest.glb")
    assert sum(m.vertex_colors is not None for m in vc) == 1
    truck = load_gltf(ASSETS / "CesiumMilkTruck.glb")
    textured = [m for m in truck if m.material.base_color_texture is not None]
    assert textured and all(m.uvs is not None for m in textured)
    assert textured[0].material.base_color_texture.shape[2] == 4
    spheres = load_gltf(ASSETS / "MetalRoughSpheresNoTextures.glb")
    metals = sorted({round(m.material.metallic_factor, 3) for m in spheres})
    assert len(metals) > 5                                   # the metallic sweep survives


def test_glb_to_ovoxel_end_to_end_frame_and_colours(tmp_path):
    """A textured floor quad (glTF XZ plane, +Y up) -> Z-up unit cube -> O-Voxel colours = texels."""
    from propforge.ovoxel import gltf_to_ovoxel

    cells, px = 4, 8
    palette = np.array([[255, 0, 0, 255], [0, 0, 255, 255], [0, 255, 0, 255], [255, 255, 255, 255]], np.uint8)
    ii, jj = np.mgrid[0:cells * px, 0:cells * px] // px
    tex = palette[(ii + 2 * jj) % 4]
    b = Builder()
    mat = b.texture_material(tex)
    pos = np.array([[-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]], np.float32)
    uv = (pos[:, [0, 2]] + 1) / 2                      # u along +X, v along +Z
    n = b.node(mesh=b.mesh(pos, [0, 2, 1, 0, 3, 2], uv=uv, material=mat), translation=[5, 1, 0])
    R = 32
    ov, centre, scale = gltf_to_ovoxel(b.save(tmp_path / "floor.glb", [n]), R)
    np.testing.assert_allclose(centre, [5, 1, 0])
    dual = (ov.coords + ov.offsets) / R - 0.5
    np.testing.assert_allclose(dual[:, 2], 0.0, atol=1e-6)            # the floor is horizontal in Z-up
    c = (ov.coords + 0.5) / R - 0.5
    gx, gz = c[:, 0] / scale, -c[:, 1] / scale                        # back to the glTF frame
    u, v = (gx + 1) / 2, (gz + 1) / 2
    cell_u, cell_v = u * cells, v * cells
    far = ((np.abs(cell_u - np.round(cell_u)) > 0.15) & (np.abs(cell_v - np.round(cell_v)) > 0.15)
           & (u > 0) & (u < 1) & (v > 0) & (v < 1))
    assert far.sum() > 200
    want = tex[(v[far] * tex.shape[0]).astype(int), (u[far] * tex.shape[1]).astype(int), :3] / 255
    np.testing.assert_allclose(ov.attrs[far, :3], want, atol=1e-6)
