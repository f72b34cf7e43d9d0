"""Plain-array data model shared by every stage: O-Voxel, Mesh, TexturedMesh.

Frames follow ../shared/spec/ovoxel-and-export.md §0: the internal object frame is right-handed,
Z-up, inside the cube [-0.5, 0.5]^3; conversion to glTF (+Y up) happens only in the exporter.
Arrays are numpy on the way in and out; generators may hold torch tensors internally.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Attribute layout of the O-Voxel PBR volume (spec §2.8 / §3.1): name -> (start, stop) columns.
ATTR_LAYOUT: dict[str, tuple[int, int]] = {
    "base_color": (0, 3),
    "metallic": (3, 4),
    "roughness": (4, 5),
    "alpha": (5, 6),
}
ATTR_CHANNELS = 6

#: The unit-cube AABB every generator works in.
UNIT_AABB = np.array([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]], dtype=np.float32)


@dataclass
class OVoxel:
    """Sparse voxel surface at resolution R over ``aabb`` (spec §3.1).

    coords:  int32 [N, 3], 0 <= c < R (x, y, z).
    offsets: float32 [N, 3] dual vertex, offset from the voxel's min corner in voxel units
             ([0, 1] from voxelisation, (-0.5, 1.5) from the decoder).
    flags:   bool [N, 3] intersection flags of the edges through the voxel's max corner.
    split_weight: float32 [N] or None (decoder quad-split weights).
    attrs:   float32 [N, 6] PBR attributes in ATTR_LAYOUT, nominally [0, 1], not clamped.
    """

    coords: np.ndarray
    offsets: np.ndarray
    flags: np.ndarray
    attrs: np.ndarray
    resolution: int
    split_weight: np.ndarray | None = None
    aabb: np.ndarray = field(default_factory=lambda: UNIT_AABB.copy())

    def __post_init__(self) -> None:
        self.coords = np.ascontiguousarray(self.coords, dtype=np.int32)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.float32)
        self.flags = np.ascontiguousarray(self.flags, dtype=bool)
        self.attrs = np.ascontiguousarray(self.attrs, dtype=np.float32)
        self.aabb = np.asarray(self.aabb, dtype=np.float32)
        n = len(self.coords)
        if self.coords.shape != (n, 3) or self.offsets.shape != (n, 3) or self.flags.shape != (n, 3):
            raise ValueError(
                f"O-Voxel arrays disagree: coords {self.coords.shape}, offsets {self.offsets.shape}, "
                f"flags {self.flags.shape}")
        if self.attrs.shape != (n, ATTR_CHANNELS):
            raise ValueError(f"O-Voxel attrs must be [N, {ATTR_CHANNELS}], got {self.attrs.shape}")
        if self.split_weight is not None:
            self.split_weight = np.ascontiguousarray(self.split_weight, dtype=np.float32).reshape(n)
        if n and (self.coords.min() < 0 or self.coords.max() >= self.resolution):
            raise ValueError(f"O-Voxel coords outside [0, {self.resolution})")

    @property
    def num_voxels(self) -> int:
        return len(self.coords)

    @property
    def voxel_size(self) -> float:
        return float((self.aabb[1] - self.aabb[0]).max()) / self.resolution

    def attr(self, name: str) -> np.ndarray:
        a, b = ATTR_LAYOUT[name]
        return self.attrs[:, a:b]


@dataclass
class Mesh:
    """Triangle mesh: vertices float32 [V, 3], faces int32 [F, 3] (counter-clockwise = front)."""

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)


@dataclass
class PBRMaterial:
    """Metallic-roughness material with optional textures (uint8 HxWxC arrays, row 0 = v≈0)."""

    base_color_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    metallic_factor: float = 1.0
    roughness_factor: float = 1.0
    base_color_texture: np.ndarray | None = None          # [H, W, 4] RGBA uint8 (sRGB)
    metallic_roughness_texture: np.ndarray | None = None  # [H, W, 3] uint8, G = roughness, B = metallic
    alpha_mode: str = "OPAQUE"                            # OPAQUE | MASK | BLEND
    alpha_cutoff: float = 0.5
    double_sided: bool = False
    base_color_sampler_wrap: tuple[int, int] = (10497, 10497)  # glTF REPEAT


@dataclass
class TexturedMesh:
    """A mesh with one UV set and one PBR material (what the exporter writes and the voxeliser reads)."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray | None = None          # float32 [V, 2], glTF convention (v = 0 at image row 0)
    normals: np.ndarray | None = None      # float32 [V, 3]
    vertex_colors: np.ndarray | None = None  # float32 [V, 4] linear RGBA multiplier (COLOR_0)
    material: PBRMaterial = field(default_factory=PBRMaterial)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)

    @property
    def mesh(self) -> Mesh:
        return Mesh(self.vertices, self.faces)


@dataclass
class Generation:
    """What a generator returns: an O-Voxel plus provenance for the asset metadata."""

    ovoxel: OVoxel
    generator: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    notes: str = ""                       # e.g. "2.5D relief, not a full 3D reconstruction"
    extras: dict[str, Any] = field(default_factory=dict)
