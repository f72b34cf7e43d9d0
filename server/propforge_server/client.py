"""Python SDK over gRPC: submit, watch, download (resumable, sha256-checked), cancel, generate.

Used by ``propforge generate --server`` and by watch mode. Dicts, not proto objects, come back:
a job dict has snake_case keys (``id``, ``state`` in queued/running/succeeded/failed/cancelled,
``result_sha256``, ``error``, ``options`` ...); an event dict is flat (``sequence``, ``kind`` and the
kind's fields, e.g. ``stage``, ``step``, ``total``, ``fraction``, ``eta_seconds``, ``reason``).
Server errors come back as PropForgeError subclasses with the server's message.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
from google.protobuf import json_format

from propforge.errors import BackendUnavailable, Cancelled, InputError, PropForgeError
from propforge.options import GenerateOptions
from propforge.progress import ProgressEvent

from . import convert
from ._proto import propforge_pb2 as pb
from ._proto import propforge_pb2_grpc as pb_grpc
from .jobs import JobNotFound, QueueFull, ResultNotReady
from .store import TERMINAL_EVENTS

DEFAULT_ADDRESS = "127.0.0.1:8479"
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class ServerUnavailable(PropForgeError):
    """The server cannot be reached (not running, wrong address, restarting)."""


class AuthError(PropForgeError):
    """Missing or wrong token."""


class JobFailed(PropForgeError):
    """The job ran and failed; ``code`` is the gRPC status name the server gave (e.g. DEADLINE_EXCEEDED)."""

    def __init__(self, message: str, code: str = "", job: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.job = code, job or {}


def _error(e: grpc.RpcError, address: str, precondition: type[PropForgeError] = PropForgeError) -> PropForgeError:
    """gRPC status -> the PropForgeError subclass a caller can catch; FAILED_PRECONDITION depends on the call."""
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InputError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return JobNotFound(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if "larger than max" in details:
            return InputError(f"upload rejected by the server: {details}")
        return QueueFull(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return precondition(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthError(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailable(f"cannot reach the propforge server at {address}: {details}")
    return PropForgeError(f"server error {code.name}: {details}")


class PropForgeClient:
    """``PropForgeClient("host:8479", token=...)``; the token defaults to $PROPFORGE_TOKEN."""

    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, *, tls: bool = False,
                 root_certificates: bytes | None = None, timeout: float = 60.0, retries: int = 5) -> None:
        self.address = address
        token = token if token is not None else os.environ.get("PROPFORGE_TOKEN", "")
        opts = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", -1)]
        if tls or root_certificates:
            creds = grpc.ssl_channel_credentials(root_certificates)
            self._channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(address, options=opts)
        self._stub = pb_grpc.PropForgeStub(self._channel)
        self._md = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout, self.retries = timeout, retries

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PropForgeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _unary(self, method: Callable[..., Any], request: Any,
               precondition: type[PropForgeError] = PropForgeError) -> Any:
        try:
            return method(request, metadata=self._md, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e, self.address, precondition) from None

    # -- the five calls ---------------------------------------------------------------------------
    def submit(self, image_bytes: bytes | str | os.PathLike, options: GenerateOptions | dict | None = None,
               name: str = "", deadline_seconds: float = 0.0) -> dict[str, Any]:
        """Queue a job. ``options``: GenerateOptions, its ``to_dict()``, or a flat JobOptions dict."""
        if not isinstance(image_bytes, (bytes, bytearray)):
            path = Path(image_bytes)
            name = name or path.name
            image_bytes = path.read_bytes()
        if options is None:
            wire = pb.JobOptions()
        elif isinstance(options, GenerateOptions):
            if options.model:
                raise InputError("options.model: the server chooses the model weights; leave model empty")
            wire = convert.options_to_proto(options)
        else:
            wire = convert.options_dict_to_proto(options)
        req = pb.SubmitJobRequest(image=bytes(image_bytes), image_name=name, options=wire,
                                  deadline_seconds=deadline_seconds)
        return convert.job_to_dict(self._unary(self._stub.SubmitJob, req, BackendUnavailable))

    def get(self, job_id: str) -> dict[str, Any]:
        return convert.job_to_dict(self._unary(self._stub.GetJob, pb.GetJobRequest(id=job_id)))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return convert.job_to_dict(self._unary(self._stub.CancelJob, pb.CancelJobRequest(id=job_id)))

    def backends(self) -> dict[str, Any]:
        resp = self._unary(self._stub.ListBackends, pb.ListBackendsRequest())
        return {"default_backend": resp.default_backend,
                "backends": [json_format.MessageToDict(b, always_print_fields_with_no_presence=True,
                                                       preserving_proto_field_name=True) for b in resp.backends]}

    def watch(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """Events after sequence ``after`` until the terminal one; reconnects (resuming) if the server blips."""
        failures = 0
        while True:
            try:
                for ev in self._stub.WatchJob(pb.WatchJobRequest(id=job_id, after_sequence=after), metadata=self._md):
                    failures = 0
                    d = convert.event_to_dict(ev)
                    after = d["sequence"]
                    yield d
                    if d["kind"] in TERMINAL_EVENTS:
                        return
                return  # stream ended without a terminal event: server is shutting down cleanly
            except grpc.RpcError as e:
                failures += 1
                if e.code() not in _RETRYABLE or failures > self.retries:
                    raise _error(e, self.address) from None
                time.sleep(min(0.2 * 2 ** failures, 5.0))

    def download(self, job_id: str) -> bytes:
        """The GLB of a finished job; a broken stream resumes at the last byte; sha256 is checked."""
        buf = bytearray()
        total, sha, failures = None, "", 0
        while total is None or len(buf) < total:
            try:
                for chunk in self._stub.GetResult(pb.GetResultRequest(id=job_id, offset=len(buf)), metadata=self._md,
                                                  timeout=None):
                    if chunk.offset != len(buf):
                        raise PropForgeError(f"server sent offset {chunk.offset}, expected {len(buf)}")
                    total, sha = int(chunk.total_size), chunk.sha256
                    buf += chunk.data
                if total is None:
                    raise PropForgeError(f"server sent no result data for job {job_id}")
                if len(buf) < total:
                    raise PropForgeError(f"result stream ended at {len(buf)} of {total} bytes")
            except grpc.RpcError as e:
                failures += 1
                if e.code() not in _RETRYABLE or failures > self.retries:
                    raise _error(e, self.address, ResultNotReady) from None
                time.sleep(min(0.2 * 2 ** failures, 5.0))
        got = hashlib.sha256(buf).hexdigest()
        if got != sha:
            raise PropForgeError(f"downloaded result of job {job_id} is corrupt: sha256 {got}, server says {sha}")
        return bytes(buf)

    def generate(self, image_bytes: bytes | str | os.PathLike, options: GenerateOptions | dict | None = None,
                 progress: Callable[[ProgressEvent], None] | None = None, name: str = "",
                 deadline_seconds: float = 0.0) -> tuple[bytes, dict[str, Any]]:
        """Submit, report progress as ProgressEvents, download: the remote twin of ``generate_glb``.

        Ctrl-C cancels the job on the server before re-raising. Failure raises JobFailed (or
        InputError / BackendUnavailable for those codes); a cancellation raises Cancelled.
        """
        job = self.submit(image_bytes, options, name, deadline_seconds)
        try:
            last = self._follow(job["id"], progress)
        except KeyboardInterrupt:
            try:
                self.cancel(job["id"])
            except PropForgeError:
                pass
            raise
        kind = last["kind"] if last else ""
        if kind not in TERMINAL_EVENTS:
            raise ServerUnavailable(f"the server at {self.address} stopped while job {job['id']} was running; "
                                    "it re-runs the job when it starts again (watch it with this id)")
        job = self.get(job["id"])
        if kind == "cancelled":
            raise Cancelled(f"job {job['id']} was cancelled: {last['reason']}")
        if kind == "failed":
            reason, code = last["reason"], last["code"]
            if code == "INVALID_ARGUMENT":
                raise InputError(reason)
            if code == "UNAVAILABLE":
                raise BackendUnavailable(reason)
            raise JobFailed(f"job {job['id']} failed: {reason}", code, job)
        return self.download(job["id"]), job

    def _follow(self, job_id: str, progress: Callable[[ProgressEvent], None] | None) -> dict[str, Any] | None:
        last, fraction = None, 0.0
        for ev in self.watch(job_id):
            last = ev
            if progress is None:
                continue
            kind = ev["kind"]
            if kind == "queued":
                msg = ev.get("message") or f"waiting in the server queue (position {ev['position']})"
                progress(ProgressEvent("queued", fraction, message=msg, time=ev["time"]))
            elif kind == "stage_started":
                progress(ProgressEvent(ev["stage"], fraction, time=ev["time"]))
            elif kind == "progress":
                fraction = ev["fraction"]
                progress(ProgressEvent(ev["stage"], fraction, ev["step"] or None, ev["total"] or None,
                                       ev["message"], ev["time"]))
            elif kind == "finished":
                progress(ProgressEvent("write", 1.0, message="cached" if ev["cached"] else "done", time=ev["time"]))
        return last

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status name, e.g. "SERVING"."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            resp = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e, self.address) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
