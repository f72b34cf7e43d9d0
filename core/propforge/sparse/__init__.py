"""Sparse voxel tensors and the ops the TRELLIS.2 models are built from (spec generator.md §3,
ovoxel-and-export.md §2): submanifold 3x3x3 convolution (Triton implicit GEMM on CUDA, vectorised
PyTorch elsewhere), channel<->space resampling, row-wise layers and variable-length attention.
"""
from .attention import attention, varlen_attention
from .conv import SparseConv3d, conv_backend, sparse_conv3d, sparse_conv3d_torch
from .neighbors import OFFSETS, build_neighbor_map, flat_keys, neighbor_map, neighbor_map_sorted
from .nn import LayerNorm32, SparseGELU, SparseLinear, SparseSiLU
from .resample import channel_to_spatial, children_feats, spatial_to_channel, sub_index
from .tensor import SparseTensor, sparse_cat

__all__ = [
    "OFFSETS", "LayerNorm32", "SparseConv3d", "SparseGELU", "SparseLinear", "SparseSiLU", "SparseTensor",
    "attention", "build_neighbor_map", "channel_to_spatial", "children_feats", "conv_backend", "flat_keys",
    "neighbor_map", "neighbor_map_sorted", "sparse_cat", "sparse_conv3d", "sparse_conv3d_torch",
    "spatial_to_channel", "sub_index", "varlen_attention",
]
