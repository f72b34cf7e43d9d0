"""The watch loop: filesystem events -> stable, readable image -> deduped job -> GLB + status file.

Threads: a watchdog observer feeds paths into ``pending``; one scheduler thread decides when a
pending file is completely written and whether it needs a job; N workers run jobs. Every decision
is keyed by (source content sha256, effective options sha256), so restarts, duplicate files and
repeated events never redo finished work, and a changed image or options file always does.
"""
from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from propforge.errors import BackendUnavailable, Cancelled, InputError, ModelLoadError, PropForgeError
from propforge.fileio import write_atomic
from propforge.options import GenerateOptions
from propforge.progress import ProgressEvent

from . import intake
from .project import UNITY, ProjectLayout
from .runner import InProcessRunner, Runner, decode_image
from .state import ImageRow, ProjectLock, StateDB
from .status import read_status, status_path, utc_iso, write_status
from .unity_meta import ensure_asset_meta, ensure_folder_metas

log = logging.getLogger("propforge.watch")

#: errors that will not go away by trying again: fail at once with the message
PERMANENT_ERRORS = (InputError, BackendUnavailable, ModelLoadError)


@dataclass
class WatchConfig:
    options: dict[str, Any] = field(default_factory=dict)  # base GenerateOptions dict (CLI flags)
    workers: int = 0                   # 0 = the runner's default
    settle_s: float = 0.5              # file unchanged this long before it is read
    incomplete_timeout_s: float = 10.0  # an unchanged file that still does not decode is failed after this
    max_attempts: int = 3              # tries per job for transient errors (server down, OOM, I/O)
    retry_base_s: float = 2.0          # backoff: base * 2**(attempt-1), capped at retry_max_s
    retry_max_s: float = 60.0
    delete_outputs: bool = False       # deleting a source also deletes its GLB (off: outputs are kept)
    polling: bool = False              # stat-polling observer (network drives, container mounts)
    progress_interval_s: float = 0.5   # least time between two "running" status writes
    rescan_s: float = 30.0             # light re-scan (stat only) for events the OS dropped; 0 = never


@dataclass
class _Pending:
    sig: Optional[tuple[int, int]] = None   # (size, mtime_ns) last seen
    changed_at: float = 0.0                 # wall time the signature last changed
    unready_sig: Optional[tuple[int, int]] = None  # signature that did not look complete


class Watcher:
    """Watch ``layout.drop`` and keep ``layout.output`` in step with it. ``start``/``stop`` or ``run_once``."""

    def __init__(self, layout: ProjectLayout, config: WatchConfig | None = None,
                 runner: Runner | None = None) -> None:
        self.layout = layout
        self.config = config or WatchConfig()
        self.runner = runner or InProcessRunner()
        self.base_options = GenerateOptions.from_dict(dict(self.config.options)).validate().to_dict()
        self.db: Optional[StateDB] = None
        self.stats = {"generated": 0, "copied": 0, "failed": 0, "skipped": 0}
        self._lock = ProjectLock(layout.state / "watch.lock")
        self._cv = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._jobs: deque[tuple[str, int]] = deque()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._deciding: set[str] = set()
        self._retries: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observer = None
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._ignored: set[str] = set()
        self._decided: dict[str, tuple[int, int]] = {}   # rel -> (size, mtime_ns) it was last decided on
        self._next_rescan = 0.0

    # ---------------------------------------------------------------- lifecycle
    def start(self, observe: bool = True) -> "Watcher":
        """Take the project lock, start workers (+ observer), then scan what is already there."""
        if self._stopping.is_set() or self._threads:
            raise RuntimeError("a Watcher starts once; create a new one to watch again")
        self._lock.acquire()
        try:
            self._prepare_folders()
            self.db = StateDB(self.layout.state / "watch.db")
            n = self.config.workers or self.runner.default_workers
            self._spawn(self._scheduler_loop, "propforge-watch-scheduler")
            for i in range(max(1, n)):
                self._spawn(self._worker_loop, f"propforge-watch-worker-{i}")
            # not joined on stop: a health check against an unreachable host may hang for a while
            threading.Thread(target=self._warm_up, name="propforge-watch-warm-up", daemon=True).start()
            if observe:
                self._start_observer()
            self.scan()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop promptly: running jobs are cancelled at their next progress step and stay queued
        (status "queued"), so the next start picks them up; nothing half-written is left behind."""
        self._stopping.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        with self._cv:
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        if self.db is not None:
            self.db.close()
            self.db = None
        self._lock.release()

    def run_once(self, timeout: float | None = None) -> dict[str, int]:
        """Process everything in the drop folder now (with retries) and stop; returns the counts."""
        self.start(observe=False)
        try:
            self.wait_idle(timeout)
        finally:
            self.stop()
        return dict(self.stats)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no file is pending, queued, running or waiting for a retry."""
        with self._cv:
            return self._cv.wait_for(lambda: self._idle() or self._stopping.is_set(), timeout)

    def _idle(self) -> bool:
        return not (self._pending or self._deciding or self._jobs or self._queued or self._running
                    or self._retries)

    def _warm_up(self) -> None:
        """Load the model / reach the server in the background; problems are logged, not fatal."""
        prepare = getattr(self.runner, "prepare", None)
        if prepare is None:
            return
        try:
            log.info("%s", prepare(GenerateOptions.from_dict(dict(self.base_options))))
        except Exception as e:
            log.warning("not ready yet: %s (images will fail or be retried until this is fixed)", e)

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _prepare_folders(self) -> None:
        for folder in (self.layout.drop, self.layout.output):
            if self.layout.engine == UNITY:
                ensure_folder_metas(self.layout.root, folder)
            folder.mkdir(parents=True, exist_ok=True)

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler

        if self.config.polling:
            from watchdog.observers.polling import PollingObserver as ObserverClass
        else:
            from watchdog.observers import Observer as ObserverClass

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                try:
                    watcher._on_event(event)
                except Exception:  # an observer thread that dies silently stops the whole watch
                    log.exception("error handling %s", event)

        self._observer = ObserverClass()
        self._observer.schedule(Handler(), str(self.layout.drop), recursive=True)
        self._observer.start()

    # ---------------------------------------------------------------- events and scanning
    def _on_event(self, event) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        src = Path(os.fsdecode(event.src_path))
        if kind == "moved":
            self._gone(src, event.is_directory)
            dest = Path(os.fsdecode(event.dest_path))
            if self.layout.in_drop(dest):
                self._arrived(dest, event.is_directory)
        elif kind == "deleted":
            self._gone(src, event.is_directory)
        else:
            self._arrived(src, event.is_directory)

    def _arrived(self, path: Path, is_dir: bool) -> None:
        if is_dir:
            if path.is_dir() and self.layout.in_drop(path):
                self._scan_folder(path)
            return
        name = path.name
        if self._hidden(path):
            return
        if intake.is_sidecar_name(name):
            self._options_changed(path)
        elif intake.is_image_name(name):
            self._touch(self.layout.rel_source(path))
        elif not intake.is_quiet(name) and str(path) not in self._ignored:
            self._ignored.add(str(path))
            log.info("ignoring %s: not an image (%s)", self._show(path), ", ".join(sorted(intake.IMAGE_SUFFIXES)))

    def _gone(self, path: Path, is_dir: bool) -> None:
        if not self.layout.in_drop(path):
            return
        rel = self.layout.rel_source(path)
        if self._hidden(path):
            return
        if is_dir:
            for row in self.db.all() if self.db else []:
                if row.source.startswith(rel.rstrip("/") + "/") and not self.layout.source_path(row.source).exists():
                    self._source_removed(row.source)
        elif intake.is_sidecar_name(path.name):
            self._options_changed(path)
        elif intake.is_image_name(path.name):
            self._source_removed(rel)

    def scan(self) -> None:
        """Queue-check every image in the drop tree; handle sources removed while we were down."""
        self._scan_folder(self.layout.drop)
        self._prune_removed()

    def _prune_removed(self) -> None:
        """Note, for each known source no longer on disk, that it was removed (outputs are kept)."""
        for row in self.db.all() if self.db else []:
            if not self.layout.source_path(row.source).exists():
                self._source_removed(row.source)

    def _scan_folder(self, folder: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not intake.is_sidecar_name(name):
                    self._arrived(Path(dirpath) / name, False)

    def _touch(self, rel: str) -> None:
        with self._cv:
            if rel not in self._pending:
                self._pending[rel] = _Pending()
            self._cv.notify_all()

    def _options_changed(self, sidecar: Path) -> None:
        """Re-check the images a sidecar configures (their options hash decides if anything reruns)."""
        target, is_folder = intake.sidecar_target(self.layout.rel_source(sidecar))
        folder = self.layout.source_path(target) if is_folder else self.layout.source_path(target).parent
        if not folder.is_dir():
            return
        if is_folder:
            self._scan_folder(folder)
            return
        base = Path(target).name
        for p in folder.iterdir():
            if p.is_file() and intake.is_image_name(p.name) and base in (p.name, p.stem):
                self._touch(self.layout.rel_source(p))

    def _source_removed(self, rel: str) -> None:
        """A source image was deleted/renamed away: keep its output (default) or remove it."""
        with self._cv:
            self._pending.pop(rel, None)
        row = self.db.get(rel) if self.db else None
        if row is None:
            return
        out = self.layout.output / row.output
        if self.config.delete_outputs:
            for p in (out, out.with_name(out.name + ".meta"), status_path(out),
                      status_path(out).with_name(status_path(out).name + ".meta")):
                p.unlink(missing_ok=True)
            self.db.delete(rel)
            log.info("removed %s: its source %s was deleted", self._show(out), rel)
            return
        st = read_status(out)
        if (st is not None and not st.get("source_deleted") and st.get("state") in ("done", "failed")
                and st.get("source") == self._ids(rel)["source"]):
            kept = {k: v for k, v in st.items() if k not in ("schema", "updated", "state")}
            self._write_status(out, st["state"], **kept, source_deleted=True)
            log.info("source %s was deleted; keeping %s", rel, self._show(out))

    # ---------------------------------------------------------------- scheduler
    def _scheduler_loop(self) -> None:
        self._next_rescan = time.time() + self.config.rescan_s
        while not self._stopping.is_set():
            if self.config.rescan_s > 0 and time.time() >= self._next_rescan:
                self._next_rescan = time.time() + self.config.rescan_s
                try:
                    self._rescan()
                except Exception:
                    log.exception("re-scan of the drop folder failed")
            with self._cv:
                now = time.time()
                while self._retries and self._retries[0][0] <= now:
                    _, _, rel, attempt = heapq.heappop(self._retries)
                    self._enqueue_locked(rel, attempt)
                pending = list(self._pending.items())
            for rel, entry in pending:
                if self._stopping.is_set():
                    return
                try:
                    self._check_pending(rel, entry)
                except Exception as e:  # a bug or a full disk must not stall the image silently
                    log.exception("error checking %s", rel)
                    with self._cv:
                        self._pending.pop(rel, None)
                    self._safe_fail(rel, 1, f"{type(e).__name__}: {e}", permanent=not isinstance(e, OSError))
            with self._cv:
                self._cv.notify_all()
                if self._stopping.is_set():
                    return
                wait = None
                if self._pending:
                    wait = min(0.1, self.config.settle_s / 2)
                if self._retries:
                    due = max(0.0, self._retries[0][0] - time.time())
                    wait = due if wait is None else min(wait, due)
                if self.config.rescan_s > 0:
                    due = max(0.0, self._next_rescan - time.time())
                    wait = due if wait is None else min(wait, due)
                self._cv.wait(wait if wait is not None else 1.0)

    def _rescan(self) -> None:
        """Catch what the OS did not report (event queue overflow, network shares): images whose
        (size, mtime) differs from what was last decided, and sources that disappeared. Stat only."""
        for dirpath, dirnames, filenames in os.walk(self.layout.drop):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not intake.is_image_name(name):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                rel = self.layout.rel_source(path)
                if self._decided.get(rel) != (st.st_size, st.st_mtime_ns):
                    with self._cv:
                        busy = rel in self._pending or rel in self._queued or rel in self._running
                    if not busy:
                        self._touch(rel)
        self._prune_removed()

    def _check_pending(self, rel: str, entry: _Pending) -> None:
        """Hand a pending file on once it is unchanged for ``settle_s`` and looks complete."""
        path = self.layout.source_path(rel)
        now = time.time()
        try:
            st = path.stat()
        except OSError:
            with self._cv:
                self._pending.pop(rel, None)
            return
        sig = (st.st_size, st.st_mtime_ns)
        if sig != entry.sig:
            entry.changed_at = min(now, st.st_mtime) if entry.sig is None else now
            entry.sig = sig
        quiet_for = now - entry.changed_at
        if quiet_for < self.config.settle_s:
            return
        if now - self._sidecars_changed_at(rel, now) < self.config.settle_s:
            return                          # an option file is being written: read it when done
        with self._cv:
            if rel in self._queued:         # the queued job reads the newest bytes anyway
                self._pending.pop(rel, None)
                return
            if rel in self._running:        # decide again once the running job has finished
                return
            if self._retry_scheduled(rel):
                if self._decided.get(rel) == sig:   # a late event for the bytes the retry is for
                    self._pending.pop(rel, None)
                    return
                self._cancel_retry(rel)     # new bytes: a fresh job with fresh attempts
        if entry.unready_sig == sig and quiet_for < self.config.incomplete_timeout_s:
            return
        try:
            data = path.read_bytes()
        except OSError:                     # e.g. locked by the writer on Windows
            data = b""
        if self._unready(data) and quiet_for < self.config.incomplete_timeout_s:
            entry.unready_sig = sig
            return
        with self._cv:
            self._pending.pop(rel, None)
            self._deciding.add(rel)         # not idle while the decision is being made
        unchanged = self._decided.get(rel) == sig
        self._decided[rel] = sig
        try:
            self._decide(rel, data, unchanged)
        finally:
            with self._cv:
                self._deciding.discard(rel)
                self._cv.notify_all()

    def _sidecars_changed_at(self, rel: str, now: float) -> float:
        times = [0.0]
        for side in intake.image_sidecars(self.layout.drop, rel):
            try:
                times.append(min(now, side.stat().st_mtime))
            except OSError:
                pass
        return max(times)

    @staticmethod
    def _unready(data: bytes) -> bool:
        """True while the bytes are not yet a whole image (the worker reports the real error later)."""
        if not intake.looks_complete(data):
            return True
        if intake.self_delimiting(data):    # PNG/JPEG/WebP/BMP: the end check is proof enough, no decode
            return False
        try:
            decode_image(data)
        except Exception:
            return True
        return False

    def _decide(self, rel: str, data: bytes, unchanged: bool = False) -> None:
        """Skip if already done with these bytes and options; otherwise claim the output and queue.

        ``unchanged``: the file's (size, mtime) is the one this run decided on before; a late or
        repeated event for it must not re-run a job that failed on exactly these inputs.
        """
        out = self.layout.output_path(rel)
        sha = intake.sha256_bytes(data)
        try:
            opts, _ = intake.resolve_options(self.base_options, self.layout.drop, rel)
        except InputError as e:
            self._fail(rel, 1, str(e), permanent=True, sha=sha)
            return
        osha = intake.options_sha256(opts)
        if self._is_done(rel, sha, osha):
            self._count("skipped")
            log.debug("up to date: %s", rel)
            return
        row = self.db.get(rel)
        if (unchanged and row is not None and row.state == "failed" and row.source_sha256 == sha
                and row.options_sha256 == osha):
            log.debug("failed before on these inputs, not retrying until they change: %s", rel)
            return
        out_rel = self._out_rel(rel)
        clash = [r.source for r in self.db.by_output(out_rel)
                 if r.source != rel and r.state != "failed" and self.layout.source_path(r.source).is_file()]
        if clash:
            # the status file belongs to the other image: report here, in the log and the run log only
            reason = f"output {self._show(out)} is already made from {clash[0]}; rename one of the two images"
            self.db.log_run(rel, "failed", source_sha256=sha, options_sha256=osha, error=reason)
            self._count("failed")
            log.error("failed %s: %s", rel, reason)
            return
        self.db.upsert(rel, out_rel, "queued", source_sha256=sha, options_sha256=osha, attempts=0, error=None)
        self._write_status(out, "queued", **self._ids(rel), source_sha256=sha, options_sha256=osha)
        with self._cv:
            self._enqueue_locked(rel, 1)
        log.info("queued %s", rel)

    def _retry_scheduled(self, rel: str) -> bool:
        return any(r[2] == rel for r in self._retries)

    def _cancel_retry(self, rel: str) -> None:
        self._retries = [r for r in self._retries if r[2] != rel]
        heapq.heapify(self._retries)

    def _enqueue_locked(self, rel: str, attempt: int) -> None:
        if rel in self._queued or self._stopping.is_set():
            return
        self._queued.add(rel)
        self._jobs.append((rel, attempt))
        self._cv.notify_all()

    def _is_done(self, rel: str, sha: str, osha: str) -> bool:
        """Done = recorded with these hashes and its GLB is still there (DB first, status file second)."""
        out = self.layout.output_path(rel)
        row = self.db.get(rel)
        st = read_status(out)
        if (row and row.state == "done" and row.source_sha256 == sha and row.options_sha256 == osha
                and out.is_file() and out.stat().st_size == row.output_size):
            if not st or st.get("state") != "done" or st.get("source_deleted"):
                # crashed between the GLB and its status, or the source came back after a delete
                kept = {k: v for k, v in (st or {}).items()
                        if st.get("state") == "done" and k not in ("schema", "updated", "state", "source_deleted")}
                kept.update(self._ids(rel), source_sha256=sha, options_sha256=osha,
                            output_sha256=row.output_sha256, output_size=row.output_size)
                self._write_status(out, "done", **kept)
            return True
        if (st and st.get("state") == "done" and st.get("source_sha256") == sha
                and st.get("options_sha256") == osha and out.is_file()):
            glb = out.read_bytes()
            if intake.sha256_bytes(glb) == st.get("output_sha256"):   # adopt: state DB was lost
                self.db.upsert(rel, self._out_rel(rel), "done", source_sha256=sha, options_sha256=osha,
                               output_sha256=st["output_sha256"], output_size=len(glb), error=None)
                return True
        return False

    # ---------------------------------------------------------------- workers
    def _worker_loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stopping.is_set():
                    self._cv.wait()
                if self._stopping.is_set():
                    return
                rel, attempt = self._jobs.popleft()
                self._queued.discard(rel)
                self._running.add(rel)
            try:
                self._process(rel, attempt)
            except OSError as e:    # disk full, permissions, network share gone: retried with backoff
                log.warning("I/O error on %s: %s", rel, e)
                self._safe_fail(rel, attempt, f"I/O error: {e}", permanent=False)
            except Exception as e:  # a bug must not kill the worker; the image is failed visibly
                log.exception("internal error on %s", rel)
                self._safe_fail(rel, attempt, f"internal error: {e}", permanent=True)
            finally:
                with self._cv:
                    self._running.discard(rel)
                    self._cv.notify_all()

    def _rewritten_meanwhile(self, rel: str, data: bytes) -> bool:
        """The file looks cut off and was modified within the incomplete timeout: a writer is at it."""
        if intake.looks_complete(data):
            return False
        try:
            age = time.time() - self.layout.source_path(rel).stat().st_mtime
        except OSError:
            return False
        return age < self.config.incomplete_timeout_s

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._cv:
            return self._key_locks.setdefault(key, threading.Lock())

    def _process(self, rel: str, attempt: int) -> None:
        try:
            data = self.layout.source_path(rel).read_bytes()
        except FileNotFoundError:
            self._fail(rel, attempt, "the source image was removed before it was processed", permanent=True)
            return
        if self._rewritten_meanwhile(rel, data):
            self._touch(rel)                    # being written again: back to intake, no failure
            return
        sha = intake.sha256_bytes(data)
        try:
            opts, _ = intake.resolve_options(self.base_options, self.layout.drop, rel)
        except InputError as e:
            if time.time() - self._sidecars_changed_at(rel, time.time()) < self.config.settle_s:
                self._touch(rel)                # an option file is being rewritten right now
                return
            self._fail(rel, attempt, str(e), permanent=True, sha=sha)
            return
        osha = intake.options_sha256(opts)
        try:
            with self._key_lock((sha, osha)):   # identical image + options: one job, others copy it
                if self._is_done(rel, sha, osha):
                    return
                donor = self._find_donor(rel, sha, osha)
                if donor is not None:
                    self._finish(rel, attempt, sha, osha, opts, donor[1], 0.0, copied_from=donor[0])
                else:
                    self._generate(rel, attempt, data, sha, osha, opts)
        except OSError as e:    # here the inputs are known: the record names them, so a late event
            log.warning("I/O error on %s: %s", rel, e)  # for the same bytes is not taken as new work
            self._fail(rel, attempt, f"I/O error: {e}", permanent=False, sha=sha, osha=osha)

    def _find_donor(self, rel: str, sha: str, osha: str) -> Optional[tuple[str, bytes]]:
        for row in self.db.done_with_key(sha, osha):
            out = self.layout.output / row.output
            if row.source == rel or not out.is_file():
                continue
            glb = out.read_bytes()
            if intake.sha256_bytes(glb) == row.output_sha256:
                return row.source, glb
        return None

    def _generate(self, rel: str, attempt: int, data: bytes, sha: str, osha: str, opts: GenerateOptions) -> None:
        out = self.layout.output_path(rel)
        t0 = time.time()
        ids = {**self._ids(rel), "source_sha256": sha, "options_sha256": osha, "attempt": attempt,
               "max_attempts": self.config.max_attempts, "started": utc_iso(t0)}
        self.db.upsert(rel, self._out_rel(rel), "running", source_sha256=sha, options_sha256=osha, attempts=attempt)
        self._write_status(out, "running", **ids, progress={"stage": "prepare", "fraction": 0.0})
        log.info("generating %s (attempt %d)", rel, attempt)
        try:
            result = self.runner.run(data, opts, self._progress(out, ids), rel)
        except Cancelled as e:
            if self._stopping.is_set():
                self.db.upsert(rel, self._out_rel(rel), "queued", attempts=attempt - 1, error=None)
                self._write_status(out, "queued", **self._ids(rel), source_sha256=sha, options_sha256=osha,
                                   note="interrupted: the watcher stopped; it resumes on the next start")
                return
            self._fail(rel, attempt, f"cancelled: {e}", permanent=True, sha=sha, osha=osha)
            return
        except Exception as e:
            permanent = isinstance(e, PERMANENT_ERRORS + tuple(getattr(self.runner, "permanent_errors", ())))
            reason = str(e) if isinstance(e, PropForgeError) else f"{type(e).__name__}: {e}"
            self._fail(rel, attempt, reason, permanent=permanent, sha=sha, osha=osha)
            return
        self._finish(rel, attempt, sha, osha, opts, result.glb, time.time() - t0, backend=result.backend)

    def _progress(self, out: Path, ids: dict[str, Any]):
        """Status-file progress, throttled; raising Cancelled here is how stop() interrupts a job."""
        last = {"t": 0.0, "stage": None}
        t0 = time.monotonic()

        def callback(ev: ProgressEvent) -> None:
            if self._stopping.is_set():
                raise Cancelled("the watcher is stopping")
            now = time.monotonic()
            if ev.stage != last["stage"] or now - last["t"] >= self.config.progress_interval_s:
                last.update(t=now, stage=ev.stage)
                prog = {k: v for k, v in ev.to_dict().items() if k != "time"}
                if 0.02 < ev.fraction < 1.0:    # linear estimate; good enough for a progress bar
                    prog["eta_s"] = round((now - t0) * (1.0 - ev.fraction) / ev.fraction, 1)
                self._write_status(out, "running", **ids, progress=prog)

        return callback

    def _finish(self, rel: str, attempt: int, sha: str, osha: str, opts: GenerateOptions, glb: bytes,
                seconds: float, backend: str | None = None, copied_from: str | None = None) -> None:
        """Unity .meta first, then the GLB atomically, then the record, then status "done"."""
        out = self.layout.output_path(rel)
        if self.layout.engine == UNITY:
            ensure_asset_meta(self.layout.root, out)
        write_atomic(out, glb)
        gsha = intake.sha256_bytes(glb)
        self.db.upsert(rel, self._out_rel(rel), "done", source_sha256=sha, options_sha256=osha,
                       output_sha256=gsha, output_size=len(glb), attempts=attempt, error=None)
        kind = "copied" if copied_from else "generated"
        self.db.log_run(rel, kind, source_sha256=sha, options_sha256=osha, output_sha256=gsha, seconds=seconds)
        self._count(kind)
        self._write_status(out, "done", **self._ids(rel), source_sha256=sha, options_sha256=osha,
                           output_sha256=gsha, output_size=len(glb), backend=backend, options=opts.to_dict(),
                           attempt=attempt, seconds=round(seconds, 3), deduplicated_from=copied_from)
        log.info("done %s -> %s%s", rel, self._show(out),
                 f" (same image as {copied_from})" if copied_from else f" ({seconds:.1f} s)")

    def _fail(self, rel: str, attempt: int, reason: str, *, permanent: bool,
              sha: str | None = None, osha: str | None = None) -> None:
        """Retry with exponential backoff (bounded), or record the failure with its reason."""
        out = self.layout.output_path(rel)
        ids = {**self._ids(rel), "source_sha256": sha, "options_sha256": osha}
        if not permanent and self._stopping.is_set():     # not its fault: try again on the next start
            self.db.upsert(rel, self._out_rel(rel), "queued", attempts=attempt - 1, error=reason)
            self._write_status(out, "queued", **ids, last_error=reason,
                               note="interrupted: the watcher stopped; it resumes on the next start")
            return
        if not permanent and attempt < self.config.max_attempts:
            delay = min(self.config.retry_max_s, self.config.retry_base_s * 2 ** (attempt - 1))
            self.db.upsert(rel, self._out_rel(rel), "queued", source_sha256=sha, options_sha256=osha,
                           attempts=attempt, error=reason)
            self._write_status(out, "queued", **ids, attempt=attempt, max_attempts=self.config.max_attempts,
                               last_error=reason, retry_in_s=round(delay, 3))
            with self._cv:
                self._seq += 1
                heapq.heappush(self._retries, (time.time() + delay, self._seq, rel, attempt + 1))
                self._cv.notify_all()
            log.warning("attempt %d/%d failed for %s: %s; retrying in %.1f s",
                        attempt, self.config.max_attempts, rel, reason, delay)
            return
        # "" (not None) so the record says exactly which inputs failed, never a stale earlier hash
        self.db.upsert(rel, self._out_rel(rel), "failed", source_sha256=sha or "", options_sha256=osha or "",
                       attempts=attempt, error=reason)
        self.db.log_run(rel, "failed", source_sha256=sha, options_sha256=osha, error=reason)
        self._count("failed")
        self._write_status(out, "failed", **ids, attempt=attempt, error=reason)
        log.error("failed %s: %s", rel, reason)

    def _safe_fail(self, rel: str, attempt: int, reason: str, *, permanent: bool) -> None:
        """``_fail`` from an error handler: if even the status write fails, log and keep the thread."""
        try:
            self._fail(rel, attempt, reason, permanent=permanent)
        except Exception:
            log.exception("could not record the failure of %s (%s)", rel, reason)

    # ---------------------------------------------------------------- small helpers
    def _write_status(self, out: Path, state: str, /, **fields: Any) -> None:
        if self.layout.engine == UNITY:
            ensure_asset_meta(self.layout.root, status_path(out))
        write_status(out, state, **fields)

    def _count(self, kind: str) -> None:
        with self._cv:
            self.stats[kind] += 1

    def _hidden(self, path: Path) -> bool:
        """Inside a hidden folder of the drop tree (editor temp folders, .git, ...)."""
        try:
            parts = Path(path).resolve().relative_to(self.layout.drop).parts
        except ValueError:
            return True
        return any(p.startswith(".") for p in parts[:-1])

    def _ids(self, rel: str) -> dict[str, str]:
        return {"source": self.layout.project_rel(self.layout.source_path(rel)),
                "output": self.layout.project_rel(self.layout.output_path(rel))}

    def _out_rel(self, rel: str) -> str:
        return self.layout.output_path(rel).relative_to(self.layout.output).as_posix()

    def _show(self, path: Path) -> str:
        try:
            return self.layout.project_rel(path)
        except ValueError:
            return str(path)

    def rows(self) -> list[ImageRow]:
        """Current per-image records (for tests and `--once` summaries)."""
        return self.db.all() if self.db else []
