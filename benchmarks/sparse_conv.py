"""Sparse 3x3x3 submanifold conv benchmark (issue 7 item 5).

Two steps because the GPU machine has neither ../shared nor internet:

  python benchmarks/sparse_conv.py prepare            # CPU, here: voxelise ../shared/data/assets
                                                      #   -> .gpu/sparse/<asset>_<R>.npy (int16 x,y,z)
  python benchmarks/sparse_conv.py run --out DIR      # GPU: correctness + timings -> DIR/sparse_conv.json

`run` measures, in one process on one card: the neighbour-map build (sort+searchsorted vs the Triton
hash table, checked equal), and for each structure x channels (Ci = Co) x dtype (fp16, bf16) the
Triton masked implicit GEMM, the PyTorch gather-GEMM fallback, spconv-triton / spconv where they
import, and a dense cuBLAS GEMM with the same useful FLOPs (2 · pairs · Ci · Co, pairs = present
(voxel, neighbour) pairs). "conv ms" is the public ``sparse_conv3d`` (what a model layer gets: on
small sets its tile height and split passes are timed once and cached, larger sets (path marked *)
follow ``choose_groups``); "plain"/"tma" are the one-pass Triton kernel
at the default tile height with weight tiles through ordinary loads / TMA.
Ratio = dense GEMM time / conv time (1.0 = as fast as cuBLAS per FLOP).
Every conv output is checked against the fp32 torch path (relative L2 error).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".gpu" / "sparse"
ASSETS = Path(os.environ.get("PROPFORGE_SHARED", ROOT.parent / "shared")) / "data" / "assets"

# (asset, resolution): realistic surface shells from 10k to ~1M voxels
STRUCTURES = [("Fox", 128), ("Suzanne", 128), ("SheenChair", 256), ("Suzanne", 512), ("GlassVaseFlowers", 512)]


# ------------------------------------------------------------------------------------------ prepare
def surface_voxels(vertices: np.ndarray, faces: np.ndarray, res: int, seed: int = 0) -> np.ndarray:
    """Voxels [N, 3] hit by area-uniform surface samples (≈ 6 samples per voxel-face area)."""
    rng = np.random.default_rng(seed)
    tri = vertices[faces].astype(np.float64)                      # [F, 3, 3] in [-0.5, 0.5]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    per = np.ceil(area * res * res * 6).astype(np.int64) + 3
    keys = []
    for s in range(0, len(tri), 20000):
        t, n = tri[s:s + 20000], per[s:s + 20000]
        idx = np.repeat(np.arange(len(t)), n)
        u, v = rng.random(len(idx)), rng.random(len(idx))
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        p = t[idx, 0] + u[:, None] * (t[idx, 1] - t[idx, 0]) + v[:, None] * (t[idx, 2] - t[idx, 0])
        c = np.clip(np.floor((p + 0.5) * res), 0, res - 1).astype(np.int64)
        keys.append(np.unique((c[:, 0] * res + c[:, 1]) * res + c[:, 2]))
    k = np.unique(np.concatenate(keys))
    return np.stack([k // (res * res), k // res % res, k % res], 1).astype(np.int16)


def prepare(out: Path) -> None:
    sys.path.insert(0, str(ROOT / "core"))
    from propforge.gltf_read import load_gltf, normalize_to_unit_cube
    out.mkdir(parents=True, exist_ok=True)
    for name, res in STRUCTURES:
        meshes, _, _ = normalize_to_unit_cube(load_gltf(ASSETS / f"{name}.glb"))
        verts = np.concatenate([m.vertices for m in meshes])
        offs = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        faces = np.concatenate([m.faces + o for m, o in zip(meshes, offs)])
        t = time.time()
        vox = surface_voxels(verts, faces, res)
        np.save(out / f"{name}_{res}.npy", vox)
        print(f"{name}@{res}: {len(vox)} voxels ({time.time() - t:.1f} s)", flush=True)


# ------------------------------------------------------------------------------------------ run
def _bench(fn, reps: int = 20) -> float:
    """Median ms over events (after warm-up), as triton.testing.do_bench does."""
    import triton.testing
    return float(triton.testing.do_bench(fn, warmup=10, rep=reps * 5, return_mode="median"))


def load_structures(data: Path, device: str, limit: int | None, min_voxels: int = 0):
    import torch
    from propforge.sparse import SparseTensor
    out = []
    for f in sorted(data.glob("*.npy"), key=lambda p: np.load(p, mmap_mode="r").shape[0]):
        xyz = torch.from_numpy(np.load(f).astype(np.int32))
        if (limit and len(xyz) > limit) or len(xyz) < min_voxels:
            continue
        coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32), xyz], 1).to(device)
        out.append((f.stem, SparseTensor(torch.empty(len(xyz), 0, device=device), coords)))
    return out


def spconv_impls():
    """(name, module) pairs of the spconv flavours importable here."""
    impls = []
    for name, mod in (("spconv-triton", "spconv_triton.pytorch"), ("spconv", "spconv.pytorch")):
        try:
            impls.append((name, __import__(mod, fromlist=["SubMConv3d"])))
        except Exception as e:  # noqa: BLE001
            print(f"{name}: not importable ({type(e).__name__}: {e})", flush=True)
    return impls


def run(out_dir: Path, data: Path, channels: list[int], dtypes: list[str], limit: int | None,
        torch_ref_max: int, bf16_channels: list[int], torch_fallback: bool = True,
        spconv_channels: list[int] | None = None, shapes: list[str] = (), min_voxels: int = 0) -> None:
    import torch
    import triton
    from propforge.sparse import build_neighbor_map, sparse_conv3d, sparse_conv3d_torch
    from propforge.sparse.conv import SMALL_SET, gpu_path
    from propforge.sparse.conv_triton import (best_config, build_plan, choose_block_m, plan_efficiency,
                                              sparse_conv3d_triton, tma_ok)
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    gpu = torch.cuda.get_device_name()
    env = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(env, flush=True)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    peak = 2 * 8192 ** 3 / _bench(lambda: a @ a) / 1e9
    print(f"dense bf16 8192^3 GEMM: {peak:.0f} TFLOP/s", flush=True)
    del a
    impls = spconv_impls()
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"env": env, "dense_peak_tflops": peak, "maps": [], "convs": []}
    for name, x in load_structures(data, dev, limit, min_voxels):
        n = len(x)
        ext = x.spatial_shape
        t_sort = _bench(lambda: build_neighbor_map(x.coords, ext, "sort"))
        t_hash = _bench(lambda: build_neighbor_map(x.coords, ext, "hash"))
        nbr = build_neighbor_map(x.coords, ext, "sort")
        same = bool(torch.equal(nbr, build_neighbor_map(x.coords, ext, "hash")))
        pairs = int((nbr >= 0).sum())
        eff = {f"{bm}/g{g}": plan_efficiency(nbr, bm, g) for bm in (64, 128) for g in (1, 2, 3)}
        t_plan = {g: _bench(lambda: build_plan(nbr, 128, g)) for g in (1, 2, 3)}
        m = {"structure": name, "voxels": n, "pairs": pairs, "pairs_per_voxel": pairs / n, "sort_ms": t_sort,
             "hash_ms": t_hash, "hash_equals_sort": same, "plan_ms": t_plan, "plan_efficiency": eff}
        results["maps"].append(m)
        print(json.dumps(m), flush=True)
        x.cache["neighbor_map"] = nbr
        for ci, co in [(c, c) for c in channels] + [tuple(int(v) for v in sh.split("x")) for sh in shapes]:
            c = ci
            for dn in (dtypes if c in bf16_channels or not bf16_channels else [d for d in dtypes if d != "bfloat16"]):
                dt = getattr(torch, dn)
                g = torch.Generator(device=dev).manual_seed(n + c)
                f = torch.randn(n, ci, device=dev, dtype=dt, generator=g)
                w = (torch.randn(co, 3, 3, 3, ci, device=dev, dtype=dt, generator=g) / math.sqrt(9 * ci)).to(dt)
                b = torch.randn(co, device=dev, dtype=dt, generator=g)
                flops = 2.0 * pairs * ci * co
                rec = {"structure": name, "voxels": n, "channels": c, "out_channels": co, "dtype": dn}
                ref = sparse_conv3d_torch(f.float(), nbr, w.float(), b.float()) if n <= torch_ref_max else None
                for tag, tma in (("triton", False), ("triton_tma", True)):
                    if tma and not tma_ok(f, w):
                        continue
                    t0 = time.time()
                    y = sparse_conv3d_triton(f, nbr, w, b, plan_cache=x.cache, tma=tma)
                    torch.cuda.synchronize()
                    rec[f"{tag}_first_call_s"] = time.time() - t0
                    rec[f"{tag}_config"] = best_config(choose_block_m(n, co), tma)
                    if ref is not None:
                        rec[f"{tag}_rel_err_vs_fp32"] = float((y.float() - ref).norm() / ref.norm())
                    rec[f"{tag}_ms"] = _bench(lambda: sparse_conv3d_triton(f, nbr, w, b, plan_cache=x.cache, tma=tma))
                    rec[f"{tag}_tflops"] = flops / rec[f"{tag}_ms"] / 1e9
                    del y
                # what users get: the public function (small sets: variants timed once per shape, cached)
                bm_, g_ = gpu_path(f, nbr, w, b, x.cache)
                rec["dispatch_path"] = f"{bm_}/g{g_}" + ("" if n <= SMALL_SET else "*")
                yd = sparse_conv3d(f, nbr, w, b, plan_cache=x.cache)
                if ref is not None:
                    rec["conv_rel_err_vs_fp32"] = float((yd.float() - ref).norm() / ref.norm())
                rec["conv_ms"] = _bench(lambda: sparse_conv3d(f, nbr, w, b, plan_cache=x.cache))
                rec["conv_tflops"] = flops / rec["conv_ms"] / 1e9
                del yd
                del ref
                da = torch.randn(pairs, ci, device=dev, dtype=dt)
                db = torch.randn(ci, co, device=dev, dtype=dt)
                rec["dense_gemm_ms"] = _bench(lambda: da @ db)
                del da, db
                rec["dense_tflops"] = flops / rec["dense_gemm_ms"] / 1e9
                rec["ratio_to_dense"] = rec["dense_gemm_ms"] / rec["conv_ms"]
                if torch_fallback and n * ci * 27 * 2 <= 4e9:
                    rec["torch_fallback_ms"] = _bench(lambda: sparse_conv3d_torch(f, nbr, w, b), reps=5)
                for iname, sp in impls:
                    if (spconv_channels and c not in spconv_channels) or ci != co:
                        continue
                    try:
                        rec[f"{iname}_ms"] = _bench_spconv(sp, x, f, w, b, c)
                    except Exception as e:  # noqa: BLE001
                        rec[f"{iname}_error"] = f"{type(e).__name__}: {e}"[:300]
                results["convs"].append(rec)
                print(json.dumps(rec), flush=True)
                (out_dir / "sparse_conv.json").write_text(json.dumps(results, indent=1))
                del f, w, b
        torch.cuda.empty_cache()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sparse_conv.json").write_text(json.dumps(results, indent=1))
    print_table(results)


def _bench_spconv(sp, x, f, w, b, c) -> float:
    """spconv(-triton) SubMConv3d with its index pairs built once (cached in indice_dict), kernel only."""
    import torch
    conv = sp.SubMConv3d(c, c, 3, padding=1, bias=True, indice_key="bench").to(f.device, f.dtype)
    with torch.no_grad():
        conv.weight.copy_(w.reshape(conv.weight.shape) if conv.weight.numel() == w.numel() else conv.weight)
        conv.bias.copy_(b)
    st = sp.SparseConvTensor(f, x.coords, list(x.spatial_shape), 1)
    with torch.no_grad():
        conv(st)
        return _bench(lambda: conv(st))


def _shares(eff: dict, bm: int) -> str:
    return "/".join(f"{eff[f'{bm}/g{g}']:.3f}" for g in (1, 2, 3))


def print_table(results: dict) -> None:
    print(f"\n{results['env']['gpu']}  dense bf16 peak {results['dense_peak_tflops']:.0f} TFLOP/s")
    print(f"{'structure':22} {'voxels':>8} {'nbr/vox':>7} {'sort ms':>8} {'hash ms':>8} {'plan ms g1/g2/g3':>17} "
          f"{'useful share 64 rows g1/g2/g3':>30} {'128 rows g1/g2/g3':>18}")
    for m in results["maps"]:
        eff = m["plan_efficiency"]
        pm = {int(k): v for k, v in m["plan_ms"].items()}   # int keys in memory, strings once read from JSON
        print(f"{m['structure']:22} {m['voxels']:8d} {m['pairs_per_voxel']:7.2f} {m['sort_ms']:8.3f} "
              f"{m['hash_ms']:8.3f} {'/'.join(f'{pm[g]:.2f}' for g in (1, 2, 3)):>17} "
              f"{_shares(eff, 64):>30} {_shares(eff, 128):>18}")
    print(f"\n{'structure':22} {'Ci>Co':>11} {'dtype':>8} {'plain':>8} {'tma':>8} {'conv ms':>8} {'path':>10} "
          f"{'TFLOP/s':>8} {'dense':>8} {'ratio':>6} {'spconv-tr':>9} {'spconv':>8} {'err':>8}")
    nan = float("nan")
    for r in results["convs"]:
        err = r.get("conv_rel_err_vs_fp32", nan)
        print(f"{r['structure']:22} {r['channels']:5d}>{r.get('out_channels', r['channels']):<5d} {r['dtype']:>8} "
              f"{r['triton_ms']:8.3f} {r.get('triton_tma_ms', nan):8.3f} {r['conv_ms']:8.3f} "
              f"{r.get('dispatch_path', '-'):>10} {r['conv_tflops']:8.1f} {r['dense_tflops']:8.1f} "
              f"{r['ratio_to_dense']:6.2f} {r.get('spconv-triton_ms', nan):9.3f} {r.get('spconv_ms', nan):8.3f} "
              f"{err:8.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=DATA)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--channels", type=int, nargs="*", default=[64, 128, 256, 512, 1024])
    r.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"])
    r.add_argument("--limit", type=int, default=None, help="skip structures with more voxels")
    r.add_argument("--min-voxels", type=int, default=0, help="skip structures with fewer voxels")
    r.add_argument("--bf16-channels", type=int, nargs="*", default=[],
                   help="run bfloat16 only at these channel counts (default: all)")
    r.add_argument("--shapes", nargs="*", default=[], help="extra CIxCO conv shapes, e.g. 1024x4096")
    r.add_argument("--no-torch-fallback", action="store_true", help="skip timing the PyTorch fallback")
    r.add_argument("--spconv-channels", type=int, nargs="*", default=[],
                   help="time spconv(-triton) only at these channel counts (default: all)")
    r.add_argument("--torch-ref-max", type=int, default=300_000, help="check vs torch fp32 up to this N")
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.out)
    else:
        run(args.out, args.data, args.channels, args.dtypes, args.limit, args.torch_ref_max, args.bf16_channels,
            not args.no_torch_fallback, args.spconv_channels, args.shapes, args.min_voxels)


if __name__ == "__main__":
    main()
