"""The relief generator: the embedded default that needs no GPU and no weights.

It is honest about what it is: a 2.5D relief. The image silhouette is inflated into a closed, thick,
double-sided slab (a Poisson height field, square-rooted so narrow parts get round cross-sections, on
top of a constant rim thickness, with a rounded rim). The front is coloured from the image, the back
with a blurred, darker copy, the rim with the nearest silhouette colour; roughness and metallic come
from simple image cues. The slab is written as a signed distance field at grid vertices and goes
through ``sdf_to_ovoxel`` and the same O-Voxel -> GLB export as TRELLIS.2 output.

Frame (spec §0): internal Z-up unit cube; image x -> +X, image up -> +Z, thickness along Y, the
front (the image) faces -Y, which the exporter maps to glTF +Z (towards the viewer in engines).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, sparse
from scipy.sparse.linalg import spsolve

from ..errors import InputError
from ..image import load_image, to_cutout
from ..ovoxel.from_sdf import sdf_to_ovoxel
from ..progress import ProgressCallback, StagePlan
from ..types import ATTR_CHANNELS, UNIT_AABB, Generation

DESCRIPTION = ("2.5D relief: inflates the image silhouette into a closed, thick, double-sided slab; "
               "not a 3D reconstruction")
NOTES = ("2.5D relief made from the image silhouette (front = the image, back = a darker blurred copy); "
         "not a 3D reconstruction")

MIN_RESOLUTION, MAX_RESOLUTION = 32, 512
#: empty voxels kept between the object and the cube faces (the activation rule needs interior lines)
PAD_VOXELS = 3
#: the mask / colour raster has this many pixels per voxel
OVERSAMPLE = 2
#: largest grid the Poisson height field is solved on (it is smooth; upsampling loses nothing visible)
POISSON_MAX = 160
#: larger inputs are downscaled to this longer side before keying/cropping (keeps big images cheap)
WORK_MAX_SIDE = 2048


@dataclass
class ReliefParams:
    """Shape knobs, in cube units (object's longer side is about 1) unless noted."""

    resolution: int
    thickness: float = 1.0       # multiplier of both rim and bulge thickness
    rim: float = 0.018           # half-thickness at the silhouette edge (before the multiplier)
    bulge: float = 0.45          # bulge depth per unit of round-tube radius (1 = round cross-sections)
    bulge_cap: float = 0.11      # soft cap on the bulge's half-thickness (keeps big discs slab-like)

    def rim_half(self) -> float:
        """Rim half-thickness: never thinner than 2.5 voxels, so the rim always closes."""
        return max(self.rim * self.thickness, 2.5 / self.resolution)


def choose_resolution(width: int, height: int) -> int:
    """Voxel grid from the cut-out size: about 2 image pixels per voxel, 128..256, multiple of 16.

    Colour detail finer than a voxel cannot survive the O-Voxel, so small grids blur the texture;
    256 is where the relief's own cost stays well under a second (benchmarks/relief_bench.py).
    """
    r = int(round(max(width, height) / 2 / 16)) * 16
    return int(min(max(r, 128), 256))


def smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --------------------------------------------------------------------------------------------------
# 2-D fields on a square raster covering the cube's x-z face (row 0 = top = +z, column 0 = -x).


def place_on_canvas(cutout: Image.Image, n: int, pad: float) -> np.ndarray:
    """Resize the RGBA cut-out so its longer side spans ``n - 2·pad`` pixels, centred on an n x n canvas.

    Returns float32 [n, n, 4] in [0, 1] (colour unpremultiplied, as Pillow resizes RGBA premultiplied).
    """
    w, h = cutout.size
    span = n - 2.0 * pad
    tw, th = max(1, int(round(w * span / max(w, h)))), max(1, int(round(h * span / max(w, h))))
    small = cutout.resize((tw, th), Image.Resampling.LANCZOS if max(w, h) > span else Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    canvas.paste(small, ((n - tw) // 2, (n - th) // 2))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def signed_distance_2d(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance in pixels (negative inside; boundary half-way between pixel centres) and,
    for every pixel, the flat index of the nearest inside pixel (to spread silhouette colours out)."""
    edt_out, idx = ndimage.distance_transform_edt(~inside, return_indices=True)
    edt_in = ndimage.distance_transform_edt(inside)
    sd = np.where(inside, 0.5 - edt_in, edt_out - 0.5).astype(np.float32)
    nearest = np.ravel_multi_index((idx[0], idx[1]), inside.shape)
    return sd, nearest


def poisson_height(inside: np.ndarray) -> np.ndarray:
    """Solve lap(h) = -1 inside, h = 0 outside (5-point stencil, direct solve); return sqrt(2h).

    sqrt(2h) is the radius profile that makes a long strip of half-width w a round tube (Teddy-style
    inflation): narrow parts stay narrow, wide parts swell, and the field is smooth everywhere.
    """
    h, w = inside.shape
    ids = -np.ones((h, w), dtype=np.int64)
    ys, xs = np.nonzero(inside)
    m = len(ys)
    if m == 0:
        return np.zeros((h, w), np.float32)
    ids[ys, xs] = np.arange(m)
    rows, cols = [np.arange(m)], [np.arange(m)]
    vals = [np.full(m, 4.0)]
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        nb = np.full(m, -1, dtype=np.int64)
        nb[ok] = ids[ny[ok], nx[ok]]
        keep = nb >= 0
        rows.append(np.nonzero(keep)[0])
        cols.append(nb[keep])
        vals.append(np.full(int(keep.sum()), -1.0))
    a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    sol = spsolve(a.tocsc(), np.ones(m))
    out = np.zeros((h, w), np.float32)
    out[ys, xs] = np.sqrt(np.maximum(2.0 * sol, 0.0))
    return out


def height_field(alpha: np.ndarray, params: ReliefParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signed distance, half-thickness H, nearest-inside index) on the canvas, in cube units."""
    n = alpha.shape[0]
    inside = alpha >= 0.5
    if inside.sum() < 4:
        raise InputError(f"the object is too thin or small to inflate at {params.resolution}^3 voxels "
                         "(it covers less than a voxel); use a larger or bolder image")
    sd_px, nearest = signed_distance_2d(inside)
    sd = ndimage.gaussian_filter(sd_px, 0.6) / n
    # Poisson inflation on a coarser grid, then back up to the canvas
    f = max(1, int(np.ceil(n / POISSON_MAX)))
    coarse = ndimage.zoom(alpha, 1.0 / f, order=1) >= 0.5 if f > 1 else inside
    tube = poisson_height(coarse) * (f / n)                       # radius in cube units
    if f > 1:
        tube = ndimage.zoom(tube, n / coarse.shape[0], order=1)[:n, :n]
        tube = np.pad(tube, ((0, n - tube.shape[0]), (0, n - tube.shape[1])))
    bulge = params.bulge * params.thickness * tube
    cap = params.bulge_cap * params.thickness
    bulge = cap * np.tanh(bulge / cap)                            # soft cap, slope 1 at 0
    half = params.rim_half() + np.where(inside, ndimage.gaussian_filter(bulge, 1.0), 0.0)
    return sd.astype(np.float32), half.astype(np.float32), nearest


def material_maps(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Roughness and metallic [n, n] from image cues; sane defaults (rough ~0.75, metallic 0).

    Small bright, unsaturated highlights read as glossy; unsaturated mid-bright areas with strong
    local contrast (brushed/polished metal in painted props) get a little metallic. Deliberately mild.
    """
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = (mx - mn) / np.maximum(mx, 1e-3)
    val = mx
    gray = rgb.mean(-1)
    local_mean = ndimage.uniform_filter(gray, 5)
    contrast = np.sqrt(np.maximum(ndimage.uniform_filter(gray * gray, 5) - local_mean ** 2, 0.0))
    highlight = ndimage.gaussian_filter(smoothstep(0.82, 0.97, val) * smoothstep(0.35, 0.1, sat), 1.5)
    rough = np.clip(0.78 - 0.35 * highlight, 0.35, 0.9)
    metal = 0.4 * smoothstep(0.25, 0.05, sat) * smoothstep(0.3, 0.6, val) * smoothstep(0.04, 0.14, contrast)
    metal = ndimage.gaussian_filter(metal, 1.5)
    return rough.astype(np.float32), np.clip(metal, 0.0, 0.4).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# 3-D: SDF at grid vertices and attributes at voxel centres.


def _sample(field: np.ndarray, x: np.ndarray, z: np.ndarray, order: int = 1) -> np.ndarray:
    """Bilinear sample of a canvas field at cube coordinates (x, z); field is [n, n] or [n, n, C]."""
    n = field.shape[0]
    col = (x + 0.5) * n - 0.5
    row = (0.5 - z) * n - 0.5
    if field.ndim == 2:
        return ndimage.map_coordinates(field, [row, col], order=order, mode="nearest")
    return np.stack([ndimage.map_coordinates(field[..., c], [row, col], order=order, mode="nearest")
                     for c in range(field.shape[-1])], -1)


def round_intersection(a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """SDF of the intersection of two solids with the crease rounded by radius r (hg_sdf)."""
    ua, ub = np.maximum(a + r, 0.0), np.maximum(b + r, 0.0)
    return np.minimum(-r, np.maximum(a, b)) + np.sqrt(ua * ua + ub * ub)


def relief_sdf(sd: np.ndarray, half: np.ndarray, resolution: int, rim_radius: float) -> np.ndarray:
    """SDF [R+1]^3 at grid vertices: extruded silhouette ∩ slab |y| <= H(x, z), rounded rim."""
    r = resolution
    v = (-0.5 + np.arange(r + 1) / r).astype(np.float32)
    xx, zz = np.meshgrid(v, v, indexing="ij")                      # [x, z]
    d2 = _sample(sd, xx.ravel(), zz.ravel()).reshape(r + 1, r + 1)
    hh = _sample(half, xx.ravel(), zz.ravel()).reshape(r + 1, r + 1)
    hmax = float(hh.max())
    band = np.nonzero(np.abs(v) <= hmax + 2.0 / r)[0]
    sdf = np.empty((r + 1, r + 1, r + 1), np.float32)
    sdf[:] = 1.0 / r + np.abs(v)[None, :, None]                    # outside the band: clearly outside
    yb = np.abs(v[band])[None, :, None]
    slab = round_intersection(d2[:, None, :], yb - hh[:, None, :], rim_radius)
    remove_checkerboards(slab)
    sdf[:, band, :] = slab
    return sdf


def _checker_faces(neg: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces normal to ``axis`` whose 4 corners alternate in sign; returns (mask, corner-00-inside)."""
    a, b = [d for d in range(3) if d != axis]

    def corner(da: int, db: int) -> np.ndarray:
        sl = [slice(None)] * 3
        sl[a] = slice(da, neg.shape[a] - 1 + da)
        sl[b] = slice(db, neg.shape[b] - 1 + db)
        return neg[tuple(sl)]

    c00, c01, c10, c11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    return (c00 == c11) & (c01 == c10) & (c00 != c01), c00


def remove_checkerboards(sdf: np.ndarray, max_iter: int = 8) -> int:
    """Make every grid face sign-unambiguous by joining diagonal inside corners (in place).

    A face whose corners alternate inside/outside makes the dual grid put four quads on one edge
    (a non-manifold seam). Thin or diagonal features of the silhouette cause it; we set the two
    outside corners just inside, which joins the diagonal parts instead of cutting them apart.
    Returns the number of corners changed.
    """
    eps = -1e-4 / (sdf.shape[0] - 1)
    changed = 0
    for _ in range(max_iter):
        neg = sdf < 0
        fix = np.zeros_like(neg)
        for axis in range(3):
            bad, c00_in = _checker_faces(neg, axis)
            if not bad.any():
                continue
            a, b = [d for d in range(3) if d != axis]
            for da, db in ((0, 0), (0, 1), (1, 0), (1, 1)):
                # outside corners: (0,1),(1,0) when c00 is inside, else (0,0),(1,1)
                want = bad & (c00_in if (da + db) % 2 else ~c00_in)
                sl = [slice(None)] * 3
                sl[a] = slice(da, neg.shape[a] - 1 + da)
                sl[b] = slice(db, neg.shape[b] - 1 + db)
                fix[tuple(sl)] |= want
        n = int(fix.sum())
        if n == 0:
            break
        sdf[fix] = eps
        changed += n
    return changed


class _Attributes:
    """attrs_fn for sdf_to_ovoxel: front = image, back = darker blurred copy, rim = nearest colour."""

    def __init__(self, colour: np.ndarray, half: np.ndarray, voxels_per_px: float) -> None:
        self.colour = colour
        # the back: the same object seen from behind, so its colours, but not the front's details
        sigma = max(1.0, 5.0 / voxels_per_px)
        blurred = np.stack([ndimage.gaussian_filter(colour[..., c], sigma) for c in range(3)], -1)
        self.back = np.clip(0.8 * (0.25 * colour + 0.75 * blurred), 0.0, 1.0)
        self.rough, self.metal = material_maps(colour)
        self.half = half

    def __call__(self, points: np.ndarray) -> np.ndarray:
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        front = _sample(self.colour, x, z)
        back = _sample(self.back, x, z)
        t = y / np.maximum(_sample(self.half, x, z), 1e-6)         # -1 front face, +1 back face
        wb = smoothstep(-0.5, 0.5, t)[:, None]
        rim = np.clip(1.0 - np.abs(t), 0.0, 1.0)[:, None]
        base = ((1.0 - wb) * front + wb * back) * (1.0 - 0.15 * rim)
        out = np.empty((len(points), ATTR_CHANNELS), np.float32)
        out[:, 0:3] = np.clip(base, 0.0, 1.0)
        out[:, 3] = _sample(self.metal, x, z) * (1.0 - 0.5 * wb[:, 0])
        out[:, 4] = np.clip(_sample(self.rough, x, z) + 0.05 * wb[:, 0], 0.0, 1.0)
        out[:, 5] = 1.0
        return out


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not (lo <= v <= hi):
        raise InputError(f"{name} must be between {lo:g} and {hi:g}, got {value}")
    return v


def _working_copy(img: Image.Image) -> Image.Image:
    """Shrink very large inputs first: the relief never uses more than ~2 px per voxel of detail."""
    if max(img.size) <= WORK_MAX_SIDE:
        return img
    scale = WORK_MAX_SIDE / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                      Image.Resampling.LANCZOS)


class ReliefGenerator:
    """Image -> O-Voxel of an inflated 2.5D relief (CPU, deterministic, no weights)."""

    name = "relief"
    description = DESCRIPTION

    def __init__(self, **_: Any) -> None:
        """Accepts (and ignores) backend-loading keywords such as ``model`` for a uniform factory."""

    @staticmethod
    def is_available(model: str | None = None) -> bool:
        return True

    def generate(self, image: Image.Image, *, seed: int = 0, progress: ProgressCallback | None = None,
                 resolution: int | None = None, thickness: float = 1.0, **opts: Any) -> Generation:
        """Build the relief. ``seed`` is recorded only: the relief is fully deterministic."""
        opts.pop("pipeline_type", None)          # a trellis2 setting; meaningless here
        if opts:
            raise InputError(f"unknown relief option(s): {', '.join(sorted(opts))}")
        if not isinstance(image, Image.Image):
            raise InputError(f"relief generator needs a PIL image, got {type(image).__name__}")
        thickness = _number(thickness, "thickness", 0.2, 5.0)
        if resolution is not None:
            resolution = int(_number(resolution, "relief resolution", MIN_RESOLUTION, MAX_RESOLUTION))
        plan = StagePlan(progress, {"prepare": 1.0, "decode": 3.0})
        plan("prepare", 0.0, message="cut-out")
        cutout = to_cutout(_working_copy(load_image(image)))
        res = choose_resolution(*cutout.size) if resolution is None else resolution
        params = ReliefParams(resolution=res, thickness=thickness)
        n = OVERSAMPLE * res
        canvas = place_on_canvas(cutout, n, OVERSAMPLE * PAD_VOXELS)
        plan("prepare", 1.0, message=f"{cutout.size[0]}x{cutout.size[1]} cut-out, {res}^3 voxels")

        plan("decode", 0.0, message="height field")
        sd, half, nearest = height_field(canvas[..., 3], params)
        colour = canvas[..., :3].reshape(-1, 3)[nearest].reshape(n, n, 3)
        plan("decode", 0.3, message="signed distance volume")
        sdf = relief_sdf(sd, half, res, rim_radius=0.8 * params.rim_half())
        plan("decode", 0.5, message="O-Voxel")
        ov = sdf_to_ovoxel(sdf, _Attributes(colour, half, voxels_per_px=1.0 / OVERSAMPLE), UNIT_AABB)
        plan("decode", 1.0, message=f"{ov.num_voxels} voxels")
        return Generation(
            ovoxel=ov, generator=self.name, seed=int(seed), notes=NOTES,
            options={"resolution": res, "thickness": float(thickness)},
            extras={"description": DESCRIPTION, "cutout_size": list(cutout.size)})
