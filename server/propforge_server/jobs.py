"""One job manager behind both front ends: bounded queue, worker threads, deadlines, cancellation,
an event feed per job, the result cache, and recovery after a crash.

Threads: one per worker (each owns a ``Worker``, i.e. one GPU or one CPU slot) plus a housekeeper
for deadlines. The gRPC and HTTP front ends run on an asyncio loop and talk to the manager through
plain method calls and ``watch`` (an async iterator fed by thread-safe notifications).

Cancellation and deadlines take effect at the generator's next progress callback (next stage or
sampler step): the callback raises ``propforge.errors.Cancelled`` and the worker moves on. The job is
marked CANCELLED (or FAILED with DEADLINE_EXCEEDED) at once, so clients never wait on a long stage.
"""
from __future__ import annotations

import asyncio
import bisect
import hashlib
import io
import json
import logging
import threading
import time
import traceback
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

from propforge.errors import BackendUnavailable, Cancelled, InputError, ModelLoadError, PropForgeError
from propforge.options import GenerateOptions, PIPELINE_TYPES
from propforge.progress import ProgressEvent

from .store import (CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Event, JobRecord, JobStore)
from .worker import DEFAULT_MAX_PIXELS, Worker, decode_image

log = logging.getLogger("propforge.server")


class QueueFull(PropForgeError):
    """The bounded queue is full (gRPC RESOURCE_EXHAUSTED, HTTP 429)."""


class JobNotFound(PropForgeError):
    """No job with that id (gRPC NOT_FOUND, HTTP 404)."""


class ResultNotReady(PropForgeError):
    """The job has no result (yet): gRPC FAILED_PRECONDITION, HTTP 409."""


class ShuttingDown(PropForgeError):
    """The server is stopping and takes no new jobs (gRPC UNAVAILABLE, HTTP 503: retry elsewhere/later)."""


class DeadlineExceeded(Cancelled):
    """Raised from the progress callback when a job's deadline passes."""


class _Shutdown(Cancelled):
    """Raised from the progress callback when the server stops; the job goes back to the queue."""


@dataclass
class ManagerConfig:
    workers: int = 1
    max_queue: int = 64                 # queued (not running) jobs; more -> QueueFull
    default_deadline: float = 3600.0    # seconds from submission; 0 = none
    max_deadline: float = 7 * 86400.0
    backend: str = "auto"               # default for jobs that say "" or "auto"
    model: str = ""                     # trellis2 weights (hub id or folder); server-side only
    max_attempts: int = 2               # runs of one job across crashes before it is failed
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress_interval: float = 0.1      # seconds between stored progress events within one step
    keep_days: float = 7.0              # forget finished jobs (and unreferenced files) after this; 0 = never
    warmup: str = "auto"                # one throw-away generation per worker before ready: on/off/auto


@dataclass
class _Running:
    job: JobRecord
    abort: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    kind: type[Cancelled] = Cancelled
    stage_started: float = 0.0
    last_progress: float = 0.0
    last_step: tuple = ()


# Stage-duration histogram buckets (seconds): relief stages are ~0.01-1 s, TRELLIS.2 stages 1-60 s.
_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Histogram:
    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0] * (len(_BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, label: str, value: float) -> None:
        counts = self.counts[label]
        for i, b in enumerate(_BUCKETS):
            if value <= b:
                counts[i] += 1
        counts[-1] += 1
        self.sums[label] += value

    def render(self, name: str, label: str) -> list[str]:
        lines = []
        for key, counts in sorted(self.counts.items()):
            for b, c in zip(_BUCKETS, counts):
                lines.append(f'{name}_bucket{{{label}="{key}",le="{b}"}} {c}')
            lines.append(f'{name}_bucket{{{label}="{key}",le="+Inf"}} {counts[-1]}')
            lines.append(f'{name}_sum{{{label}="{key}"}} {self.sums[key]:.6f}')
            lines.append(f'{name}_count{{{label}="{key}"}} {counts[-1]}')
        return lines


def warmup_image(size: int = 384) -> bytes:
    """A plain prop-like cut-out (a lit box on transparent ground) as PNG bytes, for the warm-up run."""
    from PIL import Image, ImageDraw
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    a, b, c = size // 4, size // 2, 3 * size // 4
    d.polygon([(a, b - size // 8), (b, a), (c, b - size // 8), (b, b)], fill=(196, 160, 112, 255))    # top
    d.polygon([(a, b - size // 8), (b, b), (b, c + size // 8), (a, c)], fill=(150, 118, 80, 255))      # left
    d.polygon([(b, b), (c, b - size // 8), (c, c), (b, c + size // 8)], fill=(110, 84, 56, 255))       # right
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def cache_key(image_sha256: str, options: dict[str, Any], model_version: str) -> str:
    """sha256 over (image bytes' hash, canonical options, backend + model version)."""
    blob = json.dumps({"image": image_sha256, "options": options, "model": model_version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def error_code(exc: BaseException) -> str:
    """gRPC status name for a failure, also shown to HTTP clients."""
    if isinstance(exc, DeadlineExceeded):
        return "DEADLINE_EXCEEDED"
    if isinstance(exc, InputError):
        return "INVALID_ARGUMENT"
    if isinstance(exc, BackendUnavailable):
        return "UNAVAILABLE"
    if isinstance(exc, ModelLoadError):
        return "FAILED_PRECONDITION"
    if isinstance(exc, Cancelled):
        return "CANCELLED"
    return "INTERNAL"


class JobManager:
    """Owns the queue and the workers; every state change goes to the store first, then to watchers."""

    def __init__(self, store: JobStore, worker_factory: Callable[[int], Worker],
                 config: ManagerConfig | None = None) -> None:
        self.store = store
        self.config = config or ManagerConfig()
        self._worker_factory = worker_factory
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._queue: list[str] = []
        self._jobs: dict[str, JobRecord] = {}          # non-terminal jobs
        self._events: dict[str, list[Event]] = {}     # events of non-terminal jobs
        self._seq: dict[str, int] = {}
        self._running: dict[str, _Running] = {}
        self._subs: dict[str, set[Callable[[Event], None]]] = defaultdict(set)
        self._threads: list[threading.Thread] = []
        self._workers: list[Worker] = []
        self._stopping = threading.Event()
        self._started = False
        self._busy = 0
        self._loaded = 0
        self.default_backend = self.config.backend
        self._backend_info: dict[str, dict[str, Any]] = {}
        # metrics
        self._submitted: dict[str, int] = defaultdict(int)
        self._finished: dict[str, int] = defaultdict(int)
        self._cache_hits = 0
        self._stage_hist = _Histogram()
        self._job_hist = _Histogram()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Resolve the default backend, recover jobs left by a previous run, start the threads."""
        if self.default_backend in ("", "auto"):
            from propforge.generators import resolve_backend

            self.default_backend = resolve_backend(self.config.model or None)
        self._workers = [self._worker_factory(i) for i in range(self.config.workers)]
        self._recover()
        for i, worker in enumerate(self._workers):
            t = threading.Thread(target=self._work_loop, args=(worker,), name=f"propforge-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._housekeep, name="propforge-deadlines", daemon=True)
        t.start()
        self._threads.append(t)
        self._started = True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; running jobs stop at their next step and go back to the queue (re-run on start)."""
        self._stopping.set()
        with self._cv:
            for run in self._running.values():
                self._abort(run, "server shutting down; the job will re-run when the server starts again", _Shutdown)
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._started = False

    @property
    def ready(self) -> bool:
        """Started, not stopping, every thread alive and every worker done loading its model."""
        return (self._started and not self._stopping.is_set() and self._loaded == len(self._workers)
                and all(t.is_alive() for t in self._threads))

    # -- submit / query / cancel ------------------------------------------------------------------
    def submit(self, image: bytes, options: GenerateOptions, image_name: str = "",
               deadline_seconds: float = 0.0) -> JobRecord:
        """Validate and enqueue (or answer from the result cache). Raises InputError or QueueFull."""
        if self._stopping.is_set():
            raise ShuttingDown("server is shutting down; retry when it is back")
        if not (0 <= deadline_seconds <= self.config.max_deadline):  # also refuses NaN
            raise InputError(f"deadline_seconds must be between 0 and {self.config.max_deadline:g}, got {deadline_seconds:g}")
        options = self._effective_options(options)
        self._check_backend(options.backend)
        decode_image(image, self.config.max_pixels)
        image_sha = hashlib.sha256(image).hexdigest()
        opts = options.to_dict()
        key = cache_key(image_sha, opts, self._workers[0].model_version(options.backend) if self._workers else "")
        now = time.time()
        seconds = deadline_seconds or self.config.default_deadline
        job = JobRecord(id=uuid.uuid4().hex, state=QUEUED, options=opts, backend=options.backend,
                        image_sha256=image_sha, image_name=image_name[:256], created_at=now,
                        deadline=now + seconds if seconds else 0.0, cache_key=key)
        hit = self.store.cache_get(key)
        if hit is not None:
            return self._answer_from_cache(job, *hit)
        self.store.put_image(image_sha, image)
        with self._cv:
            if len(self._queue) >= self.config.max_queue:
                raise QueueFull(f"queue is full ({self.config.max_queue} jobs waiting); retry later")
            job.queue_position = len(self._queue) + 1
            with self.store.transaction():
                self.store.insert_job(job)
                self._seq[job.id] = 0
                first = self._emit(job.id, "queued", {"position": job.queue_position})
            self._jobs[job.id] = job
            self._events[job.id] = [first]
            self._queue.append(job.id)
            self._submitted[job.backend] += 1
            self._cv.notify()
        log.info("job %s queued at %d: %s, %s", job.id, job.queue_position, job.backend, job.image_name or "(unnamed)")
        return self._copy(job)

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return self._copy(job)
        job = self.store.get_job(job_id) if _valid_id(job_id) else None
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def cancel(self, job_id: str, reason: str = "cancelled by the client") -> JobRecord:
        """Queued: removed now. Running: CANCELLED now, worker stops at its next step. Terminal: unchanged."""
        with self._cv:
            job = self._jobs.get(job_id)
            if job is None:
                return self.get(job_id)
            run = self._running.get(job_id)
            if run is not None:
                self._abort(run, reason, Cancelled)
            self._terminate(job, CANCELLED, "cancelled", {"reason": reason})
            return self._copy(job)

    def result(self, job_id: str) -> tuple[Any, int, str]:
        """(path, size, sha256) of a finished job's GLB."""
        job = self.get(job_id)
        if job.state != SUCCEEDED:
            detail = f": {job.error}" if job.error else ""
            raise ResultNotReady(f"job {job_id} has no result: it is {job.state}{detail}")
        path = self.store.result_path(job.result_sha256)
        if path is None:
            raise ResultNotReady(f"result file of job {job_id} is missing from the store")
        return path, job.result_size, job.result_sha256

    def backends(self) -> list[dict[str, Any]]:
        """Name, availability (with the reason) and capabilities of every registered backend."""
        from propforge import generators

        return [self.backend_info(name) for name in generators.backend_names()]

    def backend_info(self, name: str) -> dict[str, Any]:
        """Availability is probed once per backend (it may import torch or look for weights)."""
        with self._lock:
            if name in self._backend_info:
                return dict(self._backend_info[name])
        from propforge import generators

        info: dict[str, Any] = {"name": name, "available": True, "reason": "", "description": "",
                                "pipeline_types": list(PIPELINE_TYPES) if name == "trellis2" else [],
                                "gpu": name == "trellis2", "model_version": ""}
        try:
            factory = generators.generator_class(name)
            info["description"] = getattr(factory, "description", "") or ""
            check = getattr(factory, "is_available", None)
            if name == "trellis2":
                import torch

                if not torch.cuda.is_available():
                    info.update(available=False, reason="no CUDA GPU on this server")
                elif check is not None and not check(self.config.model or None):
                    info.update(available=False, reason="model weights not found")
        except (PropForgeError, ImportError) as e:
            info.update(available=False, reason=str(e))
        if self._workers:
            info["model_version"] = self._workers[0].model_version(name)
        with self._lock:
            self._backend_info[name] = info
        return dict(info)

    def _check_backend(self, name: str) -> None:
        info = self.backend_info(name)
        if not info["available"]:
            raise BackendUnavailable(f"backend {name!r} is not available on this server: {info['reason']}")

    # -- events -----------------------------------------------------------------------------------
    def events_after(self, job_id: str, after: int = 0) -> list[Event]:
        with self._lock:
            mem = self._events.get(job_id)
            if mem is not None:   # sorted by sequence: no scan of a long job's whole history per watcher wake-up
                return mem[bisect.bisect_right(mem, after, key=lambda e: e.sequence):]
        self.get(job_id)
        return self.store.events_after(job_id, after)

    def subscribe(self, job_id: str, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` (from a worker thread) for each new event; returns the unsubscribe."""
        with self._lock:
            self._subs[job_id].add(callback)

        def unsubscribe() -> None:
            with self._lock:
                subs = self._subs.get(job_id)
                if subs is not None:
                    subs.discard(callback)
                    if not subs:
                        del self._subs[job_id]
        return unsubscribe

    async def watch(self, job_id: str, after: int = 0, keepalive: float | None = None) -> AsyncIterator[Event | None]:
        """Events with sequence > ``after`` until the terminal one; ``None`` every ``keepalive`` idle seconds."""
        if self.get(job_id).terminal:  # nothing more will come: replay and stop (never wait on a finished job)
            for ev in self.store.events_after(job_id, after):
                yield ev
            return
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify(_: Event) -> None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # loop closed
                pass

        unsubscribe = self.subscribe(job_id, notify)
        try:
            while True:
                wake.clear()
                for ev in self.events_after(job_id, after):
                    yield ev
                    after = ev.sequence
                    if ev.terminal:
                        return
                try:
                    await asyncio.wait_for(wake.wait(), keepalive)
                except asyncio.TimeoutError:
                    yield None
        finally:
            unsubscribe()

    def iter_events(self, job_id: str, after: int = 0, timeout: float | None = None) -> Iterator[Event]:
        """Blocking form of ``watch`` for threads; stops at the terminal event or after ``timeout`` idle s."""
        if self.get(job_id).terminal:
            yield from self.store.events_after(job_id, after)
            return
        wake = threading.Event()
        unsubscribe = self.subscribe(job_id, lambda _: wake.set())
        try:
            while True:
                wake.clear()
                for ev in self.events_after(job_id, after):
                    yield ev
                    after = ev.sequence
                    if ev.terminal:
                        return
                if not wake.wait(timeout):
                    raise TimeoutError(f"no event from job {job_id} in {timeout} s")
        finally:
            unsubscribe()

    # -- metrics ----------------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """Prometheus text exposition (version 0.0.4)."""
        by_state = self.store.count_by_state()
        with self._lock:
            lines = ["# HELP propforge_queue_length Jobs waiting for a worker.",
                     "# TYPE propforge_queue_length gauge", f"propforge_queue_length {len(self._queue)}",
                     "# HELP propforge_workers Worker slots (one per GPU or CPU worker).",
                     "# TYPE propforge_workers gauge", f"propforge_workers {len(self._workers)}",
                     "# HELP propforge_workers_busy Workers running a job.",
                     "# TYPE propforge_workers_busy gauge", f"propforge_workers_busy {self._busy}",
                     "# HELP propforge_jobs Jobs in the store by state.", "# TYPE propforge_jobs gauge"]
            for state in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED):
                lines.append(f'propforge_jobs{{state="{state}"}} {by_state.get(state, 0)}')
            lines += ["# HELP propforge_jobs_submitted_total Jobs accepted into the queue since start.",
                      "# TYPE propforge_jobs_submitted_total counter"]
            lines += [f'propforge_jobs_submitted_total{{backend="{b}"}} {n}' for b, n in sorted(self._submitted.items())]
            lines += ["# HELP propforge_jobs_finished_total Jobs that reached a terminal state since start.",
                      "# TYPE propforge_jobs_finished_total counter"]
            lines += [f'propforge_jobs_finished_total{{state="{s}"}} {n}' for s, n in sorted(self._finished.items())]
            lines += ["# HELP propforge_result_cache_hits_total Requests answered from the result cache.",
                      "# TYPE propforge_result_cache_hits_total counter", f"propforge_result_cache_hits_total {self._cache_hits}",
                      "# HELP propforge_stage_duration_seconds Wall time of each pipeline stage.",
                      "# TYPE propforge_stage_duration_seconds histogram"]
            lines += self._stage_hist.render("propforge_stage_duration_seconds", "stage")
            lines += ["# HELP propforge_job_duration_seconds Wall time from start to finish of a job.",
                      "# TYPE propforge_job_duration_seconds histogram"]
            lines += self._job_hist.render("propforge_job_duration_seconds", "backend")
        return "\n".join(lines) + "\n"

    # -- internals: state changes (call with the lock held) ----------------------------------------
    def _effective_options(self, options: GenerateOptions) -> GenerateOptions:
        """Apply the server's backend default, drop client-chosen model paths, validate."""
        d = options.to_dict()
        if d["backend"] in ("", "auto"):
            d["backend"] = self.default_backend
        d["model"] = ""  # weights are the server's choice, never a path from a client
        return GenerateOptions.from_dict(d).validate()

    def _answer_from_cache(self, job: JobRecord, sha: str, size: int) -> JobRecord:
        now = time.time()
        job.state, job.cached, job.result_sha256, job.result_size = SUCCEEDED, True, sha, size
        job.started_at = job.finished_at = now
        job.fraction, job.stage = 1.0, "cached"
        with self._lock, self.store.transaction():  # the job and its one event land together
            self.store.insert_job(job)
            self._seq[job.id] = 0
            self._cache_hits += 1
            self._finished[SUCCEEDED] += 1
            self._emit(job.id, "finished", {"result_size": size, "result_sha256": sha, "cached": True})
            self._seq.pop(job.id, None)
        return self._copy(job)

    def _emit(self, job_id: str, kind: str, data: dict[str, Any]) -> Event:
        return self._emit_many(job_id, [(kind, data)])[-1]

    def _emit_many(self, job_id: str, items: list[tuple[str, dict[str, Any]]]) -> list[Event]:
        """Store the events (one transaction), then tell the watchers. Call with the lock held."""
        seq = self._seq.get(job_id)
        if seq is None:
            seq = self.store.last_sequence(job_id)
        now = time.time()
        events = [Event(seq + i, job_id, now, kind, data) for i, (kind, data) in enumerate(items, 1)]
        self.store.append_events(events)
        self._seq[job_id] = events[-1].sequence
        if job_id in self._events:
            self._events[job_id].extend(events)
        for cb in list(self._subs.get(job_id, ())):
            try:
                cb(events[-1])
            except Exception:  # a broken watcher must not break the job
                log.exception("event subscriber failed")
        return events

    def _terminate(self, job: JobRecord, state: str, kind: str, data: dict[str, Any],
                   error: str = "", code: str = "") -> None:
        if job.terminal:
            return
        job.state, job.finished_at, job.error, job.error_code = state, time.time(), error, code
        job.queue_position = 0
        with self.store.transaction():  # terminal state and terminal event commit together
            self.store.update_job(job.id, state=state, finished_at=job.finished_at, error=error, error_code=code,
                                  stage=job.stage, fraction=job.fraction, result_sha256=job.result_sha256,
                                  result_size=job.result_size)
            self._emit(job.id, kind, data)
        if job.id in self._queue:
            self._queue.remove(job.id)
            self._update_positions()
        self._finished[state] += 1
        log.info("job %s %s%s", job.id, state, f" ({code}: {error})" if error else
                 f" in {job.finished_at - job.started_at:.2f} s" if job.started_at else "")
        self._jobs.pop(job.id, None)
        self._events.pop(job.id, None)
        self._seq.pop(job.id, None)

    def _fail(self, job: JobRecord, reason: str, code: str) -> None:
        self._terminate(job, FAILED, "failed", {"reason": reason, "code": code}, error=reason, code=code)

    def _update_positions(self) -> None:
        with self.store.transaction():   # one commit for the whole queue, not one per waiting job
            for i, jid in enumerate(self._queue, 1):
                job = self._jobs[jid]
                if job.queue_position != i:
                    job.queue_position = i
                    self._emit(jid, "queued", {"position": i})

    def _abort(self, run: _Running, reason: str, kind: type[Cancelled]) -> None:
        if not run.abort.is_set():
            run.reason, run.kind = reason, kind
            run.abort.set()

    @staticmethod
    def _copy(job: JobRecord) -> JobRecord:
        return JobRecord(**{**job.__dict__, "options": json.loads(json.dumps(job.options))})

    # -- internals: recovery, workers, deadlines ---------------------------------------------------
    def _recover(self) -> None:
        """Queued jobs go back in the queue; interrupted running jobs re-run until max_attempts, then fail."""
        now = time.time()
        with self._cv:
            for job in self.store.jobs_in_states(QUEUED, RUNNING):
                self._jobs[job.id] = job
                self._events[job.id] = self.store.events_after(job.id, 0)
                self._seq[job.id] = self._events[job.id][-1].sequence if self._events[job.id] else 0
                interrupted = job.state == RUNNING
                if interrupted and job.attempts >= self.config.max_attempts:
                    self._fail(job, f"the server stopped while this job was running (attempt {job.attempts} of "
                                    f"{self.config.max_attempts}); not retried", "ABORTED")
                elif job.deadline and now > job.deadline:
                    self._fail(job, "deadline passed while the server was down", "DEADLINE_EXCEEDED")
                elif self.store.get_image(job.image_sha256) is None:
                    self._fail(job, "input image is missing from the store; submit the job again", "DATA_LOSS")
                else:
                    job.state, job.stage, job.fraction = QUEUED, "", 0.0
                    self._queue.append(job.id)
                    job.queue_position = len(self._queue)
                    msg = "re-queued: the server stopped while this job was running" if interrupted else \
                        "still queued after a server restart"
                    with self.store.transaction():
                        self.store.update_job(job.id, state=QUEUED, stage="", fraction=0.0)
                        self._emit(job.id, "queued", {"position": job.queue_position, "message": msg})

    def _next_job(self) -> _Running | None:
        """The oldest queued job that does not repeat a running one (same cache key).

        Why: a double-click in an editor, or a watch folder and a plugin sending the same image, must
        not run the generator twice. A repeat waits for its twin and is then answered from the result
        cache; if the twin failed or was cancelled, the repeat runs itself.
        """
        with self._cv:
            while True:
                while not self._queue and not self._stopping.is_set():
                    self._cv.wait(0.5)
                if self._stopping.is_set():
                    return None
                running = {r.job.cache_key for r in self._running.values() if r.job.cache_key}
                pick = next((i for i, jid in enumerate(self._queue) if self._jobs[jid].cache_key not in running), None)
                if pick is None:               # everything queued repeats a running job: wait for one to end
                    self._cv.wait(0.5)
                    continue
                job = self._jobs[self._queue[pick]]
                hit = self.store.cache_get(job.cache_key) if job.cache_key else None
                if hit is None:
                    break
                job.cached, job.result_sha256, job.result_size = True, hit[0], hit[1]
                job.started_at, job.fraction, job.stage = time.time(), 1.0, "cached"
                self.store.update_job(job.id, cached=True, started_at=job.started_at)
                self._cache_hits += 1
                self._terminate(job, SUCCEEDED, "finished", {"result_size": hit[1], "result_sha256": hit[0], "cached": True})
            self._queue.pop(pick)
            job.state, job.started_at, job.queue_position = RUNNING, time.time(), 0
            job.attempts += 1
            self.store.update_job(job.id, state=RUNNING, started_at=job.started_at, attempts=job.attempts)
            self._update_positions()
            run = _Running(job, stage_started=time.monotonic())
            self._running[job.id] = run
            self._busy += 1
            return run

    def _wants_warmup(self) -> bool:
        """'auto': only for TRELLIS.2, whose first run per process compiles and autotunes GPU kernels."""
        mode = self.config.warmup
        return mode == "on" or (mode == "auto" and self.default_backend == "trellis2")

    def _warm_up(self, worker: Worker) -> None:
        """Run one generation on a synthetic image and throw it away, so the first user job does not pay
        for kernel compilation and autotuning (tens of seconds on a fresh GPU process). Never fatal."""
        t0 = time.monotonic()
        try:
            options = self._effective_options(GenerateOptions())   # what a user job with defaults runs
            worker.run(warmup_image(), options, lambda event: None)
            log.info("warm-up generation on %s took %.1f s", self.default_backend, time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - jobs will report the real problem
            log.warning("warm-up generation failed after %.1f s: %s", time.monotonic() - t0, e)

    def _work_loop(self, worker: Worker) -> None:
        preload = getattr(worker, "preload", None)
        if preload is not None:  # load the default model before the first job (readiness waits for it)
            try:
                preload(self.default_backend)
            except Exception as e:  # jobs will fail with the real reason; the server stays up
                log.error("worker could not load backend %r: %s", self.default_backend, e)
        if self._wants_warmup():
            self._warm_up(worker)
        with self._lock:
            self._loaded += 1
        while True:
            run = self._next_job()
            if run is None:
                return
            try:
                self._run_one(worker, run)
            except Exception:  # never lose the worker thread
                log.exception("worker bookkeeping failed for job %s", run.job.id)
                with self._cv:
                    self._fail(run.job, "internal server error (see the server log)", "INTERNAL")
            finally:
                with self._cv:
                    self._running.pop(run.job.id, None)
                    self._busy -= 1
                    self._cv.notify_all()      # a queued repeat of this job may now be answered or run

    def _run_one(self, worker: Worker, run: _Running) -> None:
        job = run.job
        image = self.store.get_image(job.image_sha256)
        if image is None:
            with self._cv:
                self._fail(job, "input image is missing from the store", "DATA_LOSS")
            return
        try:
            options = GenerateOptions.from_dict({**job.options, "model": self.config.model if job.backend == "trellis2" else ""})
            result = worker.run(image, options, self._progress_callback(run))
        except Cancelled as e:
            self._stopped(run, e)
            return
        except PropForgeError as e:
            with self._cv:
                self._fail(job, str(e), error_code(e))
            return
        except Exception as e:
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            with self._cv:
                self._fail(job, f"internal error: {type(e).__name__}: {e}", "INTERNAL")
            return
        self.store.put_result(result.sha256, result.glb)
        with self._cv:
            if job.terminal:  # cancelled or timed out while the last stage ran
                return
            self._observe_stage(run, time.monotonic())
            job.result_sha256, job.result_size, job.fraction = result.sha256, len(result.glb), 1.0
            if job.cache_key:
                self.store.cache_put(job.cache_key, result.sha256, len(result.glb))
            self._job_hist.observe(job.backend, time.time() - job.started_at)
            self._terminate(job, SUCCEEDED, "finished",
                            {"result_size": job.result_size, "result_sha256": job.result_sha256, "cached": False})

    def _stopped(self, run: _Running, exc: Cancelled) -> None:
        """The generator raised Cancelled: a cancel (already recorded), a deadline, or a shutdown."""
        job = run.job
        with self._cv:
            if job.terminal:
                return
            if run.kind is _Shutdown:
                job.attempts -= 1  # a clean shutdown does not count as a crash
                job.state, job.stage, job.fraction = QUEUED, "", 0.0
                with self.store.transaction():
                    self.store.update_job(job.id, state=QUEUED, stage="", fraction=0.0, attempts=job.attempts)
                    self._emit(job.id, "queued", {"position": 1, "message": run.reason})
            elif run.kind is DeadlineExceeded:
                self._fail(job, run.reason, "DEADLINE_EXCEEDED")
            else:  # a generator raised Cancelled on its own
                self._terminate(job, CANCELLED, "cancelled", {"reason": str(exc) or "cancelled"})

    def _progress_callback(self, run: _Running) -> Callable[[ProgressEvent], None]:
        job = run.job

        def on_progress(ev: ProgressEvent) -> None:
            if not run.abort.is_set() and job.deadline and time.time() > job.deadline:
                with self._cv:
                    self._abort(run, f"deadline of {job.deadline - job.created_at:.0f} s exceeded during "
                                     f"stage {ev.stage or job.stage!r}", DeadlineExceeded)
                    self._fail(job, run.reason, "DEADLINE_EXCEEDED")
            if run.abort.is_set():
                raise run.kind(run.reason)
            self._record_progress(run, ev)

        return on_progress

    def _record_progress(self, run: _Running, ev: ProgressEvent) -> None:
        job = run.job
        now = time.monotonic()
        with self._cv:
            if job.terminal:
                return
            items: list[tuple[str, dict[str, Any]]] = []
            if ev.stage and ev.stage != job.stage:
                if job.stage:
                    self._observe_stage(run, now)
                run.stage_started, job.stage = now, ev.stage
                items.append(("stage_started", {"stage": ev.stage}))
            job.fraction = max(job.fraction, min(max(ev.fraction, 0.0), 1.0))
            step = (ev.stage, ev.step, ev.total)
            if items or step != run.last_step or now - run.last_progress >= self.config.progress_interval:
                run.last_step, run.last_progress = step, now
                elapsed = time.time() - job.started_at
                eta = elapsed * (1.0 - job.fraction) / job.fraction if job.fraction >= 0.02 else -1.0
                items.append(("progress", {"stage": job.stage, "step": ev.step or 0, "total": ev.total or 0,
                                           "fraction": job.fraction, "eta_seconds": eta, "message": ev.message}))
            if items:  # stage + progress in one store transaction: fewer GIL hand-offs per step
                self._emit_many(job.id, items)

    def _observe_stage(self, run: _Running, now: float) -> None:
        if run.job.stage:
            self._stage_hist.observe(run.job.stage, now - run.stage_started)

    def purge_old(self) -> dict[str, int]:
        """Apply the retention policy (``keep_days``) to the store."""
        if self.config.keep_days <= 0:
            return {}
        counts = self.store.purge(time.time() - self.config.keep_days * 86400.0)
        if any(counts.values()):
            log.info("retention: forgot %(jobs)d jobs, %(cache_entries)d cache entries, deleted %(files)d files", counts)
        return counts

    def _housekeep(self) -> None:
        """Expire queued jobs past their deadline and flag running ones (they stop at the next step);
        apply the retention policy at start and hourly."""
        next_purge = 0.0
        while not self._stopping.wait(0.25):
            now = time.time()
            if now >= next_purge:
                next_purge = now + 3600.0
                try:
                    self.purge_old()
                except Exception:  # retention must never stop deadline handling
                    log.exception("retention purge failed")
            with self._cv:
                for jid in list(self._queue):
                    job = self._jobs[jid]
                    if job.deadline and now > job.deadline:
                        self._fail(job, f"deadline of {job.deadline - job.created_at:.0f} s exceeded while queued",
                                   "DEADLINE_EXCEEDED")
                for run in list(self._running.values()):
                    job = run.job
                    if job.deadline and now > job.deadline and not job.terminal:
                        self._abort(run, f"deadline of {job.deadline - job.created_at:.0f} s exceeded during "
                                         f"stage {job.stage!r}", DeadlineExceeded)
                        self._fail(job, run.reason, "DEADLINE_EXCEEDED")


def _valid_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 64 and all(c in "0123456789abcdef" for c in job_id)
