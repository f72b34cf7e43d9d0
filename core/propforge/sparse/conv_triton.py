"""Triton masked implicit-GEMM submanifold conv (the GPU path of ``conv.py``).

Why masked: on a voxelised surface a voxel has ~12 of its 27 neighbours (measured on the
../shared assets), so a plain implicit GEMM over all 27 offsets does 2.2x the useful work. The plan
sorts voxels by their neighbour mask (Gray-code order) so that a block of BM rows shares few
offsets, and lists per block only the offsets some row needs. For each offset its block needs, the
kernel reads the BM neighbour indices as one coalesced run (the plan keeps the map transposed in
sorted order), then runs a constant-trip loop over K-tiles (Ci is a compile-time constant): gathers
BM feature rows (missing -> 0), multiplies by the [Ci, BN] weight slice of that offset read straight
from the checkpoint layout [Co, 27, Ci], and accumulates in fp32. Output rows are written back in
input order. This nest pipelines far better than one flat (offset, K-tile) loop or Triton's own
loop flattening (H100, 891 k voxels, 1024 channels: 47 ms vs 71 / 55 ms; benchmarks/RESULTS.md).

Split passes: with the 27 offsets in 2 or 3 groups, each pass sorts by a 13-14 or 9-bit mask and
wastes far fewer pairs (useful share at 128 rows, 12 k voxels: 0.60 / 0.73 / 0.83; 190 k: 0.81 /
0.94 / 0.98); earlier passes write fp32 partials that the last pass adds in its epilogue (a fixed
order: deterministic). On Hopper the passes overlap through programmatic dependent launch.

Weight tiles come through ordinary loads or, on Hopper from 128 channels, a TMA descriptor. Which
block height and how many passes: ``conv.gpu_path`` (timed once per shape on small sets, else
``choose_groups``).
Reference: ``sparse_conv3d_torch``; benchmark and H100/H200 numbers: ``benchmarks/sparse_conv.py``,
``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch

from .triton_utils import interpreting, tl, triton, triton_available  # noqa: F401

if triton is not None:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


#: Offset groups (checkpoint offset ids) of a plan split into 1, 2 or 3 passes.
GROUPS = {1: (tuple(range(27)),), 2: (tuple(range(13)), tuple(range(13, 27))),
          3: (tuple(range(9)), tuple(range(9, 18)), tuple(range(18, 27)))}


class Pass(NamedTuple):
    """One kernel launch over every voxel for the offsets of one group.

    order int32 [N]: voxel of each slot; nbr_t int32 [G, N]: ``nbr_t[j, s]`` is the neighbour at the
    group's j-th offset of the voxel in slot s (one coalesced run per block and offset);
    offsets int32 [nb, G]: local offset ids each BM-row block needs, needed ones first;
    count int32 [nb]: how many; goff int32 [G]: checkpoint offset id of each local id.
    """
    order: torch.Tensor
    nbr_t: torch.Tensor
    offsets: torch.Tensor
    count: torch.Tensor
    goff: torch.Tensor


def build_plan(nbr: torch.Tensor, block_m: int, groups: int = 1) -> tuple[Pass, ...]:
    """The kernel's passes: each sorts the voxels by their neighbour mask within its offset group.

    Why groups: a block multiplies every offset any of its rows needs, and on small sets few rows
    share a 27-bit mask (12 k voxels: 5.6 k distinct masks, 0.64 of the multiplied pairs useful at
    64 rows). Split into 2 or 3 groups the masks are 13-14 or 9 bits, blocks become near-uniform
    (0.80 / 0.89) and each extra pass costs one fp32 [N, Co] partial written and read back.
    """
    passes = []
    for goff, order, need in _sorted_groups(nbr, block_m, groups):
        order, need = _costliest_blocks_first(order, need, block_m)
        count = need.sum(1, dtype=torch.int32)
        rank = (~need).to(torch.int32) * 32 + torch.arange(len(goff), device=nbr.device, dtype=torch.int32)
        offsets = torch.argsort(rank, dim=1).to(torch.int32)
        nbr_t = nbr[order][:, goff].t().contiguous().to(torch.int32)
        passes.append(Pass(order.to(torch.int32).contiguous(), nbr_t, offsets.contiguous(), count.contiguous(),
                           goff.to(torch.int32)))
    return tuple(passes)


def _sorted_groups(nbr: torch.Tensor, block_m: int, groups: int):
    """Per offset group: (checkpoint offset ids int64 [G], voxel order by mask rank, [nb, G] needed offsets)."""
    if groups not in GROUPS:
        raise ValueError(f"groups must be one of {sorted(GROUPS)}, got {groups}")
    valid = nbr >= 0
    freq = valid.sum(0)
    for offs in GROUPS[groups]:
        goff = torch.tensor(offs, dtype=torch.int64, device=nbr.device)
        vg = valid[:, goff]
        order = torch.argsort(_mask_rank(vg, freq[goff]), stable=True)
        yield goff, order, _block_need(vg, order, block_m)


def _mask_rank(valid: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """Sort key of each row's neighbour mask: its rank in the reflected Gray-code sequence, rarest
    offset as the top bit. Why: neighbours in Gray order differ in one bit (binary order flips many
    at a carry), so a block of consecutive rows needs fewer offsets (+3-5 % useful pairs)."""
    pos = torch.empty_like(freq)
    pos[torch.argsort(freq, stable=True)] = torch.arange(len(freq) - 1, -1, -1, device=freq.device)
    g = (valid.to(torch.int64) << pos.to(torch.int64)).sum(1)
    for s in (1, 2, 4, 8, 16):   # Gray code -> rank: prefix XOR from the top bit
        g ^= g >> s
    return g


def plan_efficiency(nbr: torch.Tensor, block_m: int, groups: int = 1) -> float:
    """Useful (voxel, neighbour) pairs over pairs the kernel multiplies (1.0 = no wasted work).
    Only the blocks' needed offsets count: no index table is built (block order does not change it)."""
    multiplied = sum(float(need.sum()) for _, _, need in _sorted_groups(nbr, block_m, groups)) * block_m
    return float((nbr >= 0).sum()) / max(1.0, multiplied)


def _costliest_blocks_first(order: torch.Tensor, need: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder whole blocks by needed offsets, most first (a partial last block stays last).

    Why: blocks launch in index order and SMs take the next one as they free up, so starting with
    the longest blocks is longest-processing-time-first scheduling; on small sets, where the grid is
    only a few waves, this trims the ragged last wave (H100: 2-10 % at 12-31 k voxels).
    """
    n = order.shape[0]
    full = n // block_m
    perm = torch.argsort(need[:full].sum(1), descending=True, stable=True)
    perm = torch.cat([perm, torch.arange(full, need.shape[0], device=perm.device)])
    rows = (perm[:, None] * block_m + torch.arange(block_m, device=perm.device)).flatten()
    return order[rows[rows < n]], need[perm]


def _block_need(valid: torch.Tensor, order: torch.Tensor, block_m: int) -> torch.Tensor:
    """[nb, G] bool: offsets some row of each BM-row block (in ``order``) has a neighbour at."""
    n, g = valid.shape
    nb = (n + block_m - 1) // block_m
    vs = torch.zeros(nb * block_m, g, dtype=torch.bool, device=valid.device)
    vs[:n] = valid[order]
    return vs.view(nb, block_m, g).any(1)


if triton is not None:
    @triton.jit
    def _conv_kernel(feats, nbr_t, weight, bias, out, order, blk_off, blk_cnt, goff, part0, part1, N, N_BUCKET,
                     NOFF, CI: tl.constexpr, CO: tl.constexpr, NPART: tl.constexpr, PDL: tl.constexpr,
                     HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                     W_TMA: tl.constexpr):
        # one pass of a plan: the NOFF offsets of one group (local ids; goff maps them to checkpoint
        # ids); a final pass adds NPART fp32 partials [N, CO] of earlier passes, by voxel row.
        # PDL (Hopper+, split plans): the next pass may start once every program here has started
        # (it fills this pass's last, ragged wave); each pass waits for its predecessor's memory
        # before its epilogue, so partials are complete when read (a chain: pass 3 after 2 after 1)
        if PDL:
            gdc_launch_dependents()
        # W_TMA: ``weight`` is a TensorDescriptor of the [Co, 27·Ci] weight with block [BN, BK]
        # (the copy engine fetches B tiles; needs Ci % BK == 0 and weight dtype == feats dtype)
        # grouped launch order: GROUP_M row blocks share the weight tiles while they sit in L2
        pid = tl.program_id(0)
        num_m = tl.cdiv(N, BM)
        num_n: tl.constexpr = (CO + BN - 1) // BN
        group = pid // (GROUP_M * num_n)
        first_m = group * GROUP_M
        size_m = num_m - first_m
        if size_m > GROUP_M:
            size_m = GROUP_M
        pid_m = first_m + (pid % (GROUP_M * num_n)) % size_m
        pid_n = (pid % (GROUP_M * num_n)) // size_m

        slot = pid_m * BM + tl.arange(0, BM)
        row_ok = slot < N
        rn = pid_n * BN + tl.arange(0, BN)
        n_ok = rn < CO
        rk = tl.arange(0, BK)
        K_TILES: tl.constexpr = (CI + BK - 1) // BK
        EVEN_K: tl.constexpr = CI % BK == 0
        if not W_TMA:
            w_col = weight + rn.to(tl.int64)[None, :] * (27 * CI)
        cnt = tl.load(blk_cnt + pid_m)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for i in range(0, cnt):   # the block's needed offsets; inside, a constant-trip K loop
            j = tl.load(blk_off + pid_m * NOFF + i)
            idx = tl.load(nbr_t + j * N + slot, mask=row_ok, other=-1)
            v = tl.load(goff + j)
            a_row = feats + idx.to(tl.int64)[:, None] * CI
            row_has = (idx >= 0)[:, None]
            for kt in range(0, K_TILES):
                kk = kt * BK + rk
                a_ok = row_has
                if not EVEN_K:
                    a_ok = a_ok & (kk < CI)[None, :]
                a = tl.load(a_row + kk[None, :], mask=a_ok, other=0.0)
                if W_TMA:
                    b = weight.load([pid_n * BN, v * CI + kt * BK]).T
                else:
                    b = tl.load(w_col + v * CI + kk[:, None], mask=(kk < CI)[:, None] & n_ok[None, :], other=0.0)
                acc = tl.dot(a, b.to(a.dtype), acc, input_precision=PRECISION)
        if PDL:
            gdc_wait()
        rows = tl.load(order + slot, mask=row_ok, other=0).to(tl.int64)
        at = rows[:, None] * CO + rn[None, :]
        ok = row_ok[:, None] & n_ok[None, :]
        if NPART >= 1:
            acc += tl.load(part0 + at, mask=ok, other=0.0)
        if NPART >= 2:
            acc += tl.load(part1 + at, mask=ok, other=0.0)
        if HAS_BIAS:
            acc += tl.load(bias + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(out + at, acc.to(out.dtype.element_ty), mask=ok)

    WIDE = 1 << 16   # GROUP_M this large = every row block of one N-tile before the next N-tile

    def _configs(block_m: int) -> list:
        """Tile shapes; the WIDE-group ones keep one N-tile's weights (27·Ci·BN) resident in L2,
        which matters once all 27 offsets' weights (27·Ci·Co) outgrow L2 (Ci = Co = 1024: 56 MB)."""
        cfgs = []
        for bn, bk, w, s, g in [(64, 64, 4, 4, 8), (128, 64, 4, 4, 8), (128, 64, 8, 3, 8), (128, 64, 8, 4, 8),
                                (64, 32, 4, 3, 8), (128, 32, 4, 4, 8), (256, 64, 8, 3, WIDE), (256, 64, 8, 4, WIDE),
                                (256, 64, 8, 4, 8)]:
            if block_m == 64 and bn == 256:
                continue
            cfgs.append(triton.Config({"BN": bn, "BK": bk, "GROUP_M": g}, num_warps=w, num_stages=s))
        return cfgs

    def _prune(configs: list, named_args: dict, **kwargs) -> list:
        """Drop tiles much wider than the channel counts (they only add masked work and tuning time)."""
        ci, co = kwargs["CI"], kwargs["CO"]   # constexpr channel counts arrive as keyword args
        keep = [c for c in configs if c.kwargs["BK"] <= max(32, triton.next_power_of_2(ci))
                and c.kwargs["BN"] <= max(64, triton.next_power_of_2(co))]
        return keep or configs

    def _set_tma_block(nargs: dict) -> None:
        nargs["weight"].block_shape = [nargs["BN"], nargs["BK"]]

    def _prune_tma(configs: list, named_args: dict, **kwargs) -> list:
        return [c for c in _prune(configs, named_args, **kwargs) if kwargs["CI"] % c.kwargs["BK"] == 0]

    def _tma_configs(block_m: int) -> list:
        return [triton.Config(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages, pre_hook=_set_tma_block)
                for c in _configs(block_m)]

    def _quick_bench(fn, quantiles=None):
        """Autotune timing: shorter than Triton's default (25 ms warm-up, 100 ms) to cut first-call cost."""
        from triton.testing import do_bench
        return do_bench(fn, warmup=10, rep=40, quantiles=quantiles)

    _KEY = ["N_BUCKET", "CI", "CO", "NPART", "PDL", "HAS_BIAS", "PRECISION", "W_TMA"]
    _tuned = {(bm, False): triton.autotune(configs=_configs(bm), key=_KEY, cache_results=True, do_bench=_quick_bench,
                                           prune_configs_by={"early_config_prune": _prune})(_conv_kernel)
              for bm in (64, 128)}
    _tuned.update({(bm, True): triton.autotune(configs=_tma_configs(bm), key=_KEY, cache_results=True, do_bench=_quick_bench,
                                               prune_configs_by={"early_config_prune": _prune_tma})(_conv_kernel)
                   for bm in (64, 128)})


def best_config(block_m: int, tma: bool = False) -> str | None:
    """The autotuner's last pick for this block size (for benchmark reports)."""
    tuner = _tuned.get((block_m, tma)) if triton is not None else None
    return None if tuner is None or tuner.best_config is None else str(tuner.best_config)


def _pow2_at_least(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, x))))


def _cdiv(a: int, b: int) -> int:
    """Ceiling division on Python ints (``triton.cdiv`` is a jit-aware function: ~2 µs a call)."""
    return -(-a // b)


def choose_block_m(n: int, co: int) -> int:
    """128-row blocks when they fill the GPU's 132 SMs a few times over, else 64."""
    return 128 if _cdiv(n, 128) * _cdiv(co, 128) >= 4 * 132 else 64


#: What one byte of split-pass partial traffic costs, in multiplied FLOPs (fitted on an H100 from
#: 1-vs-2-group timings at 190-892 k voxels, 256-1024 channels: 3.35 TB/s against ~600 TFLOP/s of
#: kernel rate would give 180; partial stores into scattered rows cost more).
FLOP_PER_BYTE = 270


def choose_groups(nbr: torch.Tensor, block_m: int, ci: int, plan_cache: dict | None = None) -> int:
    """Offset groups (1-3) with the least modelled cost per output channel: multiplied FLOPs
    (2 · pairs · Ci / plan efficiency) plus each extra pass's fp32 partial (8 bytes per voxel).
    Without a plan cache to keep the set's statistics (three plan builds) it answers 1."""
    if plan_cache is None:
        return 1
    key = f"conv_eff_{block_m}"
    stats = plan_cache.get(key)
    if stats is None:   # once per voxel set: the GPU syncs of these reductions stay out of later calls
        stats = plan_cache[key] = float((nbr >= 0).sum()), {g: plan_efficiency(nbr, block_m, g) for g in GROUPS}
    pairs, effs = stats
    n = nbr.shape[0]
    cost = {g: 2 * pairs * ci / max(e, 1e-9) + (g - 1) * n * 8 * FLOP_PER_BYTE for g, e in effs.items()}
    return min(cost, key=cost.get)


def sparse_conv3d_triton(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None, plan_cache: dict | None = None,
                         block_m: int | None = None, config: dict | None = None,
                         out: torch.Tensor | None = None, tma: bool | None = None,
                         groups: int = 1) -> torch.Tensor:
    """[N, Ci] -> [N, Co] in feats' dtype. fp64 is not a Triton dot type: callers use the torch path.

    ``plan_cache`` (the SparseTensor cache) keeps the sorted plan per block size for later layers.
    ``config`` pins BN/BK/GROUP_M/num_warps/num_stages (tests, interpreter); else autotuned on CUDA.
    ``out`` (contiguous [N, Co], feats' dtype) receives the result instead of a new tensor.
    ``tma`` loads weight tiles with the tensor-memory accelerator (default: ``use_tma``).
    ``groups`` splits the 27 offsets into 1-3 passes (``build_plan``); each extra pass needs an fp32
    [N, Co] buffer. The sum per output is in a fixed order: results are deterministic either way.
    """
    if feats.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        from .conv import sparse_conv3d_torch
        return sparse_conv3d_torch(feats, nbr, weight, bias)
    n, ci = feats.shape
    co = weight.shape[0]
    feats = feats.contiguous()
    nbr = nbr.contiguous()
    weight = weight.contiguous()
    bm = block_m or (32 if interpreting() else choose_block_m(n, co))
    key = f"conv_plan_{bm}_g{groups}"
    if plan_cache is not None and key in plan_cache:
        plan = plan_cache[key]
    else:
        plan = build_plan(nbr, bm, groups)
        if plan_cache is not None:
            plan_cache[key] = plan
    if out is None:
        out = torch.empty(n, co, dtype=feats.dtype, device=feats.device)
    elif out.shape != (n, co) or out.dtype != feats.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{n}, {co}] {feats.dtype} tensor")
    precision = "tf32" if (feats.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
                           and not interpreting()) else "ieee"
    if config is None and (interpreting() or bm not in (64, 128) or not feats.is_cuda):
        config = {"BN": _pow2_at_least(co, 16, 64), "BK": _pow2_at_least(ci, 16, 32), "GROUP_M": 4}
    if tma is None:
        tma = use_tma(feats, weight)
    if tma and not tma_ok(feats, weight, config):
        raise ValueError("TMA weight loads need weight dtype == feats dtype, Ci % 16 == 0 and Ci % BK == 0")
    w_arg = weight
    if tma:   # block shape: set per launch from the tile (autotuning: by the config's pre_hook)
        from triton.tools.tensor_descriptor import TensorDescriptor
        w_arg = TensorDescriptor.from_tensor(weight.view(co, 27 * ci), [64, 64])
    parts: list[torch.Tensor] = []
    pdl = len(plan) > 1 and use_pdl(feats)
    for i, step in enumerate(plan):   # earlier passes write fp32 partials the last one adds
        last = i == len(plan) - 1
        dst = out if last else torch.empty(n, co, dtype=torch.float32, device=feats.device)
        _launch(step, feats, weight, w_arg, bias if last else None, dst, parts if last else [], bm, precision,
                bool(tma), config, pdl, pdl and i > 0)
        parts.append(dst)
    return out


def _launch(step: Pass, feats: torch.Tensor, weight: torch.Tensor, w_arg, bias: torch.Tensor | None, out: torch.Tensor,
            parts: list[torch.Tensor], bm: int, precision: str, tma: bool, config: dict | None,
            pdl: bool = False, launch_pdl: bool = False) -> None:
    """One pass: the pinned ``config``, else the tile tuned for this key (autotuning on first use)."""
    n, ci = feats.shape
    co = out.shape[1]
    bucket = max(0, n.bit_length() - 14)   # autotune again per ×2 of N above 16k rows (tile choice)
    tune_key = (bm, tma, bucket, ci, co, len(parts), pdl, precision, feats.dtype, weight.dtype,
                None if bias is None else bias.dtype, out.dtype, feats.device.index)
    if config is None:
        config = _BEST.get(tune_key)   # after the first call: launch the winner without the autotuner
    if tma and config is not None:
        w_arg.block_shape = [config["BN"], config["BK"]]
    p0 = parts[0] if parts else out
    p1 = parts[1] if len(parts) > 1 else p0
    args = (feats, step.nbr_t, w_arg, bias if bias is not None else feats, out, step.order, step.offsets,
            step.count, step.goff, p0, p1, n, bucket, step.nbr_t.shape[0])
    flags = {"CI": ci, "CO": co, "NPART": len(parts), "PDL": pdl, "HAS_BIAS": bias is not None,
             "PRECISION": precision, "BM": bm, "W_TMA": tma}
    if launch_pdl:
        flags["launch_pdl"] = True
    if config is not None:
        cfg = dict(config)
        meta = {k: cfg.pop(k) for k in ("num_warps", "num_stages") if k in cfg}
        grid = (_cdiv(n, bm) * _cdiv(co, cfg["BN"]),)
        _conv_kernel[grid](*args, **flags, **cfg, **meta)
    else:
        grid = lambda meta: (_cdiv(n, bm) * _cdiv(co, meta["BN"]),)  # noqa: E731
        tuner = _tuned[(bm, tma)]
        tuner[grid](*args, **flags)
        best = tuner.best_config
        _BEST[tune_key] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}


# Autotuned tile per (block rows, TMA, N bucket, channels, precision, dtypes, device). Why: Triton's
# autotuner wrapper costs ~45 µs of CPU per call (H100 host, 256-channel conv on 12 k voxels: 79 µs
# through it vs 29 µs for a direct launch), more than such a kernel's GPU time.
_BEST: dict[tuple, dict] = {}


def tma_ok(feats: torch.Tensor, weight: torch.Tensor, config: dict | None = None) -> bool:
    """Whether B tiles can come through a TMA descriptor without straddling two offsets."""
    ci = feats.shape[1]
    bk_ok = config is None or ci % config["BK"] == 0
    return weight.dtype == feats.dtype and ci % 32 == 0 and bk_ok and feats.dtype != torch.float32


def use_tma(feats: torch.Tensor, weight: torch.Tensor) -> bool:
    """Default: TMA weight tiles on Hopper+ for Ci >= 128 where ``tma_ok`` holds (measured on an H200:
    3-6 % faster from 128 channels up, slower at 64 on small sets); PROPFORGE_SPARSE_TMA=0 disables."""
    if os.environ.get("PROPFORGE_SPARSE_TMA", "1") == "0" or interpreting() or not feats.is_cuda:
        return False
    return feats.shape[1] >= 128 and _capability(feats.device.index) >= 9 and tma_ok(feats, weight)


def use_pdl(feats: torch.Tensor) -> bool:
    """Programmatic dependent launch between the passes of a split plan: CUDA Hopper+ (sm_90)."""
    return feats.is_cuda and not interpreting() and _capability(feats.device.index) >= 9 and USE_PDL


USE_PDL = True   # module switch for side-by-side measurements (benchmarks)


@functools.lru_cache(maxsize=None)
def _capability(index: int | None) -> int:
    """Major compute capability, looked up once per device (the query costs µs on every small conv)."""
    return torch.cuda.get_device_capability(index)[0]

