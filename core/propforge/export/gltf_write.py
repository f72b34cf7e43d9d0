"""GLB writer (pygltflib) for engine-ready props: +Y up, metres, pivot at bottom centre (spec §0, §4.9-4.10).

Differences from the reference writer, chosen for engines: a real height in metres instead of the
unit cube, the pivot where a prop stands, one sampler that clamps (atlas textures), an alpha mode
decided from the baked alpha, and WebP only as an optional extension with a PNG fallback image,
because Unity's glTFast and Blender 3.x do not read WebP-only files.
"""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pygltflib as gl
from PIL import Image

from ..types import Mesh, TexturedMesh

ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def to_gltf_frame(v: np.ndarray) -> np.ndarray:
    """Internal Z-up (x, y, z) -> glTF Y-up (x, z, -y): a proper rotation, winding preserved."""
    v = np.asarray(v)
    return np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1)


def placement(v: np.ndarray, height: float) -> tuple[np.ndarray, float]:
    """(offset, scale) that ``place`` applies: Y extent -> ``height`` metres, min Y at 0, X/Z centred.

    A flat prop lying in the ground plane (a rug, a decal) has no height to speak of: then its
    largest extent becomes ``height`` instead of blowing the sheet up to infinity.
    """
    v = np.asarray(v, np.float64)
    lo, hi = v.min(0), v.max(0)
    extent = hi[1] - lo[1]
    if extent <= 1e-3 * (hi - lo).max():
        extent = (hi - lo).max()
    scale = height / extent if extent > 0 else 1.0
    return np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2]), float(scale)


def place(v: np.ndarray, height: float, frame: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Scale and move ``v`` (glTF frame) by ``frame`` (default: ``placement(v, height)``)."""
    offset, scale = frame if frame is not None else placement(v, height)
    return ((np.asarray(v, np.float64) - offset) * scale).astype(np.float32)


def choose_alpha_mode(alpha: np.ndarray, coverage: np.ndarray) -> tuple[str, float]:
    """OPAQUE unless alpha is really used; MASK when it is nearly binary, BLEND when translucent.

    ``alpha`` uint8 texels, judged only where ``coverage`` is set (gutters are fill, not surface).
    """
    a = alpha[coverage] if coverage.any() else alpha.reshape(-1)
    see_through = a < 250
    if a.size == 0 or see_through.mean() < 1e-3:
        return "OPAQUE", 0.5
    partial = (a >= 13) & (a < 243)
    return ("MASK", 0.5) if partial.sum() <= 0.25 * see_through.sum() else ("BLEND", 0.5)


def encode_image(img: np.ndarray, fmt: str) -> bytes:
    """PNG (lossless), JPEG (q 92, no chroma subsampling: packed channels stay independent), WebP (q 90)."""
    buf = io.BytesIO()
    pil = Image.fromarray(img)
    if fmt == "png":
        pil.save(buf, format="PNG", compress_level=4)
    elif fmt == "jpeg":
        pil.convert("RGB").save(buf, format="JPEG", quality=92, subsampling=0)
    elif fmt == "webp":
        pil.save(buf, format="WEBP", quality=90, method=4)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


class _Blob:
    """Binary chunk builder: 4-byte aligned buffer views."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.views: list[gl.BufferView] = []

    def add(self, data: bytes, target: int | None = None) -> int:
        pad = (-self.size) % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        self.views.append(gl.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data), target=target))
        self.parts.append(data)
        self.size += len(data)
        return len(self.views) - 1

    def bytes(self) -> bytes:
        return b"".join(self.parts) + b"\0" * ((-self.size) % 4)


def _accessor(blob: _Blob, accessors: list, arr: np.ndarray, ctype: int, kind: str, target: int,
              minmax: bool = False) -> int:
    view = blob.add(arr.tobytes(), target)
    acc = gl.Accessor(bufferView=view, componentType=ctype, count=len(arr), type=kind)
    if minmax:
        acc.min = arr.min(0).tolist()
        acc.max = arr.max(0).tolist()
    accessors.append(acc)
    return len(accessors) - 1


def _textures(gltf: gl.GLTF2, blob: _Blob, images: list[np.ndarray], fmt: str, uses_alpha: bool
              ) -> tuple[list[int], list[str]]:
    """Images + textures for (base colour, metallic-roughness); returns texture ids and notes."""
    notes = []
    tex_ids = []
    for i, img in enumerate(images):
        is_base = i == 0
        primary = "png" if fmt == "webp" or (fmt == "jpeg" and is_base and uses_alpha) else fmt
        if fmt == "jpeg" and is_base and uses_alpha:
            notes.append("base colour texture kept as PNG: JPEG cannot store the alpha this material uses")
        src = _add_image(gltf, blob, img, primary)
        tex = gl.Texture(sampler=0, source=src)
        if fmt == "webp":
            tex.extensions = {"EXT_texture_webp": {"source": _add_image(gltf, blob, img, "webp")}}
        gltf.textures.append(tex)
        tex_ids.append(len(gltf.textures) - 1)
    if fmt == "webp":
        gltf.extensionsUsed = ["EXT_texture_webp"]
        notes.append("WebP textures via EXT_texture_webp (optional) with PNG fallback images")
    return tex_ids, notes


def _add_image(gltf: gl.GLTF2, blob: _Blob, img: np.ndarray, fmt: str) -> int:
    view = blob.add(encode_image(img, fmt))
    gltf.images.append(gl.Image(bufferView=view, mimeType=MIME[fmt]))
    return len(gltf.images) - 1


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _mesh_accessors(blob: _Blob, acc: list, vertices: np.ndarray, faces: np.ndarray, frame: tuple[np.ndarray, float],
                    normals: np.ndarray | None = None, uvs: np.ndarray | None = None) -> gl.Primitive:
    """Index + attribute accessors of one triangle primitive (material left for the caller)."""
    v = place(to_gltf_frame(vertices), 0.0, frame)
    idx_type = UNSIGNED_SHORT if len(v) < 65535 else UNSIGNED_INT
    idx = np.asarray(faces).astype(np.uint16 if idx_type == UNSIGNED_SHORT else np.uint32).reshape(-1, 1)
    i_idx = _accessor(blob, acc, idx, idx_type, "SCALAR", ELEMENT_ARRAY_BUFFER)
    attrs = gl.Attributes(POSITION=_accessor(blob, acc, v, FLOAT, "VEC3", ARRAY_BUFFER, minmax=True))
    if normals is not None:
        attrs.NORMAL = _accessor(blob, acc, to_gltf_frame(normals).astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER)
    if uvs is not None:
        attrs.TEXCOORD_0 = _accessor(blob, acc, np.ascontiguousarray(uvs, np.float32), FLOAT, "VEC2", ARRAY_BUFFER)
    return gl.Primitive(attributes=attrs, indices=i_idx, material=None, mode=4)


def _with_material(prim: gl.Primitive, material: int | None) -> gl.Primitive:
    prim.material = material
    return prim


def write_glb(tm: TexturedMesh, texture_format: str = "png", height: float = 1.0,
              extras: dict[str, Any] | None = None, generator: str = "PropForge",
              lods: list[TexturedMesh] | tuple = (), collision: Mesh | None = None,
              convex_collision: bool = True, name: str = "prop") -> bytes:
    """GLB bytes for one textured mesh in the internal frame (Z-up, unit cube) and one PBR material.

    With ``lods`` (LOD1.. meshes in ``tm``'s UV atlas, sharing its material) or a ``collision`` mesh,
    the scene is one root node ``name`` with sibling children ``name_LOD0``, ``name_LOD1``, ... and
    ``name-convcolonly`` (``convex_collision``) or ``name-colonly``: the node names the engine
    importers read (docs/http-api.md, "Result GLB"). The collision mesh has no material and no
    attributes beyond POSITION. All meshes share LOD0's placement (pivot, scale).
    """
    mat = tm.material
    frame = placement(to_gltf_frame(tm.vertices), height)
    gltf = gl.GLTF2(asset=gl.Asset(generator=generator, extras=_json_safe(extras or {})))
    blob = _Blob()
    acc: list[gl.Accessor] = []
    levels = [tm, *lods]
    level_prims = [_mesh_accessors(blob, acc, m.vertices, m.faces, frame, m.normals, m.uvs) for m in levels]
    col_prim = None if collision is None else _mesh_accessors(blob, acc, collision.vertices, collision.faces, frame)
    gltf.samplers = [gl.Sampler(magFilter=LINEAR, minFilter=LINEAR_MIPMAP_LINEAR,
                                wrapS=CLAMP_TO_EDGE, wrapT=CLAMP_TO_EDGE)]
    uses_alpha = mat.alpha_mode != "OPAQUE"
    base = mat.base_color_texture if uses_alpha else mat.base_color_texture[..., :3]
    (t_base, t_mr), notes = _textures(gltf, blob, [base, mat.metallic_roughness_texture],
                                      texture_format, uses_alpha)
    if notes:
        gltf.asset.extras = {**gltf.asset.extras, "export_notes": notes}
    pbr = gl.PbrMetallicRoughness(baseColorTexture=gl.TextureInfo(index=t_base),
                                  metallicRoughnessTexture=gl.TextureInfo(index=t_mr),
                                  baseColorFactor=list(mat.base_color_factor),
                                  metallicFactor=mat.metallic_factor, roughnessFactor=mat.roughness_factor)
    material = gl.Material(name="PropForgeMaterial", pbrMetallicRoughness=pbr, alphaMode=mat.alpha_mode,
                           doubleSided=mat.double_sided)
    material.alphaCutoff = mat.alpha_cutoff if mat.alpha_mode == "MASK" else None
    gltf.materials = [material]
    gltf.accessors = acc
    if not lods and collision is None:          # the plain prop: one mesh, one node
        gltf.meshes = [gl.Mesh(name=name, primitives=[_with_material(level_prims[0], 0)])]
        gltf.nodes = [gl.Node(name=name, mesh=0)]
    else:
        names = [f"{name}_LOD{k}" for k in range(len(levels))]
        gltf.meshes = [gl.Mesh(name=n, primitives=[_with_material(a, 0)]) for n, a in zip(names, level_prims)]
        if col_prim is not None:
            names.append(f"{name}-convcolonly" if convex_collision else f"{name}-colonly")
            gltf.meshes.append(gl.Mesh(name=names[-1], primitives=[_with_material(col_prim, None)]))
        gltf.nodes = [gl.Node(name=name, children=list(range(1, len(names) + 1)))]
        gltf.nodes += [gl.Node(name=n, mesh=i) for i, n in enumerate(names)]
    gltf.scenes = [gl.Scene(nodes=[0])]
    gltf.scene = 0
    data = blob.bytes()
    gltf.bufferViews = blob.views
    gltf.buffers = [gl.Buffer(byteLength=len(data))]
    gltf.set_binary_blob(data)
    return b"".join(gltf.save_to_bytes())
