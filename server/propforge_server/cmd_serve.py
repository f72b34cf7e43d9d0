"""`propforge serve`: the gRPC service and the HTTP/JSON bridge over one durable job queue.

Prints one JSON line with the bound ports on stdout once serving (``--port-file`` also writes it to a
file, atomically), so scripts and tests can use port 0. SIGINT/SIGTERM stop cleanly: running jobs
go back to the queue and re-run on the next start with the same ``--store``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from propforge.errors import InputError

from .server import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, PropForgeServer, ServerConfig, default_store_dir


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the gRPC + HTTP server",
                              description="Serve image -> GLB jobs over gRPC (native) and HTTP/JSON (editor plugins).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help=f"gRPC port (default {DEFAULT_GRPC_PORT}; 0 = any free)")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                   help=f"HTTP port (default {DEFAULT_HTTP_PORT}; 0 = any free; -1 = no HTTP bridge)")
    p.add_argument("--backend", default="auto", choices=["auto", "relief", "trellis2"],
                   help="default backend for jobs that do not name one (auto: trellis2 on a GPU with weights, else relief)")
    p.add_argument("--model", default="", help="TRELLIS.2 weights: hub id or local folder")
    p.add_argument("--workers", type=int, default=0, help="worker slots (default: one per GPU, else 1)")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (default: $PROPFORGE_TOKEN)")
    p.add_argument("--store", type=Path, default=None, help=f"job store folder (default {default_store_dir()})")
    p.add_argument("--max-queue", type=int, default=64, help="queued jobs before new ones are refused (default 64)")
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest accepted image upload in MiB (default 32)")
    p.add_argument("--max-pixels", type=int, default=None, help="largest accepted image in pixels (default 64 Mi)")
    p.add_argument("--deadline", type=float, default=3600.0, help="default job deadline in seconds (0 = none)")
    p.add_argument("--keep-days", type=float, default=7.0,
                   help="forget finished jobs and delete their files after this many days (default 7; 0 = never)")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: serve both front ends over TLS")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key for --tls-cert")
    p.add_argument("--warmup", default="auto", choices=["auto", "on", "off"],
                   help="run one throw-away generation per worker before reporting ready, so the first job does "
                        "not pay for GPU kernel compilation and autotuning (auto: only for trellis2)")
    p.add_argument("--port-file", type=Path, default=None, help="also write the bound ports as JSON to this file")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    token = args.token if args.token is not None else os.environ.get("PROPFORGE_TOKEN", "")
    if args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.max_queue < 1:
        raise InputError(f"--max-queue must be >= 1, got {args.max_queue}")
    if args.keep_days < 0:
        raise InputError(f"--keep-days must be >= 0, got {args.keep_days}")
    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InputError("--tls-cert and --tls-key go together")
    for name in ("tls_cert", "tls_key"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            raise InputError(f"--{name.replace('_', '-')}: no such file {path}")
    cfg = ServerConfig(host=args.host, grpc_port=args.grpc_port, http_port=args.http_port, backend=args.backend,
                       model=args.model, workers=args.workers, token=token, max_queue=args.max_queue,
                       max_upload_bytes=int(args.max_upload_mb * (1 << 20)), default_deadline=args.deadline,
                       keep_days=args.keep_days,
                       tls_cert=args.tls_cert, tls_key=args.tls_key, warmup=args.warmup)
    if args.store is not None:
        cfg.store = args.store
    if args.max_pixels is not None:
        cfg.max_pixels = args.max_pixels
    return cfg


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    return asyncio.run(_serve(cfg, args.port_file))


async def _serve(cfg: ServerConfig, port_file: Path | None) -> int:
    server = PropForgeServer(cfg)
    try:
        await server.start()
    except OSError as e:
        raise InputError(f"cannot listen on {cfg.host} (gRPC port {cfg.grpc_port}, HTTP port {cfg.http_port}): {e}") from None
    line = json.dumps({**server.ports(), "backend": server.manager.default_backend, "store": str(cfg.store),
                       "pid": os.getpid()})
    if port_file is not None:
        from propforge.fileio import write_atomic

        write_atomic(port_file, (line + "\n").encode())
    print(line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("propforge.server").info("stopping: running jobs go back to the queue")
    await server.stop()
    return 0
