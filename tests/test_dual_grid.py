"""O-Voxel -> mesh against the reference implementation's own calls (golden shape_dec_fp32)."""
import numpy as np
import pytest

from conftest import GOLDEN, need_shared
from propforge.ovoxel import dual_grid_to_mesh, lookup


@pytest.mark.parametrize("b", [0, 1])
def test_matches_reference_mesh_extraction(b):
    from safetensors.numpy import load_file
    out = load_file(need_shared(GOLDEN / "shape_dec_fp32" / "outputs.safetensors"))
    mesh = dual_grid_to_mesh(out[f"mesh{b}_in_coords"], out[f"mesh{b}_in_dual_vertices"],
                             out[f"mesh{b}_in_intersected"], out[f"mesh{b}_in_split_weight"],
                             np.array([[-0.5] * 3, [0.5] * 3]), out[f"mesh{b}_grid_size"])
    np.testing.assert_allclose(mesh.vertices, out[f"mesh{b}_vertices"], atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, out[f"mesh{b}_faces"])


def test_single_voxel_block_makes_closed_cube():
    # a 2x2x2 block of voxels around grid vertex (1,1,1)... flags on the max-corner edges of voxel (0,0,0)
    coords = np.array([[x, y, z] for x in range(2) for y in range(2) for z in range(2)])
    flags = np.zeros((8, 3), bool)
    flags[0] = True  # voxel (0,0,0) owns the three edges through (1,1,1)
    mesh = dual_grid_to_mesh(coords, np.full((8, 3), 0.5), flags, None, np.array([[0] * 3, [2] * 3]), 2)
    assert mesh.faces.shape == (6, 3)          # three quads -> six triangles
    assert len(mesh.vertices) == 8


def test_lookup_missing_and_negative():
    coords = np.array([[0, 0, 0], [3, 1, 2]])
    q = np.array([[3, 1, 2], [1, 1, 1], [-1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lookup(coords, q), [1, -1, -1, 0])
