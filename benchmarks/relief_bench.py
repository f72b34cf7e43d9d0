"""Relief image (1024 px) -> GLB on the CPU, per-stage timings (target: whole job <= 5 s on 2 cores).

    python benchmarks/relief_bench.py [IMAGE ...] [--repeat 3] [--faces 20000] [--texture-size 1024]

Each image is resized so its longer side is exactly 1024 px. Reports wall time (best of --repeat) and
the process CPU time of the same run, because CI-like machines are shared: wall time alone then
measures the neighbours. Default images: three of ../shared/data/images.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ["00_0e4984a9.webp", "04_1c359e94.webp", "17_7bd0521d.webp"]


def one_run(data: bytes, faces: int, texture_size: int) -> dict[str, float]:
    """The whole job as propforge.api.generate_glb runs it, timed step by step."""
    from propforge.export import export_glb
    from propforge.generators.relief import ReliefGenerator
    from propforge.image import load_image
    from propforge.options import ExportOptions

    t: dict[str, float] = {}
    stamps: list[tuple[str, float, float]] = []
    w0, c0 = time.perf_counter(), time.process_time()
    im = load_image(data)
    t["load_image"] = time.perf_counter() - w0
    g0, gc0 = time.perf_counter(), time.process_time()
    gen = ReliefGenerator().generate(
        im, progress=lambda ev: stamps.append((ev.stage, time.perf_counter(), time.process_time())))
    g1, gc1 = time.perf_counter(), time.process_time()
    export_t: dict[str, float] = {}
    glb = export_glb(gen, ExportOptions(faces=faces, texture_size=texture_size), timings=export_t)
    t["total"] = time.perf_counter() - w0
    t["cpu_total"] = time.process_time() - c0
    dec, dec_cpu = next((ts, cs) for s, ts, cs in stamps if s == "decode")
    t["relief:prepare"], t["relief:cpu:prepare"] = dec - g0, dec_cpu - gc0
    t["relief:decode"], t["relief:cpu:decode"] = g1 - dec, gc1 - dec_cpu
    t.update({f"export:{k}": v for k, v in export_t.items()})
    t["glb_bytes"] = len(glb)
    t["voxels"] = gen.ovoxel.num_voxels
    t["resolution"] = gen.ovoxel.resolution
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--texture-size", type=int, default=1024)
    args = ap.parse_args()
    shared = Path(os.environ.get("PROPFORGE_SHARED", ROOT.parent / "shared")) / "data" / "images"
    paths = [Path(p) for p in args.images] or [shared / n for n in DEFAULT_IMAGES]
    import torch

    import propforge
    print(f"# relief_bench: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__}, propforge {propforge.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# faces {args.faces}, texture {args.texture_size}, best of {args.repeat}")
    for p in paths:
        src = Image.open(p)
        src.load()
        scale = 1024 / max(src.size)
        img = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.LANCZOS)
        import io
        buf = io.BytesIO()
        img.save(buf, "PNG")
        data = buf.getvalue()
        runs = [one_run(data, args.faces, args.texture_size) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total"])
        keys = ["load_image"] + [k for k in best if k.startswith(("relief:", "export:"))]
        print(f"\n{p.name} ({img.width}x{img.height}): total {best['total']:.2f} s wall, "
              f"{best['cpu_total']:.2f} s CPU; all runs {', '.join('%.2f' % r['total'] for r in runs)} s; "
              f"GLB {best['glb_bytes'] / 1e6:.2f} MB, {best['voxels']} voxels at R={best['resolution']}")
        print("  " + ", ".join(f"{k} {best[k]:.2f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
