"""Triton sparse kernels (masked implicit-GEMM conv, hash-table lookup) against simple references.

Where to run: on a CUDA machine the tests run on the GPU at full sizes; on CPU (CI) the single
test ``test_kernels_under_triton_interpreter`` re-runs this file in a subprocess with
TRITON_INTERPRET=1 (the variable must be set before Triton decorates the kernels) on tiny sizes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_sparse_conv import dense_reference, random_sparse

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
GPU = torch.cuda.is_available() and not INTERP
DEV = "cuda" if GPU else "cpu"
pytest.importorskip("triton")
kernels = pytest.mark.skipif(not (INTERP or GPU), reason="needs CUDA or TRITON_INTERPRET=1 (run by the test below)")


def test_kernels_under_triton_interpreter():
    if INTERP or GPU:
        pytest.skip("kernels run directly in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
                       env=env, capture_output=True, text=True, timeout=900, cwd=Path(__file__).parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all()
    return float((out.double().cpu() - ref).norm() / ref.norm())


SMALL = [  # (counts per batch item, extent, Ci, Co, block_m, config)
    ([0, 200, 3, 90], 9, 13, 19, 32, {"BN": 16, "BK": 16, "GROUP_M": 2}),     # empty item, odd channels
    ([70, 60], 6, 40, 33, 32, {"BN": 32, "BK": 16, "GROUP_M": 4}),          # 3 K-tiles, 2 N-tiles, borders
    ([1, 0, 2], 2, 5, 7, 16, {"BN": 16, "BK": 16, "GROUP_M": 1}),              # almost empty
    ([60, 0, 40], 6, 64, 24, 32, {"BN": 16, "BK": 32, "GROUP_M": 2}),         # TMA-eligible Ci
]
LARGE = [  # pinned configs keep GPU test time low; the last case goes through the autotuner
    ([40000, 0, 9000], 48, 64, 64, 64, {"BN": 64, "BK": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}),
    ([30000], 40, 96, 160, 128, {"BN": 128, "BK": 32, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}),
    ([60000, 25000], 64, 256, 256, None, None),
]


@kernels
@pytest.mark.parametrize("case", LARGE if GPU else SMALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize("tma", [False, True])
def test_triton_conv_matches_dense_conv3d(case, dtype, tma):
    # bf16 only on the GPU: Triton 3.6's interpreter mis-computes bf16 dots (checked with a 16x16 tl.dot)
    from propforge.sparse import neighbor_map
    from propforge.sparse.conv_triton import sparse_conv3d_triton
    counts, extent, ci, co, bm, cfg = case
    if tma and (dtype == torch.float32 or ci % 32 or (cfg and ci % cfg["BK"])):
        pytest.skip("TMA weight tiles need fp16/bf16 and Ci a multiple of 32 and of BK")
    x = random_sparse(counts, extent, seed=ci * co, channels=ci, dtype=torch.float32)
    w = torch.randn(co, 3, 3, 3, ci) / (3 * ci ** 0.5)
    b = torch.randn(co)
    ref = dense_reference(x, w, b)
    xd = x.to(DEV)
    poisoned = torch.full((len(x), co), float("nan"), dtype=dtype, device=DEV)   # every row must be written
    out = sparse_conv3d_triton(xd.feats.to(dtype), neighbor_map(xd), w.to(DEV, dtype), b.to(DEV, dtype),
                               plan_cache=xd.cache, block_m=bm, config=cfg, out=poisoned, tma=tma)
    assert out is poisoned
    assert out.dtype == dtype and out.shape == (len(x), co)
    if cfg is None:   # the second call launches the tuned tile directly (no autotuner): same result
        again = sparse_conv3d_triton(xd.feats.to(dtype), neighbor_map(xd), w.to(DEV, dtype), b.to(DEV, dtype),
                                     plan_cache=xd.cache, block_m=bm, tma=tma)
        assert torch.equal(again, out)
    tol = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]
    assert rel_err(out, ref) < tol


@kernels
@pytest.mark.parametrize("groups", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_split_pass_conv_matches_dense_conv3d(groups, dtype):
    """Passes over offset groups, summed through fp32 partials, equal the one-pass conv's reference;
    every row is written (poisoned output) and a second call gives the same bits (fixed sum order)."""
    from propforge.sparse import neighbor_map
    from propforge.sparse.conv_triton import sparse_conv3d_triton
    counts, extent, ci, co, bm, cfg = (SMALL[1] if not GPU else LARGE[1])
    x = random_sparse(counts, extent, seed=groups, channels=ci, dtype=torch.float32)
    w = torch.randn(co, 3, 3, 3, ci) / (3 * ci ** 0.5)
    b = torch.randn(co)
    ref = dense_reference(x, w, b)
    xd = x.to(DEV)
    args = (xd.feats.to(dtype), neighbor_map(xd), w.to(DEV, dtype), b.to(DEV, dtype))
    poisoned = torch.full((len(x), co), float("nan"), dtype=dtype, device=DEV)
    out = sparse_conv3d_triton(*args, plan_cache=xd.cache, block_m=bm, config=cfg, out=poisoned, groups=groups)
    assert f"conv_plan_{bm}_g{groups}" in xd.cache
    again = sparse_conv3d_triton(*args, plan_cache=xd.cache, block_m=bm, config=cfg, groups=groups)
    assert torch.equal(again, out)
    assert rel_err(out, ref) < {torch.float32: 1e-5, torch.float16: 3e-3}[dtype]


@kernels
def test_module_dispatches_to_triton(monkeypatch):
    from propforge.sparse import SparseConv3d
    monkeypatch.setenv("PROPFORGE_SPARSE_BACKEND", "triton")
    x = random_sparse([70, 0, 40], 6, seed=5, channels=8, dtype=torch.float32).to(DEV)
    conv = SparseConv3d(8, 12).to(DEV)
    with torch.no_grad():
        y = conv(x)
    assert any(k.startswith("conv_plan_") for k in x.cache)        # the Triton path ran and cached its plan
    ref = dense_reference(x.to("cpu"), conv.weight.detach().cpu(), conv.bias.detach().cpu())
    assert rel_err(y.feats, ref) < 1e-5


@kernels
@pytest.mark.parametrize("counts,extent", [([0, 120, 3, 50], 8), ([200], 12)] if not GPU
                         else [([200000, 0, 50000], 128), ([1], 1)])
def test_hash_lookup_equals_sorted_lookup(counts, extent):
    from propforge.sparse import neighbor_map_sorted
    from propforge.sparse.hashmap import neighbor_map_hash
    x = random_sparse(counts, extent, seed=2, channels=1).to(DEV)
    assert torch.equal(neighbor_map_hash(x.coords, x.spatial_shape), neighbor_map_sorted(x.coords, x.spatial_shape))


@kernels
def test_hash_lookup_rejects_duplicates():
    from propforge.errors import InputError
    from propforge.sparse.hashmap import neighbor_map_hash
    coords = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 2, 3]], dtype=torch.int32, device=DEV)
    with pytest.raises(InputError, match="duplicate"):
        neighbor_map_hash(coords, (2, 3, 4))


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_plan_lists_every_needed_offset(groups):
    """Each pass must cover each present (voxel, offset) pair of its group (else outputs silently drop
    terms), list every voxel once, and the groups must partition the 27 offsets."""
    from propforge.sparse import neighbor_map
    from propforge.sparse.conv_triton import build_plan, plan_efficiency
    x = random_sparse([300, 0, 77], 10, seed=9, channels=1)
    nbr = neighbor_map(x)
    plan = build_plan(nbr, 32, groups)
    assert len(plan) == groups
    assert sorted(v for p in plan for v in p.goff.tolist()) == list(range(27))
    for p in plan:
        order, goff = p.order.long(), p.goff.long()
        assert sorted(order.tolist()) == list(range(len(x)))
        assert torch.equal(p.nbr_t, nbr[order][:, goff].t())      # the kernel's coalesced index table
        full = len(x) // 32
        assert bool((p.count[:full].diff() <= 0).all())                   # costliest blocks launch first
        for blk in range(len(p.count)):
            rows = order[blk * 32:(blk + 1) * 32]
            need = set(torch.nonzero((nbr[rows][:, goff] >= 0).any(0)).flatten().tolist())
            assert set(p.offsets[blk, :p.count[blk]].tolist()) == need
    multiplied = sum(int(p.count.sum()) for p in plan) * 32
    assert plan_efficiency(nbr, 32, groups) == float((nbr >= 0).sum()) / multiplied


def _shell_map() -> torch.Tensor:
    """Neighbour map of a thick sphere shell (~14 k voxels): a surface like the decoders see."""
    from propforge.sparse.neighbors import neighbor_map_sorted
    g = torch.stack(torch.meshgrid(*[torch.arange(40)] * 3, indexing="ij"), -1).reshape(-1, 3).float()
    r = (g - 19.5).norm(dim=1)
    xyz = g[(r > 15) & (r < 17)].int()                  # a thick sphere shell, ~14 k voxels
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32), xyz], 1)
    return neighbor_map_sorted(coords, (40, 40, 40))


def test_split_plans_multiply_fewer_pairs():
    """Why the passes exist: on a surface shell, 2 or 3 offset groups waste fewer multiplied pairs."""
    from propforge.sparse.conv_triton import plan_efficiency
    nbr = _shell_map()
    e1, e2, e3 = (plan_efficiency(nbr, 64, g) for g in (1, 2, 3))
    assert e1 < e2 < e3 <= 1.0


def test_choose_groups_weighs_wasted_flops_against_partials():
    """Narrow channels keep one pass (a partial costs more than the pairs it saves); wide ones split.
    The set's statistics are computed once and kept in the plan cache."""
    from propforge.sparse.conv_triton import choose_groups
    nbr, cache = _shell_map(), {}
    assert choose_groups(nbr, 64, 16, cache) == 1
    assert choose_groups(nbr, 64, 8192, cache) > 1
    assert "conv_eff_64" in cache
    assert choose_groups(nbr, 64, 8192, None) == 1        # no cache: no per-call statistics


@pytest.mark.skipif(not GPU, reason="the path timing runs on CUDA only")
def test_small_set_dispatch_times_tile_heights(monkeypatch):
    """Small sets: the public conv times block heights x split passes once, caches the pick, stays exact."""
    from propforge.sparse import neighbor_map, sparse_conv3d
    from propforge.sparse.conv import _GPU_PATH, CANDIDATES, gpu_path
    monkeypatch.delenv("PROPFORGE_SPARSE_BACKEND", raising=False)
    x = random_sparse([3000, 500], 24, seed=11, channels=64, dtype=torch.float32)
    w = torch.randn(96, 3, 3, 3, 64) / 24
    b = torch.randn(96)
    ref = dense_reference(x, w, b)
    xd = x.to(DEV)
    f, nbr = xd.feats.half(), neighbor_map(xd)
    out = sparse_conv3d(f, nbr, w.to(DEV).half(), b.to(DEV).half(), plan_cache=xd.cache)
    path = gpu_path(f, nbr, w.to(DEV).half(), b.to(DEV).half(), xd.cache)
    assert path in CANDIDATES and path in _GPU_PATH.values()
    assert rel_err(out, ref) < 3e-3
