"""Submanifold sparse conv (CPU path) against the golden vector and dense conv3d in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import GOLDEN, need_shared
from propforge.errors import InputError
from propforge.sparse import (SparseConv3d, SparseTensor, neighbor_map, neighbor_map_sorted,
                              sparse_conv3d_torch)


def random_sparse(counts: list[int], extent: int, seed: int, channels: int,
                  dtype: torch.dtype = torch.float64) -> SparseTensor:
    """Batch items with ``counts`` distinct random voxels each in an extent³ grid (0 = empty item)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(counts):
        flat = torch.randperm(extent ** 3, generator=g)[:n].sort().values
        xyz = torch.stack([flat // extent ** 2, flat // extent % extent, flat % extent], 1)
        rows.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(rows).to(torch.int32)
    feats = torch.randn(coords.shape[0], channels, generator=g, dtype=dtype)
    return SparseTensor(feats, coords, batch_size=len(counts))


def dense_reference(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Scatter to a zero grid over the occupied extent, conv3d (padding 1), read the active sites."""
    X, Y, Z = x.spatial_shape
    c = x.coords.long()
    grid = torch.zeros(x.batch_size, x.feats.shape[1], X, Y, Z, dtype=torch.float64)
    grid[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = x.feats.double()
    w = weight.double().permute(0, 4, 1, 2, 3)           # [Co, 3,3,3, Ci] -> [Co, Ci, 3,3,3]
    out = F.conv3d(grid, w, None if bias is None else bias.double(), padding=1)
    return out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


@pytest.mark.parametrize("counts,extent,ci,co", [
    ([60, 45], 6, 5, 7),            # two items, dense-ish small grid (borders everywhere)
    ([0, 80, 0, 33], 9, 13, 19),    # empty items first and between; channels not multiple of 16
    ([1], 3, 3, 2),                 # a single voxel: only the centre tap
    ([300, 120, 5], 12, 16, 33),
])
def test_conv_matches_dense_conv3d(counts, extent, ci, co):
    x = random_sparse(counts, extent, seed=sum(counts) + ci, channels=ci)
    conv = SparseConv3d(ci, co).double()
    torch.nn.init.normal_(conv.weight)
    torch.nn.init.normal_(conv.bias)
    with torch.no_grad():
        y = conv(x)
    ref = dense_reference(x, conv.weight, conv.bias)
    assert y.feats.dtype == torch.float64 and torch.equal(y.coords, x.coords)
    torch.testing.assert_close(y.feats, ref, rtol=1e-12, atol=1e-12)


def test_conv_half_input_accumulates_in_fp32_and_keeps_dtype():
    x = random_sparse([200, 150], 10, seed=3, channels=24, dtype=torch.float32)
    w = torch.randn(40, 3, 3, 3, 24) / 16
    b = torch.randn(40)
    nbr = neighbor_map(x)
    for dt in (torch.float16, torch.bfloat16):
        out = sparse_conv3d_torch(x.feats.to(dt), nbr, w.to(dt), b.to(dt))
        ref = dense_reference(x.replace(x.feats.to(dt)), w.to(dt), b.to(dt))
        assert out.dtype == dt
        rel = (out.double() - ref).norm() / ref.norm()
        assert rel < (4e-3 if dt == torch.float16 else 2e-2), rel


def test_golden_unit_sparse_conv3d_fp32():
    from safetensors.torch import load_file
    case = need_shared(GOLDEN / "unit_sparse_conv3d_fp32")
    inp = load_file(str(case / "inputs.safetensors"))
    ref = load_file(str(case / "outputs.safetensors"))["out_feats"]
    conv = SparseConv3d(5, 7, 3)
    conv.load_state_dict(load_file(str(case / "model.safetensors")))   # strict: keys weight, bias
    with torch.no_grad():
        out = conv(SparseTensor(inp["feats"], inp["coords"])).feats
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_neighbor_map_semantics_and_cache_sharing():
    x = random_sparse([50, 70], 7, seed=11, channels=4)
    nbr = neighbor_map(x)
    c = x.coords.long()
    offs = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    lookup = {tuple(r): i for i, r in enumerate(c.tolist())}
    for i in range(0, len(x), 7):
        for v in range(27):
            q = (c[i, 0].item(), *(c[i, 1:] + offs[v]).tolist())
            assert nbr[i, v].item() == lookup.get(q, -1)
    y = x.replace(x.feats * 2)
    assert neighbor_map(y) is nbr            # same voxel set -> cached map reused, not rebuilt


def test_neighbor_map_rejects_duplicate_voxels():
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.int32)
    with pytest.raises(InputError, match="duplicate"):
        neighbor_map_sorted(coords, (2, 2, 2))


def test_conv_rejects_wrong_shapes():
    x = random_sparse([10], 4, seed=1, channels=6)
    with pytest.raises(InputError, match="feats"):
        SparseConv3d(5, 3).double()(x)
    with pytest.raises(InputError, match="kernel_size"):
        SparseConv3d(5, 3, kernel_size=5)


def test_empty_voxel_sets_flow_through_conv_and_c2s():
    from propforge.sparse import channel_to_spatial
    x = random_sparse([5, 3], 4, seed=4, channels=16, dtype=torch.float32)
    child, parent = channel_to_spatial(x, torch.zeros(8, 8, dtype=torch.bool))   # every parent vanishes
    assert len(child) == 0 and parent.numel() == 0 and child.batch_size == 2
    y = SparseConv3d(2, 3)(child)
    assert y.feats.shape == (0, 3)


def test_conv_is_differentiable_on_the_torch_path():
    x = random_sparse([40, 30], 5, seed=8, channels=3)
    conv = SparseConv3d(3, 2).double()
    feats = x.feats.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: conv(x.replace(f)).feats, (feats,), eps=1e-6, atol=1e-6)
