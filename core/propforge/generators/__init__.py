"""Generator registry: a generator turns a PIL image into an O-Voxel (`Generation`).

Backends register a factory by name; ``load_generator("relief")`` returns a ready instance.
``resolve_backend("auto")`` picks trellis2 when a CUDA GPU and weights are available, else relief.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol

from PIL import Image

from ..errors import BackendUnavailable, InputError
from ..progress import ProgressCallback
from ..types import Generation


class Generator(Protocol):
    name: str
    #: short human text, shown in --help and metadata (e.g. "2.5D relief from the image silhouette")
    description: str

    def generate(self, image: Image.Image, *, seed: int = 0,
                 progress: ProgressCallback | None = None, **options: Any) -> Generation:
        """Image -> O-Voxel. ``progress`` may raise ``Cancelled`` to stop between stages/steps."""
        ...


# name -> "module:callable" so heavy backends import lazily.
_REGISTRY: dict[str, str] = {
    "relief": "propforge.generators.relief:ReliefGenerator",
    "trellis2": "propforge.trellis2.backend:Trellis2Generator",
}


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return list(_REGISTRY)


def _factory(name: str) -> Callable[..., Generator]:
    if name not in _REGISTRY:
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}")
    mod_name, attr = _REGISTRY[name].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("propforge"):
            raise BackendUnavailable(f"backend {name!r} is not available in this build yet") from e
        raise
    return getattr(mod, attr)


def generator_class(name: str) -> Callable[..., Generator]:
    """The backend's class (or factory) without instantiating it: for ``description``,
    ``is_available`` and constructor introspection by servers."""
    return _factory(name)


def load_generator(name: str = "auto", **kwargs: Any) -> Generator:
    """Instantiate a backend by name ("auto" resolves first)."""
    if name == "auto":
        name = resolve_backend(kwargs.get("model") or None)
    return _factory(name)(**kwargs)


def backend_and_kwargs(backend: str, model: str = "") -> tuple[str, dict[str, Any]]:
    """The concrete backend ("" or "auto" resolved) and its constructor kwargs: only trellis2 takes a
    model (hub id or folder); relief ignores it."""
    name = resolve_backend(model or None) if backend in ("", "auto") else backend
    return name, ({"model": model} if name == "trellis2" and model else {})


def resolve_backend(model: str | None = None) -> str:
    """trellis2 when CUDA and the model are available, else relief."""
    try:
        import torch
        if not torch.cuda.is_available():
            return "relief"
        factory = _factory("trellis2")
    except (BackendUnavailable, ImportError):
        return "relief"
    available = getattr(factory, "is_available", None)
    return "trellis2" if available is not None and available(model) else "relief"
