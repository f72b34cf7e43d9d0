"""Native gRPC front end (grpc.aio) over the job manager, plus the standard grpc.health.v1 service.

Async so that hundreds of WatchJob streams cost no threads; blocking work (image decoding, SQLite,
file reads) runs in the default executor. Errors map to status codes (the table is errors_map.ERRORS,
shared with the HTTP bridge): InputError -> INVALID_ARGUMENT, QueueFull -> RESOURCE_EXHAUSTED,
JobNotFound -> NOT_FOUND, ResultNotReady and BackendUnavailable -> FAILED_PRECONDITION, ShuttingDown ->
UNAVAILABLE, missing/wrong token -> UNAUTHENTICATED, upload above the limit -> RESOURCE_EXHAUSTED (by
grpc itself).
"""
from __future__ import annotations

import functools
import hmac
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from propforge.errors import PropForgeError

from . import convert, errors_map
from ._proto import propforge_pb2 as pb
from ._proto import propforge_pb2_grpc as pb_grpc
from .jobs import JobManager
from .store import CHUNK, close_chunks, iter_file, run_blocking

log = logging.getLogger("propforge.server")
SERVICE_NAME = "propforge.v1.PropForge"


def status_code(exc: BaseException) -> grpc.StatusCode:
    found = errors_map.lookup(exc)
    return grpc.StatusCode[found[1]] if found else grpc.StatusCode.INTERNAL


def _unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(self: "PropForgeService", request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except PropForgeError as e:
            await context.abort(status_code(e), str(e))
        except Exception:
            log.exception("gRPC %s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error (see the server log)")
    return wrapper


class PropForgeService(pb_grpc.PropForgeServicer):
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    @_unary
    async def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        options = convert.options_from_proto(request.options)
        job = await run_blocking(self.manager.submit, request.image, options, request.image_name,
                                 request.deadline_seconds)
        return convert.job_to_proto(job)

    @_unary
    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return convert.job_to_proto(await run_blocking(self.manager.get, request.id))

    @_unary
    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return convert.job_to_proto(await run_blocking(self.manager.cancel, request.id))

    @_unary
    async def ListBackends(self, request: pb.ListBackendsRequest, context: grpc.aio.ServicerContext) -> pb.ListBackendsResponse:
        infos = await run_blocking(self.manager.backends)
        return convert.backends_to_proto(infos, self.manager.default_backend)

    async def WatchJob(self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.JobEvent]:
        try:
            async for ev in self.manager.watch(request.id, int(request.after_sequence)):
                if ev is not None:
                    yield convert.event_to_proto(ev)
        except PropForgeError as e:
            await context.abort(status_code(e), str(e))

    async def GetResult(self, request: pb.GetResultRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ResultChunk]:
        try:
            path, size, sha = await run_blocking(self.manager.result, request.id)
        except PropForgeError as e:
            await context.abort(status_code(e), str(e))
            return
        offset = int(request.offset)
        if offset > size:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {offset} is beyond the result size {size}")
        if offset == size:  # nothing left: one empty chunk still tells size and hash
            yield pb.ResultChunk(offset=offset, data=b"", total_size=size, sha256=sha, mime_type="model/gltf-binary")
            return
        chunks = iter_file(path, offset, CHUNK)
        try:
            while True:
                data = await run_blocking(next, chunks, None)
                if data is None:
                    return
                yield pb.ResultChunk(offset=offset, data=data, total_size=size, sha256=sha,
                                     mime_type="model/gltf-binary")
                offset += len(data)
        finally:
            close_chunks(chunks)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Bearer token on every call except grpc.health.v1 (load balancers and probes carry no token)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if details.method.startswith("/grpc.health.v1.Health/") or handler is None:
            return handler
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        got_b = got.encode() if isinstance(got, str) else got
        if hmac.compare_digest(got_b, self._expected):
            return handler
        return _deny(handler, "missing or wrong bearer token (metadata 'authorization: Bearer <token>')" if got
                     else "this server needs a bearer token (metadata 'authorization: Bearer <token>')")


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


class GrpcFrontEnd:
    """The gRPC server: PropForge service + health, bound to host:port (0 = pick a free port)."""

    def __init__(self, manager: JobManager, host: str, port: int, token: str = "",
                 max_upload_bytes: int = 32 << 20, tls: tuple[bytes, bytes] | None = None) -> None:
        interceptors = [TokenAuth(token)] if token else []
        limit = max_upload_bytes + (64 << 10)  # the request also carries options and a name
        self.server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", CHUNK + (64 << 10)),
            ("grpc.so_reuseport", 0),
            # ping idle connections so long silent stages do not let proxies/NATs drop a WatchJob stream
            ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000)])
        pb_grpc.add_PropForgeServicer_to_server(PropForgeService(manager), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls:
                self.port = self.server.add_secure_port(addr, grpc.ssl_server_credentials([(tls[1], tls[0])]))
            else:
                self.port = self.server.add_insecure_port(addr)
        except RuntimeError as e:  # grpc says only "Failed to bind"; the usual cause is a port in use
            raise OSError(f"gRPC could not bind {addr} (port in use?)") from e
        if not self.port:
            raise OSError(f"gRPC could not bind {addr} (port in use?)")

    async def start(self) -> None:
        """Serve at once; health says NOT_SERVING until ``set_serving`` (workers loaded)."""
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()

    async def set_serving(self) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
