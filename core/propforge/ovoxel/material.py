"""Material evaluation on a textured mesh: what colour, metallic, roughness and alpha a surface point has.

glTF semantics (sRGB base-colour texture times a linear factor and COLOR_0, metallicRoughness packed
G = roughness, B = metallic), bilinear texture lookups with the sampler's wrap mode, and a
straight (not alpha-premultiplied) box-filtered mip pyramid for lookups with a footprint. Used by the
voxeliser (spec §3.4) and by the round-trip measurements as the ground truth.
"""
from __future__ import annotations

import numpy as np

from ..types import ATTR_CHANNELS, TexturedMesh


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, None)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def _wrap(i: np.ndarray, n: int, mode: int) -> np.ndarray:
    if mode == 33071:                                  # CLAMP_TO_EDGE
        return np.clip(i, 0, n - 1)
    if mode == 33648:                                  # MIRRORED_REPEAT
        m = np.mod(i, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)
    return np.mod(i, n)                                # REPEAT (default)


def sample_texture(tex: np.ndarray, uv: np.ndarray, wrap: tuple[int, int] = (10497, 10497)) -> np.ndarray:
    """Bilinear lookup of uint8 [H, W, C] at glTF UVs [K, 2] (v = 0 at row 0, texel centres at +0.5)."""
    H, W = tex.shape[:2]
    x, y = uv[:, 0] * W - 0.5, uv[:, 1] * H - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xs = [_wrap(x0, W, wrap[0]), _wrap(x0 + 1, W, wrap[0])]
    ys = [_wrap(y0, H, wrap[1]), _wrap(y0 + 1, H, wrap[1])]
    t = [[tex[ys[j], xs[i]].astype(np.float32) for i in (0, 1)] for j in (0, 1)]
    top = t[0][0] * (1 - fx) + t[0][1] * fx
    bottom = t[1][0] * (1 - fx) + t[1][1] * fx
    return (top * (1 - fy) + bottom * fy) / 255.0


def _lookup(tex: np.ndarray, uv: np.ndarray, wrap: tuple[int, int], footprint: np.ndarray | None) -> np.ndarray:
    if footprint is None:
        return sample_texture(tex, uv, wrap).astype(np.float64)
    return sample_texture_mip(tex, uv, wrap, footprint * np.sqrt(tex.shape[0] * tex.shape[1]))


_PYRAMIDS: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}


def _box_half(img: np.ndarray) -> np.ndarray:
    """2x2 box reduction (odd sizes: the last row/column is repeated), per channel, no alpha weighting."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    f = img.astype(np.float32)
    out = (f[0::2, 0::2] + f[1::2, 0::2] + f[0::2, 1::2] + f[1::2, 1::2]) * 0.25
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def mip_pyramid(tex: np.ndarray) -> list[np.ndarray]:
    """Box-filtered mip levels of a uint8 texture (level 0 = the texture), cached per array.

    Channels are averaged independently (straight, not alpha-premultiplied): the O-Voxel stores
    base colour and alpha separately, and Pillow's RGBA reduction would blacken transparent texels.
    """
    hit = _PYRAMIDS.get(id(tex))
    if hit is not None and hit[0] is tex:
        return hit[1]
    levels = [tex]
    while min(levels[-1].shape[:2]) > 1:
        levels.append(_box_half(levels[-1]))
    if len(_PYRAMIDS) > 32:
        _PYRAMIDS.clear()
    _PYRAMIDS[id(tex)] = (tex, levels)
    return levels


def sample_texture_mip(tex: np.ndarray, uv: np.ndarray, wrap: tuple[int, int], footprint: np.ndarray) -> np.ndarray:
    """Trilinear mip-mapped lookup; ``footprint`` = texels of level 0 covered by one sample (>= 1 filters)."""
    levels = mip_pyramid(tex)
    lod = np.clip(np.log2(np.maximum(footprint, 1.0)), 0, len(levels) - 1)
    lo = np.floor(lod).astype(np.int64)
    frac = (lod - lo)[:, None]
    out = np.zeros((len(uv), tex.shape[2]), np.float64)
    for level in np.unique(lo):
        sel = lo == level
        a = sample_texture(levels[level], uv[sel], wrap)
        b = sample_texture(levels[min(level + 1, len(levels) - 1)], uv[sel], wrap)
        out[sel] = a * (1 - frac[sel]) + b * frac[sel]
    return out


def _channels(tex: np.ndarray, want: int) -> np.ndarray:
    """A texture as [H, W, >=want-ish] uint8: gray is replicated; RGB gets no alpha (treated as 1)."""
    tex = np.asarray(tex)
    if tex.ndim == 2:
        tex = tex[..., None]
    if tex.shape[2] < 3:
        tex = np.concatenate([np.repeat(tex[..., :1], 3, 2), tex[..., 1:2]], 2)
    return tex[..., :want] if tex.shape[2] > want else tex


def surface_attrs(mesh: TexturedMesh, face: np.ndarray, bary: np.ndarray,
                  footprint: np.ndarray | None = None) -> np.ndarray:
    """PBR attributes [K, 6] (ATTR_LAYOUT) of ``mesh`` at barycentric points of faces ``face``.

    base colour = sRGB(linear(texture) · factor · COLOR_0); metallic = B · factor, roughness = G ·
    factor of the metallicRoughness texture; alpha = texture A · factor A · COLOR_0 A unless OPAQUE
    (then 1), binarised at the cutoff for MASK. ``footprint`` (UV units per sample, e.g. one voxel)
    selects mip-mapped lookups; without it textures are point-sampled (bilinear).
    """
    mat, K = mesh.material, len(face)
    corners = mesh.faces[face]
    uv = None
    if mesh.uvs is not None:
        uv = np.nan_to_num(np.einsum("kv,kvj->kj", bary, mesh.uvs[corners].astype(np.float64)),
                           nan=0.0, posinf=0.0, neginf=0.0)
    rgba = np.ones((K, 4))
    if mat.base_color_texture is not None and uv is not None:
        got = _lookup(_channels(mat.base_color_texture, 4), uv, mat.base_color_sampler_wrap, footprint)
        rgba[:, :got.shape[1]] = got
    factor = np.asarray(mat.base_color_factor, np.float64)
    vc = None
    if mesh.vertex_colors is not None:
        vc = np.einsum("kv,kvj->kj", bary, mesh.vertex_colors[corners].astype(np.float64))
        if vc.shape[1] == 3:                                  # RGB vertex colours: opaque
            vc = np.concatenate([vc, np.ones((K, 1))], 1)
    rgb = rgba[:, :3]
    if (factor[:3] != 1).any() or vc is not None:
        lin = srgb_to_linear(rgb) * factor[:3] * (vc[:, :3] if vc is not None else 1.0)
        rgb = linear_to_srgb(lin)
    out = np.empty((K, ATTR_CHANNELS))
    out[:, 0:3] = rgb
    mr = np.ones((K, 3))
    if mat.metallic_roughness_texture is not None and uv is not None:
        mr = _lookup(_channels(mat.metallic_roughness_texture, 3), uv, mat.base_color_sampler_wrap, footprint)
    out[:, 3] = mr[:, 2] * mat.metallic_factor
    out[:, 4] = mr[:, 1] * mat.roughness_factor
    if mat.alpha_mode == "OPAQUE":
        out[:, 5] = 1.0
    else:
        alpha = rgba[:, 3] * factor[3] * (vc[:, 3] if vc is not None else 1.0)
        out[:, 5] = (alpha >= mat.alpha_cutoff) if mat.alpha_mode == "MASK" else alpha
    return np.clip(out, 0.0, 1.0)
