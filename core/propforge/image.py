"""Safe image intake shared by every front end (CLI, gRPC/HTTP, watch mode, Python API).

``load_image`` turns a path, bytes or PIL image into an RGBA image or raises ``InputError`` naming the
problem: not an image, truncated, too small, too many pixels (checked from the header, before any
pixel is decoded, so a 30000x30000 "decompression bomb" costs nothing), or an exotic pixel mode.
``to_cutout`` makes the object cut-out the generators want: it keeps a usable alpha channel, or keys
out a plain background when there is none, then crops to the object with a margin.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from .errors import InputError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

#: Largest accepted image, in pixels (width x height). Override with PROPFORGE_MAX_IMAGE_PIXELS.
DEFAULT_MAX_PIXELS = 64_000_000
#: Largest accepted encoded file, in bytes.
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Smallest accepted side, in pixels: below this there is no object to speak of.
MIN_SIDE = 16
#: alpha (0..255) below which a pixel counts as background.
ALPHA_EMPTY = 8


def max_pixels_default() -> int:
    """The configured pixel limit (environment override for servers with more memory)."""
    raw = os.environ.get("PROPFORGE_MAX_IMAGE_PIXELS")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"PROPFORGE_MAX_IMAGE_PIXELS must be an integer, got {raw!r}") from None
    if value < MIN_SIDE * MIN_SIDE:
        raise InputError(f"PROPFORGE_MAX_IMAGE_PIXELS must be at least {MIN_SIDE * MIN_SIDE}, got {value}")
    return value


def read_source(src: ImageSource, name: str) -> bytes:
    """Encoded image bytes from a path or bytes, with clear errors (missing, folder, empty, huge)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        path = Path(src)
        if not path.exists():
            raise InputError(f"{name}: file not found")
        if path.is_dir():
            raise InputError(f"{name}: is a folder, not an image file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{name}: file is {size / 2**20:.0f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InputError(f"{name}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise InputError(f"{name}: file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{name}: image data is {len(data) / 2**20:.0f} MiB; "
                         f"the limit is {MAX_FILE_BYTES // 2**20} MiB")
    return data


def check_size(width: int, height: int, name: str = "image", max_pixels: int | None = None) -> None:
    """Reject images that are too small to hold an object or too large to decode safely."""
    limit = max_pixels if max_pixels is not None else max_pixels_default()
    if width * height > limit:
        raise InputError(f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels; the limit is "
                         f"{limit / 1e6:.0f} megapixels (decompression-bomb guard)")
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name}: {width}x{height} is too small; each side must be at least {MIN_SIDE} pixels")


def _bomb_error(name: str, err: Exception, max_pixels: int | None) -> InputError:
    """Pillow's own bomb guard fired (header claims > 2x its limit): say so in our words."""
    limit = max_pixels if max_pixels is not None else max_pixels_default()
    m = re.search(r"\((\d+) pixels\)", str(err))
    claimed = f"{int(m.group(1)) / 1e6:.0f} megapixels" if m else "too many pixels"
    return InputError(f"{name}: image claims {claimed}; the limit is {limit / 1e6:.0f} megapixels "
                      "(decompression-bomb guard)")


def _open_checked(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """Open from the header only, check the size, then decode (first frame of animations)."""
    limit = max_pixels if max_pixels is not None else max_pixels_default()
    if limit > (Image.MAX_IMAGE_PIXELS or 0) and Image.MAX_IMAGE_PIXELS is not None:
        Image.MAX_IMAGE_PIXELS = limit       # a deliberately raised limit; we check sizes ourselves first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise _bomb_error(name, e, max_pixels) from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image (unrecognised or unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: image file is truncated or corrupt ({e})") from None
    check_size(img.width, img.height, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as e:
        raise _bomb_error(name, e, max_pixels) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e)
        if "truncated" in msg or isinstance(e, EOFError) or "broken data stream" in msg:
            raise InputError(f"{name}: image file is truncated or corrupt") from None
        raise InputError(f"{name}: cannot decode image ({msg or type(e).__name__})") from None
    return img


def _gray16_to_8(arr: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float grayscale -> uint8, assuming the range the values actually use."""
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if a.max(initial=0) > 255 else 1.0
    return np.clip(np.nan_to_num(a * scale), 0, 255).round().astype(np.uint8)


def to_rgba(img: Image.Image, name: str = "image") -> Image.Image:
    """Normalise any common PIL mode to 8-bit RGBA (palette transparency and 16-bit gray included)."""
    mode = img.mode
    if mode == "RGBA":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _gray16_to_8(np.asarray(img))
        return Image.fromarray(gray, "L").convert("RGBA")
    if mode in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode in ("LAB", "HSV", "YCbCr", "CMYK"):
            img = img.convert("RGB")
        return img.convert("RGBA")
    raise InputError(f"{name}: unsupported pixel mode {mode!r}")


def load_image(src: ImageSource, *, name: str | None = None, max_pixels: int | None = None) -> Image.Image:
    """Path, bytes or PIL image -> RGBA PIL image, or ``InputError`` saying what is wrong.

    The size limit is checked from the header before decoding; EXIF orientation is applied so
    phone photos come out upright.
    """
    if isinstance(src, Image.Image):
        label = name or "image"
        check_size(src.width, src.height, label, max_pixels)
        img = src
        try:                                 # Image.open() is lazy: decoding may still fail here
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InputError(f"{label}: image file is truncated or corrupt ({e})") from None
    else:
        label = name or (str(src) if isinstance(src, (str, os.PathLike)) else "image")
        img = _open_checked(read_source(src, label), label, max_pixels)
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - broken EXIF must not reject an otherwise fine image
            pass
    return to_rgba(img, label)


# --------------------------------------------------------------------------------------------------
# Cut-out: usable alpha, or key out a plain background, then crop with a margin.


def _border_pixels(rgb: np.ndarray, width: int = 2) -> np.ndarray:
    top, bottom = rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3)
    left, right = rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3)
    return np.concatenate([top, bottom, left, right]).astype(np.float32)


def key_background(rgb: np.ndarray, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """(alpha [H, W] float32 in [0, 1], background RGB) keying out a plain background colour estimated from the border.

    Background = pixels close to the border colour AND connected to the border (so a white logo
    inside a white-background image stays); a soft band of colour distance feathers the edge.
    """
    border = _border_pixels(rgb)
    bg = np.median(border, axis=0)
    bdist = np.linalg.norm(border - bg, axis=1)
    if np.mean(bdist < 40.0) < 0.6:
        raise InputError(f"{name}: no transparency and no plain background to remove; "
                         "use a cut-out (PNG/WebP with alpha) or a photo on a plain background")
    noise = float(np.percentile(bdist, 90))
    t0 = max(10.0, 1.5 * noise)
    t1 = t0 + 30.0
    dist = np.linalg.norm(rgb.astype(np.float32) - bg, axis=-1)
    near = dist < t1
    labels, _ = ndimage.label(near)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge_labels = edge_labels[edge_labels > 0]
    background = np.isin(labels, edge_labels)
    soft = np.clip((dist - t0) / (t1 - t0), 0.0, 1.0)
    return np.where(background, soft, 1.0).astype(np.float32), bg


def _decontaminate(rgb: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Remove the background colour mixed into feathered edge pixels (c = a*fg + (1-a)*bg)."""
    a = alpha[..., None]
    fg = (rgb.astype(np.float32) - (1.0 - a) * bg) / np.maximum(a, 1e-3)
    out = np.where((a > 0.02) & (a < 0.98), fg, rgb.astype(np.float32))
    return np.clip(out, 0, 255).round().astype(np.uint8)


def crop_to_object(rgba: np.ndarray, margin: float = 0.04) -> np.ndarray:
    """Crop to the alpha bounding box plus ``margin`` (fraction of the longer side), padding if needed."""
    alpha = rgba[..., 3]
    ys, xs = np.nonzero(alpha >= ALPHA_EMPTY)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pad = max(2, int(round(margin * max(y1 - y0, x1 - x0))))
    y0, y1, x0, x1 = y0 - pad, y1 + pad, x0 - pad, x1 + pad
    h, w = alpha.shape
    out = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y1, h), min(x1, w)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgba[sy0:sy1, sx0:sx1]
    return out


def to_cutout(img: Image.Image, *, margin: float = 0.04, name: str = "image") -> Image.Image:
    """RGBA cut-out of the object, cropped with a margin.

    A usable alpha (some pixels transparent) is kept; a fully opaque image gets its plain background
    keyed out; a fully transparent image is an error.
    """
    rgba = np.array(to_rgba(img, name))
    alpha = rgba[..., 3]
    if alpha.max() < ALPHA_EMPTY:
        raise InputError(f"{name}: image is fully transparent")
    if (alpha < 250).mean() < 0.002:   # (almost) opaque: there is no cut-out, key the background
        keyed, bg = key_background(rgba[..., :3], name)
        rgba[..., :3] = _decontaminate(rgba[..., :3], keyed, bg)
        rgba[..., 3] = np.round(keyed * 255).astype(np.uint8)
        if (rgba[..., 3] >= ALPHA_EMPTY).mean() < 1e-4 or (rgba[..., 3] < ALPHA_EMPTY).mean() < 1e-3:
            raise InputError(f"{name}: no object found in front of the plain background")
    fg = rgba[..., 3] >= ALPHA_EMPTY
    if fg.sum() < 16:
        raise InputError(f"{name}: the object is too small (fewer than 16 visible pixels)")
    return Image.fromarray(crop_to_object(rgba, margin), "RGBA")


def load_cutout(src: ImageSource, *, name: str | None = None, max_pixels: int | None = None,
                margin: float = 0.04) -> Image.Image:
    """``load_image`` then ``to_cutout``: what every generator front end wants."""
    img = load_image(src, name=name, max_pixels=max_pixels)
    return to_cutout(img, margin=margin, name=name or "image")
