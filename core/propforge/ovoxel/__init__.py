"""O-Voxel conversions (spec §3)."""
from .dual_grid import dual_grid_to_mesh, lookup, ovoxel_to_mesh  # noqa: F401
from .sample import sample_attrs_nearest, sample_attrs_trilinear  # noqa: F401
from .voxelize import gltf_to_ovoxel, mesh_to_ovoxel  # noqa: F401
