"""O-Voxel -> engine-ready GLB (spec §4). Implemented in export/pipeline.py."""
from .pipeline import export_glb  # noqa: F401
