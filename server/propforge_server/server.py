"""Assemble store + job manager + gRPC + HTTP on one asyncio loop (``propforge serve`` and tests).

``ServerConfig`` is the whole configuration; ``PropForgeServer`` starts and stops everything in order;
``ThreadedServer`` runs one in a background thread (tests, benchmarks, embedding in a tool).
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .grpc_service import GrpcFrontEnd
from .http_bridge import HttpBridge
from .jobs import JobManager, ManagerConfig
from .store import SQLiteJobStore
from .worker import DEFAULT_MAX_PIXELS, LocalWorker, Worker

log = logging.getLogger("propforge.server")

DEFAULT_GRPC_PORT = 8479
DEFAULT_HTTP_PORT = 8480


def default_store_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "propforge" / "server"


def default_workers(backend: str = "auto") -> int:
    """One worker per CUDA GPU; one CPU worker otherwise (the relief generator uses all cores itself).

    A relief-only server never imports torch (seconds of start-up on a small machine)."""
    if backend == "relief":
        return 1
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:
        return 1


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    grpc_port: int = DEFAULT_GRPC_PORT      # 0 = pick a free port
    http_port: int = DEFAULT_HTTP_PORT      # 0 = pick a free port; -1 = no HTTP bridge
    store: Path = field(default_factory=default_store_dir)
    backend: str = "auto"
    model: str = ""
    workers: int = 0                        # 0 = default_workers()
    token: str = ""
    max_queue: int = 64
    max_upload_bytes: int = 32 << 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    default_deadline: float = 3600.0
    max_attempts: int = 2
    keep_days: float = 7.0                  # forget finished jobs and their files after this; 0 = never
    sse_keepalive: float = 15.0             # seconds between ': keepalive' comments on idle SSE streams
    tls_cert: Path | None = None
    tls_key: Path | None = None
    warmup: str = "auto"                    # one throw-away generation per worker before ready (on/off/auto)


class PropForgeServer:
    """Both front ends over one manager. ``await start()`` binds; ports are known afterwards."""

    def __init__(self, config: ServerConfig, worker_factory: Any = None) -> None:
        self.config = config
        if bool(config.tls_cert) != bool(config.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        workers = config.workers or default_workers(config.backend)
        self.store = SQLiteJobStore(config.store)
        factory = worker_factory or self._local_worker
        self.manager = JobManager(self.store, factory, ManagerConfig(
            workers=workers, max_queue=config.max_queue, default_deadline=config.default_deadline,
            backend=config.backend, model=config.model, max_attempts=config.max_attempts,
            max_pixels=config.max_pixels, keep_days=config.keep_days, warmup=config.warmup))
        self.grpc: GrpcFrontEnd | None = None
        self._runner: web.AppRunner | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.ready = asyncio.Event()
        self._ready_task: asyncio.Task | None = None

    def _local_worker(self, index: int) -> Worker:
        return LocalWorker(index=index, model=self.config.model, max_pixels=self.config.max_pixels)

    async def start(self) -> None:
        """Start the manager, then both front ends; on any failure (a port in use, say) undo it all."""
        cfg = self.config
        try:
            await self._start()
        except BaseException:
            await self.stop(0)
            raise
        if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.token:
            log.warning("serving on %s without a token: anyone who can reach this address can submit jobs "
                        "(set --token or PROPFORGE_TOKEN)", cfg.host)
        log.info("propforge listening: gRPC on %s:%d, HTTP on %s:%d, backend %s, %d worker(s), store %s",
                 cfg.host, self.grpc_port, cfg.host, self.http_port, self.manager.default_backend,
                 self.manager.config.workers, cfg.store)
        self._ready_task = asyncio.get_running_loop().create_task(self._announce_ready())

    async def _announce_ready(self) -> None:
        """gRPC health turns SERVING once every worker has loaded its model (HTTP /ready follows the manager)."""
        while not self.manager.ready:
            await asyncio.sleep(0.05)
        if self.grpc is not None:
            await self.grpc.set_serving()
        self.ready.set()
        log.info("propforge ready")

    async def _start(self) -> None:
        cfg = self.config
        await asyncio.get_running_loop().run_in_executor(None, self.manager.start)
        tls = (Path(cfg.tls_cert).read_bytes(), Path(cfg.tls_key).read_bytes()) if cfg.tls_cert else None
        self.grpc = GrpcFrontEnd(self.manager, cfg.host, cfg.grpc_port, cfg.token, cfg.max_upload_bytes, tls)
        await self.grpc.start()
        self.grpc_port = self.grpc.port
        if cfg.http_port >= 0:
            bridge = HttpBridge(self.manager, cfg.token, cfg.max_upload_bytes, cfg.sse_keepalive)
            self._runner = web.AppRunner(bridge.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await self._runner.setup()
            ssl_ctx = None
            if cfg.tls_cert:
                ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ssl_ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
            site = web.TCPSite(self._runner, cfg.host, cfg.http_port, ssl_context=ssl_ctx)
            await site.start()
            self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self, grace: float = 2.0) -> None:
        """Health goes NOT_SERVING, front ends close, running jobs return to the queue for the next start."""
        if self._ready_task is not None:
            self._ready_task.cancel()
        if self.grpc is not None:
            await self.grpc.stop(grace)
            self.grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.get_running_loop().run_in_executor(None, self.manager.stop)
        self.store.close()

    def ports(self) -> dict[str, Any]:
        return {"host": self.config.host, "grpc_port": self.grpc_port, "http_port": self.http_port}


class ThreadedServer:
    """A PropForgeServer on its own event loop thread: ``with ThreadedServer(cfg) as srv: ...``."""

    def __init__(self, config: ServerConfig, worker_factory: Any = None) -> None:
        self.server = PropForgeServer(config, worker_factory)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="propforge-server-loop", daemon=True)

    def start(self, wait_ready: bool = True) -> "ThreadedServer":
        """Start serving; by default return only once the workers have loaded their models."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(60)
            if wait_ready:
                asyncio.run_coroutine_threadsafe(asyncio.wait_for(self.server.ready.wait(), 600), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            raise
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(0.5), self._loop).result(60)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    @property
    def manager(self) -> JobManager:
        return self.server.manager

    @property
    def grpc_address(self) -> str:
        return f"{self.server.config.host}:{self.server.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.server.config.host}:{self.server.http_port}"

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
