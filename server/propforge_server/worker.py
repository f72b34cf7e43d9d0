"""The unit of work behind the job queue: image bytes + options -> GLB, with progress.

Kept deliberately small (one class, one method) so a studio farm can host the same ``Worker`` in a
Ray Serve deployment (one replica per GPU) and have the job manager call it remotely; the manager
never touches generators directly.
"""
from __future__ import annotations

import threading
from typing import Any, Protocol

from PIL import Image

from propforge.image import load_image
from propforge.options import GenerateOptions
from propforge.progress import ProgressCallback

#: default pixel limit of an uploaded image (about 64 MP); bigger images are refused, not resized
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes -> fully decoded PIL image; InputError for corrupt data or images above ``max_pixels``."""
    return load_image(data, max_pixels=max_pixels)


def _gpu_for(index: int) -> str | None:
    """Worker i uses GPU i (mod the GPU count): one worker per GPU."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{index % n}" if n else None


def _accepts(backend: str, name: str) -> bool:
    """Whether the backend's constructor takes keyword ``name`` (device placement is optional)."""
    import inspect

    from propforge import generators

    try:
        params = inspect.signature(generators.generator_class(backend)).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class Worker(Protocol):
    """What the job manager calls. ``run`` may raise ``propforge.errors.Cancelled`` via ``progress``.

    Optional: ``preload(backend)``, called once on the worker's thread before its first job; the
    server reports ready (``/v2/health/ready``) only when every worker has returned from it."""

    def run(self, image: bytes, options: GenerateOptions, progress: ProgressCallback) -> "Any":
        """Return a ``propforge.api.GlbResult`` (glb bytes + backend name)."""
        ...

    def model_version(self, backend: str) -> str:
        """A string that changes whenever the same input could give a different GLB (result cache key)."""
        ...


class LocalWorker:
    """Runs ``propforge.api.generate_glb`` in this process, keeping one loaded generator per backend.

    One instance per GPU (or per CPU worker thread): a loaded TRELLIS.2 model is reused across jobs.
    """

    def __init__(self, index: int = 0, model: str = "", max_pixels: int = DEFAULT_MAX_PIXELS,
                 device: str | None = None) -> None:
        self.index = index
        self.device = device
        self.model = model
        self.max_pixels = max_pixels
        self._generators: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _generator(self, backend: str) -> Any:
        with self._lock:
            if backend not in self._generators:
                from propforge.generators import load_generator

                kwargs: dict[str, Any] = {}
                if backend == "trellis2":
                    if self.model:
                        kwargs["model"] = self.model
                    device = self.device or _gpu_for(self.index)
                    if device and _accepts(backend, "device"):
                        kwargs["device"] = device
                self._generators[backend] = load_generator(backend, **kwargs)
            return self._generators[backend]

    def preload(self, backend: str) -> None:
        """Load the backend's model now, so the first job does not pay for it (and readiness means it)."""
        self._generator(backend)

    def run(self, image: bytes, options: GenerateOptions, progress: ProgressCallback) -> Any:
        from propforge.api import generate_glb

        img = decode_image(image, self.max_pixels)
        return generate_glb(img, options, progress=progress, generator=self._generator(options.backend),
                            source_bytes=image)

    def model_version(self, backend: str) -> str:
        """Library version + model source; cheap (no model load), so submit never blocks on weights."""
        import propforge

        version = getattr(propforge, "__version__", "0")
        return f"{backend}/{version}/{self.model if backend == 'trellis2' else ''}"
