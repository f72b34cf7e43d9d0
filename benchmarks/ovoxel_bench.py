"""Benchmark: textured mesh -> O-Voxel (spec §3.3/§3.4) on the CPU, by default at R = 512 for the largest asset.

    python benchmarks/ovoxel_bench.py [--asset MetalRoughSpheresNoTextures.glb] [--resolution 512] [--repeat 1]

"Largest" = most triangles among ../shared/data/assets (MetalRoughSpheresNoTextures, 1.04 M). Prints
wall and process-CPU time per pass (crossings, voxel set, face pass, boundary pass, QEF, attributes),
the voxel count and peak RSS. Upstream's C++ claims "< 10 s on one CPU" with no asset named (spec §5.1).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

SHARED = Path(os.environ.get("PROPFORGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--asset", default="")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    import numpy as np

    from propforge.gltf_read import load_gltf, normalize_to_unit_cube
    from propforge.ovoxel import mesh_to_ovoxel

    assets = sorted((SHARED / "data" / "assets").glob("*.glb"))
    if not assets:
        raise SystemExit(f"no assets under {SHARED / 'data' / 'assets'}")
    t = time.perf_counter()
    loaded = {}
    for a in assets if not args.asset else [SHARED / "data" / "assets" / args.asset]:
        loaded[a.name] = load_gltf(a)
    name = max(loaded, key=lambda k: sum(len(m.faces) for m in loaded[k]))
    meshes, _, _ = normalize_to_unit_cube(loaded[name])
    tris = sum(len(m.faces) for m in meshes)
    print(f"{name}: {len(meshes)} primitives, {tris} triangles (load + normalise {time.perf_counter() - t:.2f}s)")
    for rep in range(args.repeat):
        timings: dict[str, float] = {}
        t, c = time.perf_counter(), time.process_time()
        ov = mesh_to_ovoxel(meshes, args.resolution, timings=timings)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        steps = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
        print(f"run {rep + 1}: R={args.resolution} {ov.num_voxels} voxels, wall {wall:.2f}s, process CPU {cpu:.2f}s "
              f"(wall per pass: {steps}); load average {os.getloadavg()[0]:.1f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"asset": name, "triangles": tris, "resolution": args.resolution, "voxels": ov.num_voxels,
                      "peak_rss_mb": round(peak), "machine": platform.node(), "cpu_count": os.cpu_count(),
                      "python": platform.python_version(), "numpy": np.__version__}))


if __name__ == "__main__":
    main()
