"""Server overhead, event latency and many concurrent watchers, on a real loopback server (relief backend).

  python benchmarks/server_bench.py [--jobs 10] [--watchers 100] [--size 64]

1. overhead: client wall time of ``PropForgeClient.generate`` (submit + watch + download + sha256)
   minus the time the worker spent in ``generate_glb`` for that job (measured inside the worker, less
   the time spent in the server's progress callback, which is overhead), per job; also a direct
   ``generate_glb`` call on the same input for reference (noisy on a shared machine), and a cached repeat.
2. event latency: emit time on the server (``JobEvent.time``) -> receipt by a gRPC and an SSE client.
3. N concurrent watchers (SSE over aiohttp + gRPC aio streams) on one job: every watcher must get the
   full gapless feed; reports delivery latency over all (event, watcher) pairs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


from bench_inputs import cutout_png, pct  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]



class TimedWorker:
    """A LocalWorker that records how long each run took (the part a direct library call also pays)."""

    def __init__(self, index: int) -> None:
        from propforge_server.worker import LocalWorker

        self.inner = LocalWorker(index)
        self.times: dict[str, float] = {}

    def run(self, image, options, progress):
        in_callback = 0.0

        def timed_progress(ev):  # the server's bookkeeping per event counts as overhead, not as work
            nonlocal in_callback
            t0 = time.perf_counter()
            try:
                progress(ev)
            finally:
                in_callback += time.perf_counter() - t0
        t = time.perf_counter()
        res = self.inner.run(image, options, timed_progress)
        self.times[f"{options.seed}"] = time.perf_counter() - t - in_callback
        return res

    def model_version(self, backend: str) -> str:
        return self.inner.model_version(backend)


def bench_overhead(srv, worker: TimedWorker, n: int, size: int, opts: dict) -> dict:
    from propforge.api import generate_glb
    from propforge.generators import load_generator
    from propforge.options import ExportOptions, GenerateOptions
    from propforge_server.client import PropForgeClient
    from propforge_server.worker import decode_image

    gen = load_generator("relief")
    gopts = GenerateOptions(backend="relief", export=ExportOptions(faces=opts["faces"], texture_size=opts["textureSize"]))
    overhead, direct, remote = [], [], []
    with PropForgeClient(srv.grpc_address) as c:
        c.generate(cutout_png(size, 999), {**opts, "seed": 10_000})  # warm-up (imports, first bake)
        for i in range(n):
            png = cutout_png(size, i)
            t = time.perf_counter()
            generate_glb(decode_image(png), GenerateOptions(**{**gopts.__dict__, "seed": i}), generator=gen, source_bytes=png)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            glb, job = c.generate(png, {**opts, "seed": i})
            wall = time.perf_counter() - t
            remote.append(wall)
            overhead.append(wall - worker.times[str(i)])
        t = time.perf_counter()
        glb2, job2 = c.generate(cutout_png(size, 0), {**opts, "seed": 0})
        cached = time.perf_counter() - t
        assert job2["cached"]
    return {"jobs": n, "direct_median_s": statistics.median(direct), "server_median_s": statistics.median(remote),
            "overhead_median_ms": 1e3 * statistics.median(overhead), "overhead_p90_ms": 1e3 * pct(overhead, 90),
            "overhead_max_ms": 1e3 * max(overhead), "cached_repeat_ms": 1e3 * cached}


def bench_event_latency(srv, size: int, opts: dict) -> dict:
    import aiohttp

    from propforge_server.client import PropForgeClient

    lat_grpc, lat_sse = [], []
    with PropForgeClient(srv.grpc_address) as c:
        for i in range(3):
            job = c.submit(cutout_png(size, 100 + i), {**opts, "seed": 100 + i})
            for ev in c.watch(job["id"]):
                lat_grpc.append(time.time() - ev["time"])

        async def sse(job_id: str) -> None:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{srv.http_url}/v1/jobs/{job_id}/events") as r:
                    async for raw in r.content:
                        line = raw.decode()
                        if line.startswith("data: "):
                            lat_sse.append(time.time() - json.loads(line[6:])["time"])
        for i in range(3):
            job = c.submit(cutout_png(size, 200 + i), {**opts, "seed": 200 + i})
            asyncio.run(sse(job["id"]))
    # the first event (queued) is emitted during submit, before the watcher connects: leave it out
    return {"grpc_events": len(lat_grpc), "grpc_median_ms": 1e3 * statistics.median(lat_grpc[1:]),
            "grpc_p99_ms": 1e3 * pct(lat_grpc[1:], 99), "sse_events": len(lat_sse),
            "sse_median_ms": 1e3 * statistics.median(lat_sse[1:]), "sse_p99_ms": 1e3 * pct(lat_sse[1:], 99)}


def bench_watchers(srv, n: int, size: int, opts: dict, seed: int = 300) -> dict:
    import aiohttp
    import grpc

    from propforge_server._proto import propforge_pb2 as pb
    from propforge_server._proto import propforge_pb2_grpc as pb_grpc
    from propforge_server.client import PropForgeClient

    with PropForgeClient(srv.grpc_address) as c:
        job = c.submit(cutout_png(size, seed), {**opts, "seed": seed, "textureSize": 256})
    assert not job["cached"], "watchers need a job that really runs"
    lat: list[float] = []
    feeds: list[list[int]] = []

    async def sse(s) -> None:
        seqs = []
        async with s.get(f"{srv.http_url}/v1/jobs/{job['id']}/events") as r:
            async for raw in r.content:
                line = raw.decode()
                if line.startswith("data: "):
                    d = json.loads(line[6:])
                    lat.append(time.time() - d["time"])
                    seqs.append(int(d["sequence"]))
        feeds.append(seqs)

    async def grpc_watch(stub) -> None:
        seqs = []
        async for ev in stub.WatchJob(pb.WatchJobRequest(id=job["id"])):
            lat.append(time.time() - ev.time)
            seqs.append(ev.sequence)
        feeds.append(seqs)

    async def main() -> float:
        t = time.perf_counter()
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s, grpc.aio.insecure_channel(srv.grpc_address) as ch:
            stub = pb_grpc.PropForgeStub(ch)
            await asyncio.gather(*[sse(s) for _ in range(n // 2)], *[grpc_watch(stub) for _ in range(n - n // 2)])
        return time.perf_counter() - t
    wall = asyncio.run(main())
    full = max(len(f) for f in feeds)
    complete = sum(1 for f in feeds if f == list(range(1, full + 1)))
    late = [x for x in lat if x >= 0]
    return {"watchers": n, "complete_gapless_feeds": complete, "events_per_feed": full, "wall_s": wall,
            "delivery_median_ms": 1e3 * statistics.median(late), "delivery_p99_ms": 1e3 * pct(late, 99)}


def main() -> int:
    sys.path.insert(0, str(ROOT / "server"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--size", type=int, default=64, help="input image side in pixels")
    ap.add_argument("--faces", type=int, default=500)
    ap.add_argument("--texture-size", type=int, default=128)
    args = ap.parse_args()
    from propforge_server.server import ServerConfig, ThreadedServer
    import aiohttp
    import grpc

    opts = {"backend": "relief", "faces": args.faces, "textureSize": args.texture_size}
    workers: list[TimedWorker] = []

    def factory(i: int) -> TimedWorker:
        workers.append(TimedWorker(i))
        return workers[-1]

    with tempfile.TemporaryDirectory() as store:
        cfg = ServerConfig(grpc_port=0, http_port=0, backend="relief", workers=1, store=Path(store), max_queue=256)
        with ThreadedServer(cfg, factory) as srv:
            out = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                              f"{__import__('os').cpu_count()} cores",
                   "python": platform.python_version(), "grpcio": grpc.__version__, "aiohttp": aiohttp.__version__,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "image": f"{args.size}px",
                   "load_average_1m_before": __import__("os").getloadavg()[0], **opts}
            out["overhead"] = bench_overhead(srv, workers[0], args.jobs, args.size, opts)
            out["event_latency"] = bench_event_latency(srv, args.size, opts)
            out["watchers"] = bench_watchers(srv, args.watchers, args.size, opts)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
