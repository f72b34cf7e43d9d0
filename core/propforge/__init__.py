"""PropForge: image -> engine-ready 3D props.

Short path (mirrors the reference's load-run-export)::

    import propforge
    gen = propforge.load_generator("relief")
    result = gen.generate(PIL.Image.open("chair.png"), seed=1, progress=print)
    propforge.export_glb(result, propforge.ExportOptions(faces=20000), path="chair.glb")
"""
from .errors import BackendUnavailable, Cancelled, InputError, ModelLoadError, PropForgeError
from .generators import backend_names, load_generator, resolve_backend
from .options import ExportOptions, GenerateOptions
from .progress import ProgressEvent
from .types import ATTR_LAYOUT, Generation, Mesh, OVoxel, PBRMaterial, TexturedMesh

__version__ = "0.1.0"


def export_glb(generation, options=None, path=None, progress=None) -> bytes:
    """Export a `Generation` to GLB bytes (and write them atomically to ``path`` if given)."""
    from .export import export_glb as _export
    return _export(generation, options or ExportOptions(), path=path, progress=progress)


def generate_glb(*args, **kwargs):
    from .api import generate_glb as _g
    return _g(*args, **kwargs)


__all__ = [
    "ATTR_LAYOUT", "BackendUnavailable", "Cancelled", "ExportOptions", "GenerateOptions", "Generation",
    "InputError", "Mesh", "ModelLoadError", "OVoxel", "PBRMaterial", "ProgressEvent", "PropForgeError",
    "TexturedMesh", "backend_names", "export_glb", "generate_glb", "load_generator", "resolve_backend",
]
