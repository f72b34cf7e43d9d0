"""Draws examples/demo.png, the README's demo input: a round wooden shield with a metal rim and boss.

Drawn in code (numpy + Pillow) so the repository holds no third-party images; see LICENSE-images.md.
Run `python examples/make_demo_image.py` to regenerate it (deterministic).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 512


def shield(size: int = SIZE, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - c, yy - c) / (0.47 * size)          # 1 at the outer edge
    # wooden planks with grain and dark gaps
    plank_w = size / 9.0
    plank = np.floor(xx / plank_w)
    tone = 0.85 + 0.15 * rng.random(64)[plank.astype(int) % 64]
    grain = 0.08 * np.sin(yy / 7.0 + 3.0 * np.sin(xx / 23.0 + plank)) + 0.02 * rng.standard_normal((size, size))
    wood = np.stack([0.55, 0.34, 0.18]) * (tone + grain)[..., None]
    gap = np.abs((xx / plank_w) - np.round(xx / plank_w)) * plank_w < 1.6
    wood[gap] *= 0.35
    # metal rim, rivets and boss
    metal = np.array([0.66, 0.67, 0.70], np.float32)
    rim = (r > 0.88) & (r <= 1.0)
    ang = np.arctan2(yy - c, xx - c)
    rivet_a = np.round(ang / (np.pi / 8)) * (np.pi / 8)
    rx, ry = c + 0.94 * 0.47 * size * np.cos(rivet_a), c + 0.94 * 0.47 * size * np.sin(rivet_a)
    rivet = np.hypot(xx - rx, yy - ry) < size * 0.014
    boss_r = np.hypot(xx - c, yy - c) / (0.12 * size)
    boss = boss_r < 1.0
    img = wood
    shade_rim = 0.75 + 0.35 * np.cos(ang + 2.3)           # light from the top left
    img = np.where(rim[..., None], metal * shade_rim[..., None], img)
    img = np.where(rivet[..., None], metal * 1.15, img)
    dome = np.sqrt(np.clip(1 - boss_r ** 2, 0, 1))
    light = np.clip(((c - xx) + (c - yy)) / (0.12 * size * 1.6) * 0.5 + dome, 0, 1.4)
    spec = np.exp(-((xx - c + 0.04 * size) ** 2 + (yy - c + 0.04 * size) ** 2) / (2 * (0.02 * size) ** 2))
    img = np.where(boss[..., None], metal * (0.45 + 0.5 * light)[..., None] + spec[..., None], img)
    img *= (1.0 - 0.18 * np.clip((xx + yy) / (2 * size) - 0.3, 0, 1))[..., None]  # soft overall light
    alpha = np.clip((1.0 - r) * 0.47 * size + 0.5, 0.0, 1.0)   # anti-aliased outer edge
    rgba = np.concatenate([np.clip(img, 0, 1), alpha[..., None]], -1)
    return (rgba * 255).round().astype(np.uint8)


def main() -> None:
    out = Path(__file__).with_name("demo.png")
    Image.fromarray(shield(), "RGBA").save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
