"""How long other Python threads stall while a mesh is unwrapped (xatlas holds the GIL throughout).

    python benchmarks/uv_gil_bench.py            # both ways, side by side, one process

A ticker thread sleeps 5 ms at a time and records the longest gap it sees while ``uv.unwrap`` runs
on UV-sphere grids of growing size; once with xatlas in its worker process (the default), once with
``xatlas_worker`` forced in-process. A server's gRPC streams and health checks feel the same gaps.
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from propforge.mesh import uv, xatlas_worker


def grid_sphere(n: int) -> tuple[np.ndarray, np.ndarray]:
    th, ph = np.meshgrid(np.linspace(0.01, np.pi - 0.01, n), np.linspace(0, 2 * np.pi, 2 * n, endpoint=False),
                         indexing="ij")
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    idx = np.arange(n * 2 * n).reshape(n, 2 * n)
    a, b, c, d = idx[:-1], np.roll(idx, -1, 1)[:-1], idx[1:], np.roll(idx, -1, 1)[1:]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    return v * (1 + 0.2 * np.sin(5 * v[:, :1])), f


def longest_stall(fn) -> tuple[float, float]:
    """(seconds fn took, longest gap between a 5 ms ticker's wake-ups meanwhile)."""
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    t = threading.Thread(target=tick)
    t.start()
    t0 = time.perf_counter()
    fn()
    took = time.perf_counter() - t0
    stop.set()
    t.join()
    return took, max(gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="grid rows (faces = 4 n²)")
    args = ap.parse_args()
    v0, f0 = grid_sphere(8)
    uv.unwrap(v0, f0, 256)                      # start the worker process outside the timing
    for n in args.sizes:
        v, f = grid_sphere(n)
        row = []
        for in_process in (False, True):
            xatlas_worker._in_process = in_process
            took, gap = longest_stall(lambda: uv.unwrap(v, f, 1024))
            row.append(f"{'in-process' if in_process else 'child'} {took:.2f} s, longest stall {gap * 1e3:.0f} ms")
        xatlas_worker._in_process = False
        print(f"{len(f):8d} faces: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
