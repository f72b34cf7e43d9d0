"""Shared fixtures: paths to ../shared, the glTF validator, small generated inputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROPFORGE_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "golden"
ASSETS = SHARED / "data" / "assets"
IMAGES = SHARED / "data" / "images"


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (../shared is not beside this checkout)")
    return path


@pytest.fixture
def assert_valid_glb():
    """Validate GLB bytes or a path with the Khronos validator; fail on any error."""
    from propforge.validate import validate_files, validate_glb, validator_available

    if not validator_available():
        if os.environ.get("CI"):
            pytest.fail("glTF validator is not installed in CI (tools/gltf_validator)")
        pytest.skip("glTF validator not installed (npm install in tools/gltf_validator)")

    def check(glb):
        rep = validate_files([glb])[0] if isinstance(glb, (str, Path)) else validate_glb(glb)
        assert rep.num_errors == 0, f"glTF validator errors: {rep.errors}"
        return rep

    return check


def make_cutout(size: int = 128, shape: str = "disc", seed: int = 0) -> Image.Image:
    """A small RGBA cut-out drawn in code: a coloured object on transparent background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if shape == "disc":
        mask = (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.35 ** 2
    else:  # "L": a non-convex shape
        mask = ((xx > 0.2) & (xx < 0.45) & (yy > 0.15) & (yy < 0.85)) | ((xx > 0.2) & (xx < 0.8) & (yy > 0.6) & (yy < 0.85))
    rgb = np.stack([xx * 255, yy * 255, np.full_like(xx, 90)], -1) + rng.normal(0, 4, (size, size, 3))
    rgba = np.concatenate([np.clip(rgb, 0, 255), mask[..., None] * 255.0], -1).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


@pytest.fixture
def cutout() -> Image.Image:
    return make_cutout()
