"""Side by side on one GPU: the sparse conv kernel's variants (block rows x offset passes x PDL).

Why: ``conv.gpu_path`` picks among these per shape; this shows what each costs, in one run, so the
candidate list and ``choose_groups``' constant can be re-checked on another card. bf16, Ci = Co,
bias on, autotuned over a reduced tile set (BK = 64) to keep compile time down; every variant's
output is compared with the first one's (relative L2). Needs CUDA and `.gpu/sparse` (see
``sparse_conv.py prepare``); results: benchmarks/RESULTS.md, raw JSON under benchmarks/data/.

  python benchmarks/sparse_conv_variants.py --out DIR [--limit 200000]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sparse_conv import DATA, ROOT, _bench, load_structures  # noqa: E402

sys.path.insert(0, str(ROOT / "core"))
VARIANTS = [(128, 1, 0), (128, 2, 0), (128, 2, 1), (128, 3, 0), (128, 3, 1), (64, 1, 0), (64, 2, 1), (64, 3, 1)]
TILES = {128: [(128, 64, 8, 3), (128, 64, 8, 4), (256, 64, 8, 4), (128, 64, 4, 4)],   # BN, BK, warps, stages
         64: [(128, 64, 4, 4), (128, 64, 8, 4), (256, 64, 8, 4)]}


def reduced_autotuners(ct, triton) -> None:
    """Replace the module's autotuners by ones over TILES (same key, pruning and TMA hook)."""
    for bm, tiles in TILES.items():
        for tma in (False, True):
            cfgs = [triton.Config({"BN": bn, "BK": bk, "GROUP_M": 8}, num_warps=w, num_stages=s,
                                  pre_hook=ct._set_tma_block if tma else None) for bn, bk, w, s in tiles]
            prune = ct._prune_tma if tma else ct._prune
            ct._tuned[(bm, tma)] = triton.autotune(configs=cfgs, key=ct._KEY, cache_results=True, do_bench=ct._quick_bench,
                                                   prune_configs_by={"early_config_prune": prune})(ct._conv_kernel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    ap.add_argument("--limit", type=int, default=200_000, help="skip structures with more voxels")
    args = ap.parse_args()
    import torch
    import triton
    from propforge.sparse import build_neighbor_map
    from propforge.sparse import conv_triton as ct
    reduced_autotuners(ct, triton)
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": []}
    for name, x in load_structures(DATA, "cuda", args.limit):
        n = len(x)
        nbr = build_neighbor_map(x.coords, x.spatial_shape, "sort")
        pairs = int((nbr >= 0).sum())
        for c in ([256, 512, 1024] if n < 100_000 else [512, 1024]):
            g = torch.Generator(device="cuda").manual_seed(n + c)
            f = torch.randn(n, c, device="cuda", dtype=torch.bfloat16, generator=g)
            w = (torch.randn(c, 3, 3, 3, c, device="cuda", generator=g) / math.sqrt(9 * c)).to(torch.bfloat16)
            b = torch.randn(c, device="cuda", dtype=torch.bfloat16, generator=g)
            da, db = torch.randn(pairs, c, device="cuda", dtype=torch.bfloat16), torch.randn(c, c, device="cuda", dtype=torch.bfloat16)
            row = {"structure": name, "voxels": n, "ch": c, "dense_ms": _bench(lambda: da @ db), "t": {}}
            del da, db
            cache, ref = {}, None
            for bm, groups, pdl in VARIANTS:
                ct.USE_PDL = bool(pdl)
                def fn():
                    return ct.sparse_conv3d_triton(f, nbr, w, b, plan_cache=cache, block_m=bm, groups=groups)
                y = fn().float()
                ref = y if ref is None else ref
                row["t"][f"{bm}/g{groups}/p{pdl}"] = (min(_bench(fn), _bench(fn)), float((y - ref).norm() / ref.norm()))
            ct.USE_PDL = True
            best = min(row["t"], key=lambda k: row["t"][k][0])
            print(f"{name:20s} {n:7d} {c:5d} dense {row['dense_ms']:6.3f} | "
                  + " ".join(f"{k}:{v[0]:.3f}" for k, v in row["t"].items())
                  + f" | best {best} ratio {row['dense_ms'] / row['t'][best][0]:.2f}", flush=True)
            res["rows"].append(row)
            (args.out / "sparse_conv_variants.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
