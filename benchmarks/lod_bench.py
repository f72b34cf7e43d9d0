"""Cost and fidelity of `--lods 4 --collision convex|mesh` on top of the plain export (CPU).

For each input (relief images from ../shared/data/images and real assets from ../shared/data/assets
voxelised at R = 256) the same Generation is exported twice, plain and with LODs + collider, and we
report: the extra export time (the "lod" step, CPU seconds), GLB size, faces per level, collider
faces, and the colour fidelity of each level: PSNR of the base colour at random points of LODk
(through its own UVs) against LOD0's colour at the nearest point of LOD0.

    python benchmarks/lod_bench.py [--images 4] [--assets Suzanne,CesiumMilkTruck,SheenChair,Fox]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ASSETS, IMAGES  # noqa: E402
from roundtrip_metrics import closest_on_mesh, psnr  # noqa: E402
from test_export_lods import _base_colour, node_mesh, read_accessor  # noqa: E402


def level_psnr(g, rng: np.random.Generator, n: int = 20000) -> list[float]:
    sample = _base_colour(g)
    names = [x.name for x in g.nodes if "_LOD" in (x.name or "")]
    prim0, v0, f0 = node_mesh(g, names[0])
    uv0 = read_accessor(g, prim0.attributes.TEXCOORD_0).astype(np.float64)
    ext = float(np.ptp(v0, 0).max())
    out = []
    for name in names[1:]:
        prim, v, f = node_mesh(g, name)
        uv = read_accessor(g, prim.attributes.TEXCOORD_0).astype(np.float64)
        area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
        fi = rng.choice(len(f), n, p=area / area.sum())
        r = rng.random((n, 2))
        r[r.sum(1) > 1] = 1 - r[r.sum(1) > 1]
        b = np.stack([1 - r.sum(1), r[:, 0], r[:, 1]], 1)[:, :, None]
        _, face, b0 = closest_on_mesh((b * v[f[fi]]).sum(1), v0, f0, 0.05 * ext)
        ok = face >= 0
        out.append(psnr(sample((b * uv[f[fi]]).sum(1)[ok]), sample((b0[ok][:, :, None] * uv0[f0[face[ok]]]).sum(1))))
    return out


def run(name: str, generation, collision: str) -> None:
    import pygltflib as gl

    from propforge.export import export_glb
    from propforge.options import ExportOptions
    from propforge.validate import validate_glb, validator_available

    t_plain: dict[str, float] = {}
    t0 = time.perf_counter()
    plain = export_glb(generation, ExportOptions(), timings=t_plain)
    t1 = time.perf_counter()
    t: dict[str, float] = {}
    glb = export_glb(generation, ExportOptions(lods=4, collision=collision), timings=t)
    t2 = time.perf_counter()
    g = gl.GLTF2.load_from_bytes(glb)
    stats = g.asset.extras["stats"]
    warn = "n/a"
    if validator_available():
        rep = validate_glb(glb)
        warn = f"{rep.num_errors}/{rep.num_warnings}"
    p = level_psnr(g, np.random.default_rng(0))
    print(f"| {name} | {collision} | {t1 - t0:.2f} / {t2 - t1:.2f} s | {t['lod']:.2f} s ({t['cpu:lod']:.2f} s CPU) "
          f"| {len(plain) / 1e6:.2f} -> {len(glb) / 1e6:.2f} MB | {' / '.join(map(str, stats['lod_faces']))} "
          f"| {stats['collision']['faces']} | {' / '.join(f'{x:.1f}' for x in p)} | {warn} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4, help="relief inputs, spread over ../shared/data/images")
    ap.add_argument("--assets", default="Suzanne,CesiumMilkTruck,SheenChair,Fox")
    args = ap.parse_args()

    from PIL import Image

    from propforge.generators import load_generator
    from propforge.gltf_read import load_gltf, normalize_to_unit_cube
    from propforge.ovoxel import mesh_to_ovoxel
    from propforge.types import Generation

    print("| input | collider | export plain / with LODs + collider (wall) | lod step (wall, CPU) | GLB size "
          "| faces LOD0 / LOD1 / ... | collider faces | PSNR LOD1 / LOD2 / ... vs LOD0 (dB) | validator err/warn |")
    print("|---|---|---|---|---|---|---|---|---|")
    files = sorted(IMAGES.glob("*"))
    relief = load_generator("relief")
    for path in files[:: max(1, len(files) // max(args.images, 1))][: args.images]:
        run(f"relief {path.stem}", relief.generate(Image.open(path), seed=0), "convex")
    for i, asset in enumerate(a for a in args.assets.split(",") if a):
        src, _, _ = normalize_to_unit_cube(load_gltf(ASSETS / f"{asset}.glb"))
        run(f"{asset} (R 256)", Generation(mesh_to_ovoxel(src, 256), "roundtrip", 0), "convex" if i % 2 == 0 else "mesh")


if __name__ == "__main__":
    main()
