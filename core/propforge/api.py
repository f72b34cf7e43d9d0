"""The whole job in one call: image -> generator -> O-Voxel -> engine-ready GLB bytes.

CLI, gRPC/HTTP server and watch mode all call ``generate_glb``; nothing else knows the order of stages.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .generators import load_generator
from .options import GenerateOptions
from .progress import ProgressCallback, rescaled

#: share of the progress bar given to generation; the rest is export
GENERATE_SHARE = {"relief": 0.35, "trellis2": 0.8}


@dataclass
class GlbResult:
    glb: bytes
    backend: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def sha256(self) -> str:
        """Hashed once: the server, CLI and watch mode each ask for it several times per result."""
        return hashlib.sha256(self.glb).hexdigest()


def generate_glb(image: Image.Image, options: GenerateOptions | None = None,
                 progress: ProgressCallback | None = None, generator=None,
                 source_bytes: bytes | None = None) -> GlbResult:
    """Run generation and export. ``generator`` lets long-lived callers reuse a loaded model."""
    from .export import export_glb

    options = (options or GenerateOptions()).validate()
    if generator is None:
        kwargs = {"model": options.model} if options.backend in ("trellis2",) and options.model else {}
        generator = load_generator(options.backend, **kwargs)
    share = GENERATE_SHARE.get(generator.name, 0.5)
    gen_opts = {"pipeline_type": options.pipeline_type} if options.pipeline_type else {}
    generation = generator.generate(image, seed=options.seed, progress=rescaled(progress, 0.0, share), **gen_opts)
    if source_bytes is not None:
        generation.source_sha256 = hashlib.sha256(source_bytes).hexdigest()
    glb = export_glb(generation, options.export, progress=rescaled(progress, share, 1.0))
    return GlbResult(glb=glb, backend=generator.name,
                     metadata={"generator": generation.generator, "seed": generation.seed,
                               "source_sha256": generation.source_sha256, "notes": generation.notes})
