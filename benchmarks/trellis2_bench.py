"""TRELLIS.2 pipeline benchmark: per-stage wall time and peak GPU memory for each pipeline type.

Random weights at the released sizes (``--make full DIR`` writes them with ``propforge.trellis2.tiny``,
calibrated so the structure stage yields ~8192 tokens at 32³ and each decoder level keeps 4 of 8
children, roughly a real asset's counts), so the numbers measure the engine, not a real model's output.

    python benchmarks/trellis2_bench.py --make full /tmp/t2full --types 512,1024,1024_cascade,1536_cascade
    python benchmarks/trellis2_bench.py --model /tmp/t2full --json out.jsonl

Each type runs ``--repeat`` times after one untimed warm-up of the first type (Triton autotuning,
cuDNN plans); results are printed as a markdown table and appended as JSON lines to ``--json``.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "server")]

STAGES = ("prepare", "condition", "structure", "shape", "texture", "decode")


def test_image(size: int = 512) -> Image.Image:
    """A coloured, non-convex RGBA cut-out drawn in code (no data files on the GPU machine)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((xx - 0.5) ** 2 / 0.09 + (yy - 0.55) ** 2 / 0.16) < 1
    handle = ((xx - 0.78) ** 2 + (yy - 0.5) ** 2 < 0.12 ** 2) & ~((xx - 0.78) ** 2 + (yy - 0.5) ** 2 < 0.07 ** 2)
    mask = body | handle
    rgb = np.stack([180 + 60 * xx, 90 + 100 * yy, np.full_like(xx, 60)], -1)
    rgba = np.concatenate([rgb, mask[..., None] * 255.0], -1).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def environment() -> dict:
    import transformers
    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        pass
    return env


def sdpa_microbench(lengths: tuple[int, ...] = (8192, 32768)) -> dict:
    """Self-attention [1, 12, T, 128] bf16 per SDPA backend (ms, median of 10): which kernel to prefer."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out: dict = {}
    for t in lengths:
        q, k, v = (torch.randn(1, 12, t, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * 12 * t * t * 128
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("default", None)):
            try:
                def call():
                    if be is None:
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    with sdpa_kernel(be):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v)
                for _ in range(3):
                    call()
                times = []
                for _ in range(10):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record(); call(); b.record(); torch.cuda.synchronize()
                    times.append(a.elapsed_time(b))
                ms = sorted(times)[len(times) // 2]
                out[f"T{t}_{name}"] = {"ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1)}
            except Exception as e:  # noqa: BLE001 - a backend may not support this shape/card
                out[f"T{t}_{name}"] = f"unavailable: {type(e).__name__}"
    return out


def profile_flow(pipe, tokens: int, out: Path | None) -> dict:
    """One shape_1024 flow call at ``tokens`` random 64³ tokens under torch.profiler: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    flow = pipe.model("shape_slat_flow_model_1024")
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(64 ** 3, generator=g)[:tokens].sort().values
    coords = torch.stack([torch.zeros_like(flat), flat // 4096, flat // 64 % 64, flat % 64], 1).int().cuda()
    x = torch.randn(tokens, 32, generator=g).cuda()
    cond = torch.randn(1, 4101, flow.config.cond_channels, generator=g).cuda()
    t = torch.tensor([500.0], device="cuda")
    with torch.inference_mode():
        for _ in range(2):
            flow(x, coords, t, cond)
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); flow(x, coords, t, cond); b.record(); torch.cuda.synchronize()
        ms = a.elapsed_time(b)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            flow(x, coords, t, cond)
            torch.cuda.synchronize()
    try:
        table = prof.key_averages().table(sort_by="device_time_total", row_limit=18, max_name_column_width=60)
    except Exception:  # noqa: BLE001 - older torch names the column cuda_time_total
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60)
    if out is not None:
        out.with_name("profile_flow.txt").write_text(table)
    L = cond.shape[1]
    tflop = (2.3593e9 * tokens + 1.887e8 * L + 184320 * tokens ** 2 + 184320 * tokens * L) / 1e12
    return {"tokens": tokens, "ms": round(ms, 1), "tflop": round(tflop, 1), "tflops": round(tflop / ms * 1e3, 1)}


def flow_parity(pipe, tokens: int = 8192) -> dict:
    """Relative L2 between the compiled-glue and the eager shape_1024 flow on one random call."""
    from propforge.trellis2 import flow as flow_mod

    flow = pipe.model("shape_slat_flow_model_1024")
    g = torch.Generator().manual_seed(1)
    flat = torch.randperm(64 ** 3, generator=g)[:tokens].sort().values
    coords = torch.stack([torch.zeros_like(flat), flat // 4096, flat // 64 % 64, flat % 64], 1).int().cuda()
    x, cond = torch.randn(tokens, 32, generator=g).cuda(), torch.randn(1, 4101, 1024, generator=g).cuda()
    t = torch.tensor([700.0], device="cuda")
    outs = []
    for on in (False, True):
        flow_mod.set_compile(on)
        with torch.inference_mode():
            outs.append(flow(x, coords, t, cond).double())
    return {"tokens": tokens, "rel_l2": float((outs[1] - outs[0]).norm() / outs[0].norm())}


def compile_ab(pipe, image: Image.Image, types: list[str], args) -> list[dict]:
    """Same runs with the flow glue fused by torch.compile: first run (compiles) and a timed one."""
    from propforge.trellis2 import flow as flow_mod

    t = time.perf_counter()
    emit(args.json, {"compile_parity": flow_parity(pipe), "s": round(time.perf_counter() - t, 1)})
    flow_mod.set_compile(True)
    rows = []
    for ty in types:
        for r in range(2):
            t = time.perf_counter()
            st = pipe.run(image, seed=args.seed, pipeline_type=ty).stats
            rec = {"type": ty + "+compile", "repeat": r, "total_s": round(time.perf_counter() - t, 2),
                   "resolution": st["resolution"], "ss_tokens": st["ss_tokens"], "shape_tokens": st["shape_tokens"],
                   "voxels": st["voxels"], "timings_s": {k: round(v, 3) for k, v in st["timings_s"].items()},
                   "peak_gib": {k: round(v, 2) for k, v in st.get("peak_gib", {}).items()}}
            emit(args.json, rec)
            rows.append(rec)
    flow_mod.set_compile(False)
    return rows


def emit(path: Path | None, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if path is not None:
        with path.open("a") as f:
            f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--make", nargs=2, metavar=("PRESET", "DIR"), help="write a random checkpoint first (tiny|full)")
    ap.add_argument("--model", help="checkpoint folder (defaults to the --make folder)")
    ap.add_argument("--types", default="512,1024,1024_cascade,1536_cascade")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--precision", default=None, help="native (GPU default) or float32")
    ap.add_argument("--ss-tokens", type=int, default=None, help="with --make: target 32³ structure tokens")
    ap.add_argument("--json", type=Path, default=None, help="append JSON lines here")
    ap.add_argument("--no-microbench", action="store_true", help="skip the SDPA backend comparison (GPU)")
    ap.add_argument("--compile-ab", action="store_true",
                    help="GPU: repeat every type with the flow glue fused by torch.compile (A/B)")
    ap.add_argument("--profile-tokens", type=int, default=0,
                    help="GPU: profile one shape_1024 flow call at this many tokens (profile_flow.txt)")
    args = ap.parse_args(argv)

    from propforge.trellis2.pipeline import Trellis2Pipeline
    from propforge.trellis2.tiny import write_checkpoint

    emit(args.json, {"env": environment()})
    if torch.cuda.is_available() and not args.no_microbench:
        emit(args.json, {"sdpa_self_attention": sdpa_microbench()})
    model = args.model
    if args.make:
        t = time.perf_counter()
        model = str(write_checkpoint(args.make[1], args.make[0], ss_tokens=args.ss_tokens, link_1024=True))
        emit(args.json, {"make_checkpoint_s": round(time.perf_counter() - t, 2), "preset": args.make[0]})
        gc.collect()                      # the calibration pipeline's models must not count below
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not model:
        ap.error("give --model or --make")
    t = time.perf_counter()
    pipe = Trellis2Pipeline.from_pretrained(model, precision=args.precision, low_vram=False)
    types = args.types.split(",")
    keys = {"sparse_structure_flow_model", "sparse_structure_decoder", "shape_slat_decoder", "tex_slat_decoder"}
    for ty in types:
        keys |= {f"shape_slat_flow_model_{'512' if ty == '512' else '1024'}",
                 f"tex_slat_flow_model_{'512' if ty == '512' else '1024'}"}
        if ty.endswith("cascade"):
            keys.add("shape_slat_flow_model_512")
    pipe.load_all(tuple(k for k in pipe.config.models if k in keys))
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    emit(args.json, {"load_s": round(time.perf_counter() - t, 2), "models": sorted(keys),
                     "resident_gib": round(torch.cuda.memory_allocated() / 2 ** 30, 2) if pipe.device.type == "cuda" else None})
    image = test_image()
    t = time.perf_counter()
    asset = pipe.run(image, seed=args.seed, pipeline_type=types[0])
    emit(args.json, {"warmup": types[0], "total_s": round(time.perf_counter() - t, 2),
                     "timings_s": {k: round(v, 3) for k, v in asset.stats["timings_s"].items()}})
    rows = []
    for ty in types:
        for r in range(args.repeat):
            t = time.perf_counter()
            asset = pipe.run(image, seed=args.seed, pipeline_type=ty)
            total = time.perf_counter() - t
            st = asset.stats
            rec = {"type": ty, "repeat": r, "total_s": round(total, 2), "resolution": st["resolution"],
                   "ss_tokens": st["ss_tokens"], "shape_tokens": st["shape_tokens"], "voxels": st["voxels"],
                   "cascade_tried": st.get("cascade_tried"),
                   "timings_s": {k: round(v, 3) for k, v in st["timings_s"].items()},
                   "peak_gib": {k: round(v, 2) for k, v in st.get("peak_gib", {}).items()}}
            emit(args.json, rec)
            rows.append(rec)
    if args.compile_ab and pipe.device.type == "cuda":
        rows += compile_ab(pipe, image, types, args)
    if args.profile_tokens and pipe.device.type == "cuda":
        emit(args.json, {"profile_flow": profile_flow(pipe, args.profile_tokens, args.json)})
    print("\n| type | R | tokens (SS / shape) | voxels | " + " | ".join(STAGES) + " | total s | peak GiB |")
    print("|" + "---|" * (len(STAGES) + 6))
    for r in rows:
        peak = max(r["peak_gib"].values()) if r["peak_gib"] else float("nan")
        print(f"| {r['type']} | {r['resolution']} | {r['ss_tokens']} / {r['shape_tokens']} | {r['voxels']} | "
              + " | ".join(f"{r['timings_s'].get(s, 0):.2f}" for s in STAGES) + f" | {r['total_s']:.2f} | {peak:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
