"""HTTP/1.1 JSON bridge (aiohttp) over the same job manager: the contract in docs/http-api.md.

For clients without HTTP/2 or gRPC (Godot's HTTPClient, Unity's UnityWebRequest): multipart upload,
Server-Sent Events for progress (resumable with Last-Event-ID), Range downloads, problem+json errors,
Triton-style /v2/health endpoints and Prometheus /metrics.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from typing import Any, Awaitable, Callable

from aiohttp import web

from propforge.errors import InputError, PropForgeError

from . import convert, errors_map
from ._proto import propforge_pb2 as pb
from .jobs import JobManager
from .store import CHUNK, close_chunks, iter_file, run_blocking

log = logging.getLogger("propforge.server")
KEEPALIVE_SECONDS = 15.0
_CODE_OF_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
                   409: "FAILED_PRECONDITION", 413: "RESOURCE_EXHAUSTED", 416: "OUT_OF_RANGE",
                   429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
_UNAUTHENTICATED_PATHS = ("/v2/health/live", "/v2/health/ready")


def problem(status: int, title: str, detail: str, code: str = "", headers: dict[str, str] | None = None) -> web.Response:
    """An RFC 9457 problem+json response (the shape every error of the bridge has)."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "code": code or _CODE_OF_STATUS.get(status, "UNKNOWN")}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)


def _json(msg: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(convert.to_json(msg)), content_type="application/json",
                        headers=headers)


class HttpBridge:
    """Routes of docs/http-api.md; ``app`` is an aiohttp Application ready for an AppRunner."""

    def __init__(self, manager: JobManager, token: str = "", max_upload_bytes: int = 32 << 20,
                 keepalive: float = KEEPALIVE_SECONDS) -> None:
        self.manager = manager
        self.keepalive = keepalive
        self.token = token
        self.max_upload_bytes = max_upload_bytes
        self.app = web.Application(middlewares=[self._errors, self._auth],
                                   client_max_size=max_upload_bytes + (1 << 20))
        r = self.app.router
        r.add_post("/v1/jobs", self.submit)
        r.add_get("/v1/jobs/{id}", self.get_job)
        r.add_delete("/v1/jobs/{id}", self.cancel)
        r.add_get("/v1/jobs/{id}/events", self.events)
        r.add_get("/v1/jobs/{id}/result", self.result)
        r.add_get("/v1/backends", self.backends)
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/metrics", self.metrics)

    # -- middleware -------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except PropForgeError as e:
            found = errors_map.lookup(e)
            if found is None:
                raise
            return problem(found[0], type(e).__name__, str(e), found[1])
        except web.HTTPException as e:
            if e.status < 400:
                raise
            detail = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
            if e.status == 413:
                detail = f"upload is larger than the limit of {self.max_upload_bytes} bytes"
            return problem(e.status, e.reason, detail, headers={k: v for k, v in e.headers.items()
                                                                if k.lower() in ("allow", "retry-after")})
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return problem(500, "Internal Server Error", "internal server error (see the server log)", "INTERNAL")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if self.token and request.path not in _UNAUTHENTICATED_PATHS:
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
                detail = "wrong bearer token" if got else "this server needs 'Authorization: Bearer <token>'"
                return problem(401, "Unauthorized", detail, "UNAUTHENTICATED",
                               headers={"WWW-Authenticate": 'Bearer realm="propforge"'})
        return await handler(request)

    # -- jobs -------------------------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise InputError(f"POST /v1/jobs needs multipart/form-data with an 'image' part, got {request.content_type!r}")
        image, name, options, deadline = await self._read_form(request)
        opts = convert.options_from_proto(options)
        job = await run_blocking(self.manager.submit, image, opts, name, deadline)
        return _json(convert.job_to_proto(job), 202, {"Location": f"/v1/jobs/{job.id}"})

    async def _read_form(self, request: web.Request) -> tuple[bytes, str, pb.JobOptions, float]:
        reader = await request.multipart()
        image: bytes | None = None
        name, options, deadline = "", pb.JobOptions(), 0.0
        total = 0
        while (part := await reader.next()) is not None:
            buf = bytearray()
            while chunk := await part.read_chunk(1 << 16):
                total += len(chunk)
                if total > self.max_upload_bytes:
                    raise web.HTTPRequestEntityTooLarge(max_size=self.max_upload_bytes, actual_size=total)
                buf += chunk
            if part.name == "image":
                image, name = bytes(buf), part.filename or ""
            elif part.name == "options":
                try:
                    options = convert.options_from_json(buf.decode("utf-8") or "{}")
                except UnicodeDecodeError:
                    raise InputError("options: not UTF-8 JSON") from None
            elif part.name == "deadlineSeconds":
                try:
                    deadline = float(buf.decode() or 0)
                except ValueError:
                    raise InputError(f"deadlineSeconds: not a number: {buf[:40]!r}") from None
            else:
                raise InputError(f"unknown form part {part.name!r}; expected image, options, deadlineSeconds")
        if image is None:
            raise InputError("missing form part 'image' (the image file)")
        return image, name, options, deadline

    async def get_job(self, request: web.Request) -> web.Response:
        return _json(convert.job_to_proto(await run_blocking(self.manager.get, request.match_info["id"])))

    async def cancel(self, request: web.Request) -> web.Response:
        return _json(convert.job_to_proto(await run_blocking(self.manager.cancel, request.match_info["id"])))

    async def events(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["id"]
        after_text = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
        if not after_text.strip().isdigit():
            raise InputError(f"Last-Event-ID must be an event sequence number, got {after_text!r}")
        after = int(after_text)
        await run_blocking(self.manager.get, job_id)  # 404 before any header is sent
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        feed = self.manager.watch(job_id, after, keepalive=self.keepalive)
        try:
            async for ev in feed:
                if ev is None:
                    await resp.write(b": keepalive\n\n")
                    continue
                await resp.write(convert.event_to_sse(ev))
        finally:
            await feed.aclose()
        await resp.write_eof()
        return resp

    async def result(self, request: web.Request) -> web.StreamResponse:
        path, size, sha = await run_blocking(self.manager.result, request.match_info["id"])
        start, end = 0, size - 1
        status = 200
        rng = request.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                return problem(416, "Range Not Satisfiable", f"cannot serve {rng!r} of a {size}-byte result",
                               headers={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
        headers = {"Content-Type": "model/gltf-binary", "Content-Length": str(end - start + 1),
                   "ETag": f'"{sha}"', "X-Content-SHA256": sha, "Accept-Ranges": "bytes",
                   "Content-Disposition": f'attachment; filename="{request.match_info["id"]}.glb"'}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        remaining = end - start + 1
        chunks = iter_file(path, start, CHUNK)
        try:
            while remaining > 0:
                data = await run_blocking(next, chunks, b"")
                if not data:
                    break
                data = data[:remaining]
                await resp.write(data)
                remaining -= len(data)
        finally:
            close_chunks(chunks)  # a client that hangs up mid-download must not keep the file open
        await resp.write_eof()
        return resp

    async def backends(self, request: web.Request) -> web.Response:
        infos = await run_blocking(self.manager.backends)
        return _json(convert.backends_to_proto(infos, self.manager.default_backend))

    # -- health and metrics -----------------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ok = self.manager.ready
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        text = await run_blocking(self.manager.metrics_text)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range (``N-``, ``N-M`` or ``-N``) -> inclusive (start, end); None when unsatisfiable."""
    m = _RANGE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:  # suffix: the last N bytes
        n = int(m.group(2))
        if n == 0:
            return None
        start, end = max(0, size - n), size - 1
    return (start, end) if start <= end and start < size else None
