"""Progress events: one small record type that the CLI bar, --json, gRPC and SSE all render."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

# Stage names, in pipeline order. Generators use a subset; exporters use the export_* ones.
STAGES = (
    "prepare",     # image loading, keying, cropping
    "condition",   # image features (DINOv3)
    "structure",   # sparse structure flow + decoder
    "shape",       # shape latent flow (may include cascade)
    "texture",     # texture latent flow
    "decode",      # SC-VAE decoders / relief volume -> O-Voxel
    "mesh",        # O-Voxel -> mesh, clean-up, decimation
    "uv",          # UV unwrap
    "bake",        # texture baking
    "write",       # GLB encoding and write
)


@dataclass
class ProgressEvent:
    stage: str
    fraction: float = 0.0           # of the whole job, 0..1
    step: Optional[int] = None      # sampler step i (1-based) within the stage
    total: Optional[int] = None     # sampler steps n within the stage
    message: str = ""
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


ProgressCallback = Callable[[ProgressEvent], None]


def null_progress(_: ProgressEvent) -> None:
    """Default callback."""


class StagePlan:
    """Maps (stage, within-stage fraction) to an overall fraction using fixed stage weights.

    A generator and the exporter each own a slice of [0, 1]; ``sub`` gives a callback whose
    fractions are rescaled into a slice, so export progress follows generation progress.
    """

    def __init__(self, callback: ProgressCallback | None, weights: dict[str, float],
                 lo: float = 0.0, hi: float = 1.0) -> None:
        self.callback = callback or null_progress
        total = sum(weights.values()) or 1.0
        self.bounds: dict[str, tuple[float, float]] = {}
        acc = 0.0
        for name, w in weights.items():
            a = lo + (hi - lo) * acc / total
            acc += w
            self.bounds[name] = (a, lo + (hi - lo) * acc / total)

    def __call__(self, stage: str, within: float = 0.0, step: int | None = None,
                 total: int | None = None, message: str = "") -> None:
        a, b = self.bounds.get(stage, (0.0, 1.0))
        frac = a + (b - a) * min(max(within, 0.0), 1.0)
        self.callback(ProgressEvent(stage, frac, step, total, message))


def rescaled(callback: ProgressCallback | None, lo: float, hi: float) -> ProgressCallback:
    """Wrap ``callback`` so fractions in [0, 1] land in [lo, hi]."""
    cb = callback or null_progress

    def inner(ev: ProgressEvent) -> None:
        cb(ProgressEvent(ev.stage, lo + (hi - lo) * ev.fraction, ev.step, ev.total, ev.message, ev.time))

    return inner
