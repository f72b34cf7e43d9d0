"""The ``trellis2`` generator backend: image -> O-Voxel through the TRELLIS.2 pipeline.

Registered in ``propforge.generators`` as "trellis2"; the CLI, server and watch mode reach it through
``load_generator("trellis2", model=ID_OR_PATH)``. The O-Voxel it returns (decoded voxels, dual-vertex
offsets, intersection flags, split weights, PBR attributes) goes through the common GLB export.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import InputError
from ..progress import ProgressCallback
from ..types import UNIT_AABB, Generation, OVoxel
from . import loading
from .pipeline import Trellis2Pipeline

DESCRIPTION = "TRELLIS.2 image-to-3D: full 3D shape with PBR materials (512³-1536³ voxels)"
PRECISIONS = {None: None, "auto": None, "native": "native", "bfloat16": "native", "bf16": "native",
              "float32": "float32", "fp32": "float32"}


class Trellis2Generator:
    """Loads the pipeline once (models on first use); ``generate`` may be called many times."""

    name = "trellis2"
    description = DESCRIPTION

    def __init__(self, model: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 dtype: str | None = None, cache_dir: str | None = None, low_vram: bool | None = None) -> None:
        """``dtype``: "native" (bf16 flows, fp16 decoders as released; GPU default) or "float32" (CPU default);
        ``PROPFORGE_TRELLIS2_DTYPE`` / ``PROPFORGE_TRELLIS2_MODEL`` set them for the CLI and server."""
        dtype = dtype or os.environ.get("PROPFORGE_TRELLIS2_DTYPE") or None
        key = dtype.lower() if isinstance(dtype, str) else dtype
        if key not in PRECISIONS:
            raise InputError(f"dtype must be native, bfloat16 or float32, got {dtype!r}")
        self.model_id = str(model or os.environ.get("PROPFORGE_TRELLIS2_MODEL") or loading.DEFAULT_MODEL)
        self.pipeline = Trellis2Pipeline.from_pretrained(self.model_id, device=device, precision=PRECISIONS[key],
                                                         cache_dir=cache_dir, low_vram=low_vram)

    @classmethod
    def is_available(cls, model: str | None = None) -> bool:
        """True when pipeline.json is on disk (local folder or hub cache); never downloads."""
        ref = str(model or os.environ.get("PROPFORGE_TRELLIS2_MODEL") or loading.DEFAULT_MODEL)
        if Path(ref).expanduser().is_dir():
            return (Path(ref).expanduser() / "pipeline.json").is_file()
        if not loading.looks_like_hub_id(ref):
            return False
        try:
            from huggingface_hub import try_to_load_from_cache
            return isinstance(try_to_load_from_cache(ref, "pipeline.json"), str)
        except Exception:  # noqa: BLE001 - an unreadable cache means "not available"
            return False

    def generate(self, image: Image.Image, *, seed: int = 0, progress: ProgressCallback | None = None,
                 pipeline_type: str | None = None, **options: Any) -> Generation:
        """Image -> Generation (O-Voxel at the pipeline's resolution R, Z-up in [-0.5, 0.5]³)."""
        if not isinstance(image, Image.Image):
            raise InputError(f"trellis2 needs a PIL image, got {type(image).__name__}")
        known = {"max_num_tokens", "sampler_params", "preprocess"}
        unknown = set(options) - known
        if unknown:
            raise InputError(f"unknown trellis2 option(s): {', '.join(sorted(unknown))}")
        asset = self.pipeline.run(image, seed=int(seed), pipeline_type=pipeline_type or None,
                                  progress=progress, **options)
        ovoxel = OVoxel(coords=asset.coords, offsets=asset.offsets, flags=asset.flags, attrs=asset.attrs,
                        resolution=asset.resolution, split_weight=asset.split_weight, aabb=UNIT_AABB.copy())
        stats = dict(asset.stats)
        return Generation(ovoxel=ovoxel, generator=self.name, seed=int(seed),
                          options={"pipeline_type": stats.get("pipeline_type"), "model": self.model_id,
                                   "precision": self.pipeline.precision},
                          notes=f"TRELLIS.2 {stats.get('pipeline_type')} at {asset.resolution}³",
                          extras=stats)
