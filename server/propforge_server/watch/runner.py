"""How a watch job turns image bytes into GLB bytes: in this process, or on a `propforge serve`.

Both runners take the exact bytes the watcher hashed, so the hash in the status file is the hash of
what was generated, even if the file changes again meanwhile.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from propforge.options import GenerateOptions
from propforge.progress import ProgressCallback


@dataclass
class RunResult:
    glb: bytes
    backend: str
    metadata: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    #: how many jobs it makes sense to run at once
    default_workers: int

    def run(self, data: bytes, options: GenerateOptions, progress: ProgressCallback, name: str) -> RunResult:
        ...


def decode_image(data: bytes, name: str = "image"):
    """Full decode (not just the header): truncated or corrupt files raise InputError here."""
    from propforge.image import load_image

    img = load_image(data, name=name)
    img.load()
    return img


class InProcessRunner:
    """Runs ``propforge.api.generate_glb`` here, keeping one loaded generator per backend/model."""

    default_workers = 1

    def __init__(self) -> None:
        self._generators: dict[tuple[str, str], Any] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def _generator(self, options: GenerateOptions) -> tuple[Any, threading.Lock | None]:
        from propforge.generators import backend_and_kwargs, load_generator

        backend, kwargs = backend_and_kwargs(options.backend, options.model)
        key = (backend, kwargs.get("model", ""))
        with self._lock:
            if key not in self._generators:
                self._generators[key] = load_generator(backend, **kwargs)
                self._locks[key] = threading.Lock()
        # a GPU model runs one job at a time; the CPU relief generator is re-entrant
        return self._generators[key], (self._locks[key] if backend != "relief" else None)

    def prepare(self, options: GenerateOptions) -> str:
        """Load the generator now, so the first drop does not wait for it and a missing backend
        is reported at start-up; returns a line for the log."""
        generator, _ = self._generator(options)
        return f"generator {generator.name!r} loaded"

    def run(self, data: bytes, options: GenerateOptions, progress: ProgressCallback, name: str) -> RunResult:
        from propforge.api import generate_glb

        image = decode_image(data, name)
        generator, lock = self._generator(options)
        if lock is None:
            res = generate_glb(image, options, progress, generator=generator, source_bytes=data)
        else:
            with lock:
                res = generate_glb(image, options, progress, generator=generator, source_bytes=data)
        return RunResult(res.glb, res.backend, dict(res.metadata))


class RemoteRunner:
    """Sends jobs to a `propforge serve` over gRPC (the GPU box); the server queues them.

    When the watcher stops mid-job the remote job is left to finish: the server caches results by
    image + options, so the resubmission after a restart is answered from its cache.
    """

    default_workers = 2

    def __init__(self, address: str, token: str | None = None) -> None:
        from propforge_server.client import AuthError, PropForgeClient

        self.address = address
        self.client = PropForgeClient(address, token=token)
        #: a wrong token stays wrong; server down / queue full / job errors are retried with backoff
        self.permanent_errors = (AuthError,)

    def prepare(self, options: GenerateOptions) -> str:
        """Check the server answers (jobs are retried anyway, but say so early)."""
        return f"server {self.address} is {self.client.health()}"

    def run(self, data: bytes, options: GenerateOptions, progress: ProgressCallback, name: str) -> RunResult:
        glb, job = self.client.generate(data, options, progress=progress, name=name)
        job = dict(job or {})
        return RunResult(glb, str(job.get("backend", "")), job)
