"""SparseTensor data model and channel<->space resampling (spec §2.5, §2.12)."""
from __future__ import annotations

import pytest
import torch

from propforge.errors import InputError
from propforge.sparse import (LayerNorm32, SparseLinear, SparseTensor, channel_to_spatial, children_feats,
                              spatial_to_channel)


def small() -> SparseTensor:
    coords = torch.tensor([[0, 0, 0, 0], [0, 2, 1, 0], [2, 1, 1, 3], [2, 0, 4, 1]], dtype=torch.int32)
    return SparseTensor(torch.arange(4 * 16, dtype=torch.float32).reshape(4, 16), coords)


def test_layout_batch_size_spatial_shape_and_empty_items():
    x = small()
    assert x.batch_size == 3
    assert x.layout == [slice(0, 2), slice(2, 2), slice(2, 4)]
    assert x.cu_seqlens.tolist() == [0, 2, 2, 4]
    assert x.spatial_shape == (3, 5, 4)
    assert x.shape == torch.Size([3, 16])
    y = SparseTensor(x.feats, x.coords, batch_size=5)        # trailing empty items kept
    assert y.batch_size == 5 and y.layout[3:] == [slice(4, 4), slice(4, 4)]


def test_replace_shares_coords_and_cache():
    x = small()
    _ = x.layout
    y = x.replace(x.feats + 1)
    assert y.coords is x.coords and y.cache is x.cache
    z = x + torch.ones(3, 16) * torch.arange(3)[:, None]      # per-sample dense broadcast
    assert torch.equal(z.feats[2:], x.feats[2:] + 2) and torch.equal(z.feats[:2], x.feats[:2])


@pytest.mark.parametrize("coords,msg", [
    (torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32), "ascending"),
    (torch.tensor([[0, -1, 0, 0]], dtype=torch.int32), "non-negative"),
    (torch.tensor([[0, 0, 0]], dtype=torch.int32), r"\[N, 4\]"),
    (torch.tensor([[0, 0, 0, 0]], dtype=torch.int64), "int32"),
])
def test_bad_coords_are_rejected(coords, msg):
    with pytest.raises(InputError, match=msg):
        SparseTensor(torch.zeros(coords.shape[0], 2), coords)


def test_channel_to_spatial_order_and_features():
    x = small()
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[0, [7, 1]] = True
    mask[2, [0, 4, 3]] = True
    mask[3, 5] = True
    child, parent = channel_to_spatial(x, mask)
    assert parent.tolist() == [0, 0, 2, 2, 2, 3]               # parents in input order
    ks = [1, 7, 0, 3, 4, 5]                                       # ascending k inside each parent
    for row, (p, k) in enumerate(zip(parent.tolist(), ks)):
        d = torch.tensor([k & 1, k >> 1 & 1, k >> 2 & 1], dtype=torch.int32)
        assert torch.equal(child.coords[row, 1:], x.coords[p, 1:] * 2 + d)
        assert child.coords[row, 0] == x.coords[p, 0]
        assert torch.equal(child.feats[row], x.feats[p, 2 * k:2 * k + 2])
    other = torch.randn(4, 24)
    assert torch.equal(children_feats(child, other), other.reshape(4, 8, 3)[parent, torch.tensor(ks)])
    assert child.batch_size == 3


def test_spatial_to_channel_then_cached_channel_to_spatial_roundtrip():
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(8 ** 3, generator=g)[:90].sort().values
    xyz = torch.stack([flat // 64, flat // 8 % 8, flat % 8], 1)
    coords = torch.cat([torch.zeros(50, 1, dtype=torch.long), torch.ones(40, 1, dtype=torch.long)], 0)
    coords = torch.cat([coords, xyz], 1).to(torch.int32)
    x = SparseTensor(torch.randn(90, 3, generator=g), coords)
    parents, parent = spatial_to_channel(x)
    pc = parents.coords.long()
    keys = ((pc[:, 0] * 4 + pc[:, 1]) * 4 + pc[:, 2]) * 4 + pc[:, 3]
    assert bool((keys[1:] > keys[:-1]).all())                   # unique parents in sorted key order
    assert torch.equal(parents.coords[parent, 1:], x.coords[:, 1:] // 2)
    f = parents.feats.reshape(-1, 8, 3)
    occupied = torch.zeros(len(parents), 8, dtype=torch.bool)
    k = (x.coords[:, 1] & 1) + 2 * (x.coords[:, 2] & 1) + 4 * (x.coords[:, 3] & 1)
    occupied[parent, k.long()] = True
    assert torch.equal(f[parent, k.long()], x.feats) and bool((f[~occupied] == 0).all())
    back, _ = channel_to_spatial(parents)                       # cached mode: encoder's children, order
    assert torch.equal(back.coords, x.coords) and torch.equal(back.feats, x.feats)


def test_two_level_spatial_to_channel_is_undone_level_by_level():
    """Cached-mode C2S of a coarse level re-creates the middle level with its own S2C map, so a second
    cached C2S re-creates the fine voxels: exact coords, order and features (spec §2.5 'Cached mode')."""
    g = torch.Generator().manual_seed(1)
    flat = torch.randperm(16 ** 3, generator=g)[:300].sort().values
    xyz = torch.stack([flat // 256, flat // 16 % 16, flat % 16], 1)
    b = torch.cat([torch.zeros(170, 1, dtype=torch.long), torch.ones(130, 1, dtype=torch.long)], 0)
    fine = SparseTensor(torch.randn(300, 2, generator=g), torch.cat([b, xyz], 1).to(torch.int32))
    mid, _ = spatial_to_channel(fine)
    coarse, _ = spatial_to_channel(mid.replace(mid.feats * 3))     # features replaced: cache shared
    assert len(fine) > len(mid) > len(coarse)
    back_mid, _ = channel_to_spatial(coarse)
    assert torch.equal(back_mid.coords, mid.coords) and torch.equal(back_mid.feats, mid.feats * 3)
    back_fine, parent = channel_to_spatial(back_mid.replace(mid.feats))
    assert torch.equal(back_fine.coords, fine.coords) and torch.equal(back_fine.feats, fine.feats)
    assert torch.equal(back_mid.coords[parent, 1:], fine.coords[:, 1:] // 2)
    assert back_fine.scale == fine.scale and back_fine.batch_size == 2
    assert "c2s_parent" not in mid.cache                          # the encoder's cache is not written to


def test_rowwise_layers_keep_voxels():
    x = small()
    lin = SparseLinear(16, 5)
    ln = LayerNorm32(5, eps=1e-6)
    y = ln(lin(x.type(torch.float16).to(torch.float32)))
    assert y.coords is x.coords and y.feats.shape == (4, 5)
    h = ln.half()(lin(x).type(torch.float16))
    assert h.feats.dtype == torch.float16
