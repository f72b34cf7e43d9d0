"""Benchmark: O-Voxel at 512 (a detailed SDF shape) -> GLB with 2048 px textures on the CPU (target <= 10 s).

    python benchmarks/export_bench.py [--resolution 512] [--texture-size 2048] [--faces 20000] [--repeat 1]
                                      [--unwrap auto|box|xatlas]

Prints per-step timings (dual grid, clean-up, decimation, UV, bake, encode) and the total; the
O-Voxel construction (sdf_to_ovoxel) is timed separately because it belongs to the generator.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def detailed_sdf(r: int) -> np.ndarray:
    """A lumpy body (sphere + 3-axis ripples), a handle-like torus and a thin fin: curvature,
    a genus-1 part and thin features, built slab by slab to bound memory."""
    g = np.linspace(-0.5, 0.5, r + 1, dtype=np.float32)
    out = np.empty((r + 1,) * 3, np.float32)
    y, z = np.meshgrid(g, g, indexing="ij")
    for i, x in enumerate(g):
        body = np.sqrt(x * x + y * y + z * z) - 0.33 + 0.012 * (np.sin(31 * x) * np.sin(29 * y) * np.sin(23 * z))
        q = np.sqrt((x - 0.05) ** 2 + (z - 0.1) ** 2) - 0.3
        torus = np.sqrt(q * q + y * y) - 0.06
        fin = np.maximum(np.maximum(np.abs(y) - 0.012, np.abs(x + 0.05) - 0.42), np.abs(z + 0.28) - 0.18)
        out[i] = np.minimum(np.minimum(body, torus), fin)
    return out


def pbr_attrs(p: np.ndarray) -> np.ndarray:
    """Stripes and checkers in colour, roughness and metallic, so the bake does real work."""
    a = np.empty((len(p), 6), np.float32)
    a[:, 0] = 0.5 + 0.5 * np.sin(40 * p[:, 0])
    a[:, 1] = 0.5 + 0.5 * np.sin(40 * p[:, 1] + 1.0)
    a[:, 2] = 0.5 + 0.5 * np.sin(40 * p[:, 2] + 2.0)
    a[:, 3] = ((np.floor(p[:, 0] * 10) + np.floor(p[:, 2] * 10)) % 2).astype(np.float32)
    a[:, 4] = 0.2 + 0.6 * (p[:, 2] + 0.5)
    a[:, 5] = 1.0
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--texture-size", type=int, default=2048)
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--format", default="png")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--unwrap", default="auto", choices=["auto", "box", "xatlas"])
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from propforge import __version__
    from propforge.export import export_glb
    from propforge.options import ExportOptions
    from propforge.ovoxel.from_sdf import sdf_to_ovoxel
    from propforge.types import Generation

    t0 = time.perf_counter()
    sdf = detailed_sdf(args.resolution)
    t1 = time.perf_counter()
    ov = sdf_to_ovoxel(sdf, pbr_attrs)
    t2 = time.perf_counter()
    del sdf
    print(f"sdf grid {t1 - t0:.2f}s, sdf_to_ovoxel {t2 - t1:.2f}s: {ov.num_voxels} voxels at R={args.resolution}")
    opts = ExportOptions(faces=args.faces, texture_size=args.texture_size, texture_format=args.format)
    for rep in range(args.repeat):
        timings: dict[str, float] = {}
        t, c = time.perf_counter(), time.process_time()
        glb = export_glb(Generation(ov, "benchmark", 0), opts, path=args.out or None, timings=timings,
                         unwrap_method=args.unwrap)
        total, total_cpu = time.perf_counter() - t, time.process_time() - c
        steps = ", ".join(f"{k} {v:.2f}/{timings['cpu:' + k]:.2f}" for k, v in timings.items() if ":" not in k)
        steps += "; bake CPU: " + ", ".join(f"{k[9:]} {v:.2f}" for k, v in timings.items() if k.startswith("cpu:bake."))
        print(f"run {rep + 1}: total wall {total:.2f}s, process CPU {total_cpu:.2f}s "
              f"(step wall/CPU: {steps}); {len(glb) / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f}")
    print(json.dumps({"machine": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                      "numpy": np.__version__, "propforge": __version__, "voxels": ov.num_voxels,
                      "total_s": round(total, 2), "total_cpu_s": round(total_cpu, 2),
                      "steps_s": {k: round(v, 3) for k, v in timings.items()}}))


if __name__ == "__main__":
    main()
