"""O-Voxel conversions (spec §3)."""
from .dual_grid import dual_grid_to_mesh, lookup, ovoxel_to_mesh  # noqa: F401
