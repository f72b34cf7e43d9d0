"""Read .glb/.gltf assets into TexturedMesh lists (glTF frame, +Y up, metres), and normalise them.

Why our own walker on top of pygltflib: pygltflib parses JSON and buffers but does not decode
accessors, node transforms, skins or textures. This module does exactly what the voxeliser and the
round-trip tests need: the default scene as displayed (node matrices / TRS, skinning at the scene's
pose, default morph weights), one TexturedMesh per triangle primitive, PBR factors and the
baseColor / metallicRoughness textures decoded with Pillow from embedded buffer views, data URIs or
files next to a .gltf.

Supported: primitive modes TRIANGLES / TRIANGLE_STRIP / TRIANGLE_FAN (points and lines are skipped),
sparse accessors, normalised integer attributes, COLOR_0 (VEC3/VEC4), sampler wrap modes, alphaMode
and alphaCutoff, doubleSided, KHR_texture_transform on the base-colour texture (applied to the UVs;
the metallic-roughness texture is assumed to share the base colour's UV set and transform),
EXT_texture_webp sources. Not read: normal/occlusion/emissive maps and KHR_materials_* extensions
(transmission, sheen, ...), which the O-Voxel PBR layout cannot hold; KTX2/Basis images (clear error).
"""
from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .types import PBRMaterial, TexturedMesh

_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_NORM_DIV = {np.int8: 127.0, np.uint8: 255.0, np.int16: 32767.0, np.uint16: 65535.0, np.uint32: 4294967295.0}
MAX_TEXTURE_PIXELS = 16384 * 8192    # decompression-bomb guard for embedded images (checked before decoding)
REPEAT, CLAMP_TO_EDGE, MIRRORED_REPEAT = 10497, 33071, 33648
#: Required extensions that change how buffers or images decode; reading past them would give garbage.
UNSUPPORTED_REQUIRED = {"KHR_draco_mesh_compression", "EXT_meshopt_compression", "KHR_meshopt_compression",
                        "KHR_texture_basisu", "MSFT_texture_dds"}


class _Doc:
    """A parsed glTF plus its raw buffers; caches decoded images (and their RGB channels)."""

    def __init__(self, path: Path):
        import pygltflib

        self.path = path
        try:
            with open(path, "rb") as f:
                head = f.read(4)
            self.gltf = pygltflib.GLTF2().load(str(path))
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except Exception as e:  # pygltflib raises assorted errors on junk input
            raise InputError(f"{path}: not a readable glTF file ({type(e).__name__}: {e})") from None
        if self.gltf is None or (path.suffix.lower() == ".glb" and head != b"glTF"):
            raise InputError(f"{path}: not a readable glTF file (no GLB header)")
        unsupported = sorted(set(self.gltf.extensionsRequired or []) & UNSUPPORTED_REQUIRED)
        if unsupported:
            raise InputError(f"{path}: requires {', '.join(unsupported)}, which PropForge cannot decode; "
                             "re-export the asset without mesh/texture compression")
        self.buffers = [self._buffer_bytes(i, b) for i, b in enumerate(self.gltf.buffers)]
        self._images: dict[int, np.ndarray] = {}
        self._images_rgb: dict[int, np.ndarray] = {}

    def _buffer_bytes(self, i: int, buf) -> bytes:
        uri = buf.uri
        if uri is None:
            blob = self.gltf.binary_blob()
            if blob is None:
                raise InputError(f"{self.path}: buffer {i} has no data (truncated GLB?)")
            data = bytes(blob)
        else:
            data = self._uri_bytes(uri, f"buffer {i}")
        if len(data) < (buf.byteLength or 0):
            raise InputError(f"{self.path}: buffer {i} holds {len(data)} bytes, "
                             f"{buf.byteLength} declared (truncated file?)")
        return data

    def _uri_bytes(self, uri: str, what: str) -> bytes:
        if uri.startswith("data:"):
            try:
                return base64.b64decode(uri.split(",", 1)[1])
            except Exception as e:
                raise InputError(f"{self.path}: {what} has a bad data URI ({e})") from None
        from urllib.parse import unquote

        file = self.path.parent / unquote(uri)
        try:
            return file.read_bytes()
        except OSError as e:
            raise InputError(f"{self.path}: {what} refers to {file}, which cannot be read ({e.strerror})") from None

    def view_bytes(self, index: int) -> tuple[bytes, int, int | None]:
        """(buffer bytes, byte offset, byte stride) of a buffer view, bounds-checked."""
        bv = self.gltf.bufferViews[index]
        data = self.buffers[bv.buffer]
        off = bv.byteOffset or 0
        if off + bv.byteLength > len(data):
            raise InputError(f"{self.path}: bufferView {index} runs past the end of its buffer (truncated file?)")
        return data, off, bv.byteStride

    def accessor(self, index: int, as_float: bool = True) -> np.ndarray:
        """Decode accessor ``index`` to [count, ncomp] (float64 if ``as_float``, honouring ``normalized``)."""
        acc = self.gltf.accessors[index]
        dtype = np.dtype(_DTYPES[acc.componentType]).newbyteorder("<")
        ncomp = _NCOMP[acc.type]
        if acc.bufferView is None:
            out = np.zeros((acc.count, ncomp), dtype)
        else:
            data, off, stride = self.view_bytes(acc.bufferView)
            off += acc.byteOffset or 0
            stride = stride or dtype.itemsize * ncomp
            end = off + stride * (acc.count - 1) + dtype.itemsize * ncomp if acc.count else off
            if end > len(data) or end > self.view_end(acc.bufferView):
                raise InputError(f"{self.path}: accessor {index} runs past its bufferView (truncated file?)")
            out = np.ndarray((acc.count, ncomp), dtype, buffer=data, offset=off,
                             strides=(stride, dtype.itemsize)).copy()
        if acc.sparse is not None and acc.sparse.count:
            out = self._apply_sparse(acc, out, dtype, ncomp)
        if not as_float:
            return out
        res = out.astype(np.float64)
        if acc.normalized and dtype.type in _NORM_DIV:
            res = np.maximum(res / _NORM_DIV[dtype.type], -1.0)
        return res

    def view_end(self, index: int) -> int:
        bv = self.gltf.bufferViews[index]
        return (bv.byteOffset or 0) + bv.byteLength

    def _apply_sparse(self, acc, out: np.ndarray, dtype: np.dtype, ncomp: int) -> np.ndarray:
        sp = acc.sparse
        idt = np.dtype(_DTYPES[sp.indices.componentType]).newbyteorder("<")
        data, off, _ = self.view_bytes(sp.indices.bufferView)
        idx = np.frombuffer(data, idt, sp.count, off + (sp.indices.byteOffset or 0)).astype(np.int64)
        data, off, _ = self.view_bytes(sp.values.bufferView)
        vals = np.frombuffer(data, dtype, sp.count * ncomp, off + (sp.values.byteOffset or 0)).reshape(-1, ncomp)
        if len(idx) and (idx.max() >= len(out) or idx.min() < 0):
            raise InputError(f"{self.path}: sparse accessor indices out of range")
        out = out.copy()
        out[idx] = vals
        return out

    def image(self, index: int) -> np.ndarray:
        """Decoded image ``index`` as uint8 [H, W, 4] RGBA (cached)."""
        if index not in self._images:
            self._images[index] = _decode_image(self._image_bytes(index), f"{self.path}: image {index}")
        return self._images[index]

    def image_rgb(self, index: int) -> np.ndarray:
        """Image ``index``'s RGB channels as a contiguous uint8 [H, W, 3] (cached).

        Primitives whose materials share an image then share one array, so per-array caches
        downstream (the voxeliser's mip pyramids, keyed by id) build it once.
        """
        if index not in self._images_rgb:
            self._images_rgb[index] = np.ascontiguousarray(self.image(index)[..., :3])
        return self._images_rgb[index]

    def _image_bytes(self, index: int) -> bytes:
        img = self.gltf.images[index]
        if img.bufferView is not None:
            data, off, _ = self.view_bytes(img.bufferView)
            return data[off:self.view_end(img.bufferView)]
        if img.uri is None:
            raise InputError(f"{self.path}: image {index} has neither a bufferView nor a uri")
        return self._uri_bytes(img.uri, f"image {index}")


def _decode_image(data: bytes, what: str) -> np.ndarray:
    """Decode PNG/JPEG/WebP bytes to RGBA uint8 with a size guard; 16-bit and palette images handled."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.width * im.height > MAX_TEXTURE_PIXELS:
                raise InputError(f"{what} is {im.width}x{im.height} pixels, above the limit of "
                                 f"{MAX_TEXTURE_PIXELS} pixels")
            im.load()
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"{what} is too large to decode safely ({e})") from None
    except Exception as e:
        raise InputError(f"{what} cannot be decoded ({type(e).__name__}: {e}); "
                         "supported texture formats: PNG, JPEG, WebP") from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()


# ---------------------------------------------------------------- node transforms

def _quat_to_matrix(q: list[float]) -> np.ndarray:
    x, y, z, w = np.asarray(q, np.float64) / max(np.linalg.norm(q), 1e-12)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def node_local_matrix(node) -> np.ndarray:
    """4x4 local transform from ``matrix`` (column-major) or T·R·S."""
    if node.matrix is not None and len(node.matrix) == 16:
        return np.asarray(node.matrix, np.float64).reshape(4, 4).T
    m = np.eye(4)
    m[:3, :3] = _quat_to_matrix(node.rotation or [0, 0, 0, 1]) * np.asarray(node.scale or [1, 1, 1], np.float64)
    m[:3, 3] = node.translation or [0, 0, 0]
    return m


def _scene_roots(gltf) -> list[int]:
    if gltf.scenes:
        scene = gltf.scenes[gltf.scene if gltf.scene is not None else 0]
        return list(scene.nodes or [])
    children = {c for n in gltf.nodes for c in (n.children or [])}
    return [i for i in range(len(gltf.nodes)) if i not in children]


def world_matrices(gltf, path: Path) -> dict[int, np.ndarray]:
    """Global 4x4 matrix of every node reachable from the default scene (cycle-checked)."""
    out: dict[int, np.ndarray] = {}
    stack = [(r, np.eye(4)) for r in _scene_roots(gltf)]
    while stack:
        i, parent = stack.pop()
        if i in out or i >= len(gltf.nodes):
            raise InputError(f"{path}: node {i} is referenced twice or does not exist (invalid node tree)")
        out[i] = parent @ node_local_matrix(gltf.nodes[i])
        stack.extend((c, out[i]) for c in (gltf.nodes[i].children or []))
    return out


# ---------------------------------------------------------------- primitives

def _triangles(mode: int, idx: np.ndarray) -> np.ndarray | None:
    """Index list of a primitive -> [F, 3] triangles; None for points/lines."""
    if mode == 4:
        n = len(idx) // 3 * 3
        return idx[:n].reshape(-1, 3)
    if mode == 5 and len(idx) >= 3:   # strip: flip every other triangle to keep the winding
        i = np.arange(len(idx) - 2)
        even = (i % 2 == 0)[:, None]
        return np.where(even, np.stack([idx[i], idx[i + 1], idx[i + 2]], 1),
                        np.stack([idx[i + 1], idx[i], idx[i + 2]], 1))
    if mode == 6 and len(idx) >= 3:
        i = np.arange(1, len(idx) - 1)
        return np.stack([np.full_like(i, idx[0]), idx[i], idx[i + 1]], 1)
    return None


def _skin_matrices(doc: _Doc, node, prim, world: dict[int, np.ndarray]) -> np.ndarray:
    """Per-vertex 4x4 skinning matrices at the scene's pose (glTF skinning: Σ w·G_joint·IBM)."""
    skin = doc.gltf.skins[node.skin]
    nj = len(skin.joints)
    ibm = (doc.accessor(skin.inverseBindMatrices).reshape(nj, 4, 4).transpose(0, 2, 1)
           if skin.inverseBindMatrices is not None else np.tile(np.eye(4), (nj, 1, 1)))
    joint = np.stack([world.get(j, np.eye(4)) for j in skin.joints]) @ ibm
    joints = doc.accessor(prim.attributes.JOINTS_0, as_float=False).astype(np.int64)
    weights = doc.accessor(prim.attributes.WEIGHTS_0)
    if joints.max(initial=0) >= nj:
        raise InputError(f"{doc.path}: JOINTS_0 refers to joint {joints.max()} of a {nj}-joint skin")
    w = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
    return np.einsum("vk,vkij->vij", w, joint[joints])


def _morph(doc: _Doc, mesh, node, prim, name: str, base: np.ndarray) -> np.ndarray:
    """Apply the default morph-target weights (node weights override mesh weights)."""
    weights = getattr(node, "weights", None) or getattr(mesh, "weights", None)
    if not weights or not prim.targets:
        return base
    out = base.copy()
    for w, target in zip(weights, prim.targets):
        acc = target.get(name) if isinstance(target, dict) else getattr(target, name, None)
        if w and acc is not None:
            out += w * doc.accessor(acc)
    return out


def _uv_transform(uv: np.ndarray, ext: dict) -> np.ndarray:
    """KHR_texture_transform: uv' = T · R · S · uv."""
    ox, oy = ext.get("offset", [0.0, 0.0])
    sx, sy = ext.get("scale", [1.0, 1.0])
    r = ext.get("rotation", 0.0)
    c, s = np.cos(r), np.sin(r)
    u, v = uv[:, 0] * sx, uv[:, 1] * sy
    return np.stack([c * u + s * v + ox, -s * u + c * v + oy], 1)


def _material(doc: _Doc, index: int | None) -> tuple[PBRMaterial, int, dict | None]:
    """PBRMaterial, the base-colour TEXCOORD set, and its KHR_texture_transform (or None)."""
    mat = PBRMaterial(double_sided=False)
    if index is None:
        return mat, 0, None
    m = doc.gltf.materials[index]
    pbr = m.pbrMetallicRoughness
    mat.alpha_mode = m.alphaMode or "OPAQUE"
    mat.alpha_cutoff = 0.5 if m.alphaCutoff is None else float(m.alphaCutoff)
    mat.double_sided = bool(m.doubleSided)
    texcoord, transform = 0, None
    if pbr is not None:
        mat.base_color_factor = tuple(float(x) for x in (pbr.baseColorFactor or [1, 1, 1, 1]))
        mat.metallic_factor = 1.0 if pbr.metallicFactor is None else float(pbr.metallicFactor)
        mat.roughness_factor = 1.0 if pbr.roughnessFactor is None else float(pbr.roughnessFactor)
        if pbr.baseColorTexture is not None:
            mat.base_color_texture, mat.base_color_sampler_wrap = _texture(doc, pbr.baseColorTexture.index)
            texcoord = pbr.baseColorTexture.texCoord or 0
            transform = (pbr.baseColorTexture.extensions or {}).get("KHR_texture_transform")
            if transform is not None:
                texcoord = transform.get("texCoord", texcoord)
        if pbr.metallicRoughnessTexture is not None:
            source, _ = _texture_source(doc, pbr.metallicRoughnessTexture.index)
            mat.metallic_roughness_texture = doc.image_rgb(source)
    return mat, texcoord, transform


def _texture(doc: _Doc, index: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decoded RGBA image and (wrapS, wrapT) of texture ``index``."""
    source, wrap = _texture_source(doc, index)
    return doc.image(source), wrap


def _texture_source(doc: _Doc, index: int) -> tuple[int, tuple[int, int]]:
    """Image index and (wrapS, wrapT) of texture ``index`` (an extension may name the source)."""
    tex = doc.gltf.textures[index]
    source = tex.source
    if source is None:
        for ext in (tex.extensions or {}).values():
            if isinstance(ext, dict) and "source" in ext:
                source = ext["source"]
                break
    if source is None:
        raise InputError(f"{doc.path}: texture {index} has no image source")
    wrap = (REPEAT, REPEAT)
    if tex.sampler is not None:
        s = doc.gltf.samplers[tex.sampler]
        wrap = (s.wrapS or REPEAT, s.wrapT or REPEAT)
    return source, wrap


def _primitive(doc: _Doc, mesh, node, prim, matrix: np.ndarray, world: dict) -> TexturedMesh | None:
    a = prim.attributes
    if a.POSITION is None:
        return None
    pos = _morph(doc, mesh, node, prim, "POSITION", doc.accessor(a.POSITION))
    idx = (doc.accessor(prim.indices, as_float=False).reshape(-1).astype(np.int64)
           if prim.indices is not None else np.arange(len(pos)))
    faces = _triangles(4 if prim.mode is None else prim.mode, idx)
    if faces is None or len(faces) == 0:
        return None
    if faces.max() >= len(pos) or faces.min() < 0:
        raise InputError(f"{doc.path}: mesh '{mesh.name}' has indices outside its {len(pos)} vertices")
    nrm = _morph(doc, mesh, node, prim, "NORMAL", doc.accessor(a.NORMAL)) if a.NORMAL is not None else None
    if node.skin is not None and a.JOINTS_0 is not None and a.WEIGHTS_0 is not None:
        skin = _skin_matrices(doc, node, prim, world)
        pos = np.einsum("vij,vj->vi", skin[:, :3, :3], pos) + skin[:, :3, 3]
        lin = skin[:, :3, :3]
        if nrm is not None:
            nrm = np.einsum("vij,vj->vi", np.linalg.inv(lin).transpose(0, 2, 1), nrm)
        flip = np.median(np.linalg.det(lin)) < 0
    else:
        lin = matrix[:3, :3]
        pos = pos @ lin.T + matrix[:3, 3]
        if nrm is not None:
            nrm = nrm @ np.linalg.inv(lin)      # inverse-transpose, applied to row vectors
        flip = np.linalg.det(lin) < 0
    if flip:                                    # mirrored transform: keep counter-clockwise = front
        faces = faces[:, [0, 2, 1]]
    if nrm is not None:
        nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    mat, texcoord, transform = _material(doc, prim.material)
    uv_acc = getattr(a, f"TEXCOORD_{texcoord}", None)
    uvs = doc.accessor(uv_acc) if uv_acc is not None else None
    if uvs is not None and transform is not None:
        uvs = _uv_transform(uvs, transform)
    colors = None
    if a.COLOR_0 is not None:
        colors = doc.accessor(a.COLOR_0)
        if colors.shape[1] == 3:
            colors = np.concatenate([colors, np.ones((len(colors), 1))], 1)
    return TexturedMesh(pos.astype(np.float32), faces.astype(np.int32),
                        uvs=None if uvs is None else uvs.astype(np.float32),
                        normals=None if nrm is None else nrm.astype(np.float32),
                        vertex_colors=None if colors is None else colors.astype(np.float32), material=mat)


def load_gltf(path: str | Path) -> list[TexturedMesh]:
    """All triangle primitives of the default scene, posed and in the glTF frame (+Y up).

    Raises InputError for a missing, unreadable, truncated or geometry-free file.
    """
    path = Path(path)
    if path.suffix.lower() not in (".glb", ".gltf"):
        raise InputError(f"{path}: expected a .glb or .gltf file")
    doc = _Doc(path)
    try:
        world = world_matrices(doc.gltf, path)
        out = []
        for i in sorted(world):
            node = doc.gltf.nodes[i]
            if node.mesh is None:
                continue
            mesh = doc.gltf.meshes[node.mesh]
            for prim in mesh.primitives:
                tm = _primitive(doc, mesh, node, prim, world[i], world)
                if tm is not None:
                    out.append(tm)
    except (IndexError, KeyError, TypeError, AttributeError, ValueError, json.JSONDecodeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: malformed glTF ({type(e).__name__}: {e})") from None
    if not out:
        raise InputError(f"{path}: the default scene contains no triangle geometry")
    return out


# ---------------------------------------------------------------- normalisation (generator.md §6.7 step 2)

def mesh_bounds(meshes: list[TexturedMesh]) -> tuple[np.ndarray, np.ndarray]:
    """AABB (min, max) over all vertices actually used by faces."""
    pts = np.concatenate([m.vertices[np.unique(m.faces)] for m in meshes if len(m.faces)])
    return pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)


def normalize_to_unit_cube(meshes: list[TexturedMesh]) -> tuple[list[TexturedMesh], np.ndarray, float]:
    """glTF-frame meshes -> internal Z-up frame inside [-0.5, 0.5]^3.

    centre = AABB centre (glTF frame), scale = 0.99999 / longest side; p' = R·(p − centre)·scale with
    (x, y, z) -> (x, −z, y), a proper rotation (winding kept). Returns (meshes, centre, scale); the
    inverse is p = R⁻¹ p' / scale + centre.
    """
    if not meshes:
        raise InputError("no meshes to normalise")
    lo, hi = mesh_bounds(meshes)
    center = (lo + hi) / 2
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise InputError("the mesh has zero size (all vertices coincide) or non-finite coordinates")
    scale = 0.99999 / extent
    out = []
    for m in meshes:
        p = (m.vertices.astype(np.float64) - center) * scale
        n = m.normals
        out.append(TexturedMesh(
            np.stack([p[:, 0], -p[:, 2], p[:, 1]], 1).astype(np.float32), m.faces.copy(),
            uvs=None if m.uvs is None else m.uvs.copy(),
            normals=None if n is None else np.stack([n[:, 0], -n[:, 2], n[:, 1]], 1).astype(np.float32),
            vertex_colors=None if m.vertex_colors is None else m.vertex_colors.copy(), material=m.material))
    return out, center, scale
