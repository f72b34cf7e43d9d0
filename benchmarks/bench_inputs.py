"""Small inputs drawn in code, and summary helpers, shared by the benchmarks (the drawing is the same as
tests/conftest.make_cutout)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def cutout_png(size: int, seed: int) -> bytes:
    """A coloured disc on a transparent background, as PNG bytes; ``seed`` varies the noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    mask = (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.35 ** 2
    rgb = np.stack([xx * 255, yy * 255, np.full_like(xx, 90)], -1) + rng.normal(0, 4, (size, size, 3))
    rgba = np.concatenate([np.clip(rgb, 0, 255), mask[..., None] * 255.0], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    """The q-th percentile; NaN for no values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")
