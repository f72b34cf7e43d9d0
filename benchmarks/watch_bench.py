"""Watch mode under a burst: N images dropped at once into a temp Godot project, relief backend in-process.

  python benchmarks/watch_bench.py [--images 100] [--size 64] [--faces 500] [--texture-size 128] [--workers 1]

Reports
1. burst: wall time from the first drop to the last "done" status, the sum of the job times the
   watcher recorded (``runs.seconds``: generate + export), and the difference (intake, hashing,
   status and .meta writes, queueing); every image must be generated exactly once;
2. drop -> done latency per image (p50 / p95 / max): what a designer waits, mostly queueing;
3. duplicates: the same N images dropped again under other names: all answered by copy, no job;
4. restart: stop, start on the 2N finished images: time until the start-up scan has skipped them all.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


from bench_inputs import cutout_png, pct  # benchmarks/ is on sys.path when run as a script


def iso_to_epoch(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def wait_all_done(w, layout, rels: list[str], timeout: float) -> dict[str, dict]:
    from propforge_server.watch import read_status

    end = time.time() + timeout
    while time.time() < end:
        sts = {r: read_status(layout.output_path(r)) or {} for r in rels}
        if all(s.get("state") in ("done", "failed") for s in sts.values()):
            return sts
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout} s")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--faces", type=int, default=500)
    ap.add_argument("--texture-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    import torch

    from propforge_server.watch import WatchConfig, Watcher, project_layout

    options = {"backend": "relief", "export": {"faces": args.faces, "texture_size": args.texture_size}}
    pngs = [cutout_png(args.size, 1000 + i) for i in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "game"
        root.mkdir()
        (root / "project.godot").write_text("config_version=5\n")
        layout = project_layout(root)
        cfg = WatchConfig(options=options, workers=args.workers, settle_s=0.5)
        w = Watcher(layout, cfg).start()
        # warm-up (imports, first-call costs) outside the measurement
        (layout.drop / "warmup.png").write_bytes(cutout_png(args.size, 1))
        wait_all_done(w, layout, ["warmup.png"], 120)

        rels = [f"burst/img_{i:03d}.png" for i in range(args.images)]
        (layout.drop / "burst").mkdir()
        dropped: dict[str, float] = {}
        t0 = time.time()
        for rel, data in zip(rels, pngs):
            (layout.drop / rel).write_bytes(data)
            dropped[rel] = time.time()
        sts = wait_all_done(w, layout, rels, 3600)
        wall = max(iso_to_epoch(s["updated"]) for s in sts.values()) - t0
        runs = [r for r in w.db.runs() if r["source"] in dropped]
        gen = [r for r in runs if r["kind"] == "generated"]
        assert sorted(r["source"] for r in gen) == rels, "every image exactly once"
        failed = [r for r, s in sts.items() if s["state"] != "done"]
        job_sum = sum(r["seconds"] for r in gen)
        latency = [iso_to_epoch(sts[r]["updated"]) - dropped[r] for r in rels]

        dups = [f"dups/copy_{i:03d}.png" for i in range(args.images)]
        (layout.drop / "dups").mkdir()
        t1 = time.time()
        for rel, data in zip(dups, pngs):
            (layout.drop / rel).write_bytes(data)
        dsts = wait_all_done(w, layout, dups, 600)
        dup_wall = max(iso_to_epoch(s["updated"]) for s in dsts.values()) - t1
        copied = sum(1 for r in w.db.runs() if r["kind"] == "copied")
        w.stop()

        t2 = time.time()
        w2 = Watcher(layout, cfg).start()
        w2.wait_idle(600)
        restart = time.time() - t2
        skipped = w2.stats["skipped"]
        w2.stop()

    res = {
        "images": args.images, "size": args.size, "faces": args.faces, "texture_size": args.texture_size,
        "workers": args.workers, "failed": len(failed),
        "burst_wall_s": round(wall, 2), "sum_job_s": round(job_sum, 2),
        "watch_overhead_s": round(wall - job_sum, 2),
        "overhead_per_image_ms": round(1000 * (wall - job_sum) / args.images, 1),
        "latency_p50_s": round(pct(latency, 50), 2), "latency_p95_s": round(pct(latency, 95), 2),
        "latency_max_s": round(max(latency), 2),
        "duplicates_wall_s": round(dup_wall, 2), "duplicates_copied": copied,
        "restart_skip_s": round(restart, 2), "restart_skipped": skipped,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "python": platform.python_version(), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    json.dump(res, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
