"""Job manager machinery: queue bound, cancellation at the next step, deadlines, cache, recovery.

The worker here is a small real ``Worker`` whose steps wait on a gate, so each test controls exactly
when a job advances (the relief backend runs end to end in test_server_e2e.py).
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from propforge.api import GlbResult
from propforge.errors import InputError
from propforge.options import GenerateOptions
from propforge.progress import ProgressEvent
from propforge_server.jobs import JobManager, JobNotFound, ManagerConfig, QueueFull, ResultNotReady
from propforge_server.store import JobRecord, SQLiteJobStore


def png(seed: int = 0, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (size, size), (seed % 256, 80, 160, 255)).save(buf, "PNG")
    return buf.getvalue()


class GatedWorker:
    """Steps through 'shape' 1..n; each step waits until the test opens the gate (or it is already open)."""

    def __init__(self, steps: int = 4, open_gate: bool = False) -> None:
        self.steps = steps
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()
        self.step_reached = threading.Semaphore(0)
        self.runs = 0

    def run(self, image: bytes, options: GenerateOptions, progress) -> GlbResult:
        self.runs += 1
        progress(ProgressEvent("prepare", 0.0))
        for i in range(1, self.steps + 1):
            self.step_reached.release()
            assert self.gate.wait(20), "test never opened the gate"
            progress(ProgressEvent("shape", i / (self.steps + 1), i, self.steps))
        return GlbResult(glb=b"glTF" + hashlib.sha256(image + str(options.seed).encode()).digest(), backend="relief")

    def model_version(self, backend: str) -> str:
        return f"{backend}/gated"


def make_manager(tmp_path: Path, worker: GatedWorker, **cfg) -> JobManager:
    cfg.setdefault("backend", "relief")
    mgr = JobManager(SQLiteJobStore(tmp_path / "store"), lambda i: worker, ManagerConfig(**cfg))
    mgr.start()
    return mgr


def wait_state(mgr: JobManager, job_id: str, state: str, timeout: float = 20.0) -> JobRecord:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = mgr.get(job_id)
        if job.state == state:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} is {mgr.get(job_id).state}, expected {state}")


def kinds(mgr: JobManager, job_id: str) -> list[str]:
    return [e.kind for e in mgr.events_after(job_id)]


def test_job_runs_and_events_are_gapless(tmp_path: Path) -> None:
    mgr = make_manager(tmp_path, GatedWorker(open_gate=True))
    try:
        job = mgr.submit(png(), GenerateOptions())
        events = list(mgr.iter_events(job.id, timeout=20))
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert events[0].kind == "queued" and events[-1].kind == "finished"
        assert "stage_started" in kinds(mgr, job.id)
        done = mgr.get(job.id)
        path, size, sha = mgr.result(job.id)
        assert done.state == "succeeded" and hashlib.sha256(path.read_bytes()).hexdigest() == sha == done.result_sha256
        assert done.backend == "relief" and done.options["model"] == ""
    finally:
        mgr.stop()


def test_queue_bound_refuses_with_queue_full(tmp_path: Path) -> None:
    worker = GatedWorker()
    mgr = make_manager(tmp_path, worker, max_queue=2)
    try:
        running = mgr.submit(png(1), GenerateOptions())
        assert worker.step_reached.acquire(timeout=10)           # job 1 holds the only worker
        q1, q2 = mgr.submit(png(2), GenerateOptions()), mgr.submit(png(3), GenerateOptions())
        assert (mgr.get(q1.id).queue_position, mgr.get(q2.id).queue_position) == (1, 2)
        with pytest.raises(QueueFull, match="queue is full"):
            mgr.submit(png(4), GenerateOptions())
        worker.gate.set()
        for j in (running, q1, q2):
            wait_state(mgr, j.id, "succeeded")
        # q2 was told when it moved up
        positions = [e.data["position"] for e in mgr.events_after(q2.id) if e.kind == "queued"]
        assert positions[:2] == [2, 1]
    finally:
        worker.gate.set()
        mgr.stop()


def test_cancel_running_job_frees_worker_at_next_step(tmp_path: Path) -> None:
    worker = GatedWorker(steps=50)
    mgr = make_manager(tmp_path, worker)
    try:
        first = mgr.submit(png(1), GenerateOptions())
        second = mgr.submit(png(2), GenerateOptions(seed=2))
        assert worker.step_reached.acquire(timeout=10)
        cancelled = mgr.cancel(first.id)
        assert cancelled.state == "cancelled"                    # at once, not after the stage
        assert mgr.get(second.id).state == "queued"
        worker.gate.set()                                        # next step: the callback raises Cancelled
        wait_state(mgr, second.id, "succeeded")
        assert worker.runs == 2
        assert kinds(mgr, first.id)[-1] == "cancelled"
        with pytest.raises(ResultNotReady, match="cancelled"):
            mgr.result(first.id)
        assert mgr.cancel(first.id).state == "cancelled"         # terminal: unchanged
    finally:
        worker.gate.set()
        mgr.stop()


def test_cancel_queued_job_updates_positions(tmp_path: Path) -> None:
    worker = GatedWorker()
    mgr = make_manager(tmp_path, worker)
    try:
        mgr.submit(png(1), GenerateOptions())
        assert worker.step_reached.acquire(timeout=10)
        a, b = mgr.submit(png(2), GenerateOptions()), mgr.submit(png(3), GenerateOptions())
        mgr.cancel(a.id)
        assert mgr.get(b.id).queue_position == 1
        assert worker.runs == 1
    finally:
        worker.gate.set()
        mgr.stop()


def test_deadline_fails_running_job_with_reason(tmp_path: Path) -> None:
    worker = GatedWorker()
    mgr = make_manager(tmp_path, worker)
    try:
        job = mgr.submit(png(), GenerateOptions(), deadline_seconds=0.3)
        queued = mgr.submit(png(5), GenerateOptions(), deadline_seconds=0.3)
        assert worker.step_reached.acquire(timeout=10)
        failed = wait_state(mgr, job.id, "failed", timeout=10)
        assert failed.error_code == "DEADLINE_EXCEEDED" and "deadline" in failed.error
        assert wait_state(mgr, queued.id, "failed").error_code == "DEADLINE_EXCEEDED"
        worker.gate.set()
    finally:
        worker.gate.set()
        mgr.stop()


def test_repeated_request_is_answered_from_cache(tmp_path: Path) -> None:
    worker = GatedWorker(open_gate=True)
    mgr = make_manager(tmp_path, worker)
    try:
        first = mgr.submit(png(), GenerateOptions(seed=1))
        wait_state(mgr, first.id, "succeeded")
        again = mgr.submit(png(), GenerateOptions(seed=1))
        assert again.state == "succeeded" and again.cached and again.result_sha256 == mgr.get(first.id).result_sha256
        assert kinds(mgr, again.id) == ["finished"]
        other = mgr.submit(png(), GenerateOptions(seed=2))      # options are part of the key
        assert not other.cached
        wait_state(mgr, other.id, "succeeded")
        assert worker.runs == 2
    finally:
        mgr.stop()


def submit_twins(mgr: JobManager, worker: GatedWorker, seed: int) -> tuple[JobRecord, JobRecord]:
    """The same request twice: the second arrives while the first is running."""
    first = mgr.submit(png(), GenerateOptions(seed=seed))
    assert worker.step_reached.acquire(timeout=20)
    return first, mgr.submit(png(), GenerateOptions(seed=seed))


def test_simultaneous_repeats_run_once_with_two_workers(tmp_path: Path) -> None:
    """The same request twice at once (double-click): one generator run, the repeat answered from it."""
    worker = GatedWorker()
    mgr = make_manager(tmp_path, worker, workers=2)
    try:
        first, again = submit_twins(mgr, worker, seed=3)
        other = mgr.submit(png(7), GenerateOptions(seed=3))           # a different image runs beside it
        wait_state(mgr, other.id, "running")
        assert mgr.get(again.id).state == "queued"                    # the repeat waits for its twin
        worker.gate.set()
        done = wait_state(mgr, again.id, "succeeded")
        assert done.cached and done.result_sha256 == wait_state(mgr, first.id, "succeeded").result_sha256
        assert kinds(mgr, again.id)[-1] == "finished"
        wait_state(mgr, other.id, "succeeded")
        assert worker.runs == 2
    finally:
        mgr.stop()


def test_repeat_of_a_cancelled_job_runs_itself(tmp_path: Path) -> None:
    worker = GatedWorker()
    mgr = make_manager(tmp_path, worker, workers=2)
    try:
        first, again = submit_twins(mgr, worker, seed=4)
        time.sleep(0.3)
        assert mgr.get(again.id).state == "queued"
        mgr.cancel(first.id)
        worker.gate.set()
        done = wait_state(mgr, again.id, "succeeded")
        assert not done.cached and worker.runs == 2
    finally:
        mgr.stop()


def test_bad_input_is_refused_before_queueing(tmp_path: Path) -> None:
    mgr = make_manager(tmp_path, GatedWorker(open_gate=True))
    try:
        with pytest.raises(InputError, match="image"):
            mgr.submit(b"\x89PNG\r\n\x1a\n broken", GenerateOptions())
        for bad in (-1, float("nan"), float("inf")):
            with pytest.raises(InputError, match="deadline"):
                mgr.submit(png(), GenerateOptions(), deadline_seconds=bad)
        with pytest.raises(JobNotFound):
            mgr.get("0123abcd")
        with pytest.raises(JobNotFound):
            mgr.get("../../etc/passwd")
        assert mgr.store.count_by_state() == {}
    finally:
        mgr.stop()


def test_recovery_reruns_interrupted_jobs_then_gives_up(tmp_path: Path) -> None:
    """A store left by a crashed server: one job RUNNING on its 1st attempt, one on its last, one queued."""
    store = SQLiteJobStore(tmp_path / "store")
    data = png(9)
    sha = hashlib.sha256(data).hexdigest()
    store.put_image(sha, data)
    opts = GenerateOptions(backend="relief").to_dict()
    now = time.time()
    for jid, state, attempts in (("a1", "running", 1), ("b2", "running", 2), ("c3", "queued", 0)):
        store.insert_job(JobRecord(id=jid, state=state, options=opts, backend="relief", image_sha256=sha,
                                   created_at=now, attempts=attempts))
    store.close()
    mgr = make_manager(tmp_path, GatedWorker(open_gate=True), max_attempts=2)
    try:
        assert wait_state(mgr, "a1", "succeeded").attempts == 2
        assert wait_state(mgr, "c3", "succeeded").attempts == 1
        gave_up = mgr.get("b2")
        assert gave_up.state == "failed" and gave_up.error_code == "ABORTED" and "server stopped" in gave_up.error
        assert any("re-queued" in e.data.get("message", "") for e in mgr.events_after("a1"))
    finally:
        mgr.stop()


def test_clean_stop_returns_running_job_to_queue(tmp_path: Path) -> None:
    worker = GatedWorker()
    mgr = make_manager(tmp_path, worker)
    job = mgr.submit(png(), GenerateOptions())
    assert worker.step_reached.acquire(timeout=10)
    threading.Timer(0.2, worker.gate.set).start()
    mgr.stop()
    mgr.store.close()
    again = make_manager(tmp_path, GatedWorker(open_gate=True))
    try:
        done = wait_state(again, job.id, "succeeded")
        assert done.attempts == 1                                 # a clean stop is not a crash
    finally:
        again.stop()


def test_retention_forgets_old_jobs_and_unreferenced_files(tmp_path: Path) -> None:
    import os

    worker = GatedWorker(open_gate=True)
    mgr = make_manager(tmp_path, worker, keep_days=1)
    try:
        old, new = mgr.submit(png(1), GenerateOptions()), mgr.submit(png(2), GenerateOptions())
        for j in (old, new):
            wait_state(mgr, j.id, "succeeded")
        store = mgr.store
        old_job = mgr.get(old.id)
        week_ago = time.time() - 7 * 86400
        store.update_job(old.id, finished_at=week_ago)
        with store._lock:
            store._db.execute("UPDATE cache SET used_at=? WHERE sha256=?", (week_ago, old_job.result_sha256))
        img = store.root / "images" / old_job.image_sha256
        res = store.result_path(old_job.result_sha256)
        for p in (img, res):
            os.utime(p, (week_ago, week_ago))
        counts = mgr.purge_old()
        assert counts == {"jobs": 1, "cache_entries": 1, "files": 2}
        assert not img.exists() and not res.exists()
        with pytest.raises(JobNotFound):
            mgr.get(old.id)
        assert mgr.events_after(new.id) and mgr.result(new.id)[0].exists()   # the recent job is untouched
        again = mgr.submit(png(1), GenerateOptions())                          # no stale cache hit
        assert not again.cached
        wait_state(mgr, again.id, "succeeded")
    finally:
        mgr.stop()


def test_ready_only_after_every_worker_loaded_its_model(tmp_path: Path) -> None:
    class SlowLoading(GatedWorker):
        def __init__(self) -> None:
            super().__init__(open_gate=True)
            self.loaded = threading.Event()
            self.backends: list[str] = []

        def preload(self, backend: str) -> None:
            self.backends.append(backend)
            assert self.loaded.wait(20)

    worker = SlowLoading()
    mgr = make_manager(tmp_path, worker)
    try:
        job = mgr.submit(png(), GenerateOptions())          # accepted and queued while loading
        time.sleep(0.1)
        assert not mgr.ready and mgr.get(job.id).state == "queued"
        worker.loaded.set()
        wait_state(mgr, job.id, "succeeded")
        assert mgr.ready and worker.backends == ["relief"]
    finally:
        worker.loaded.set()
        mgr.stop()


def wait_ready(mgr: JobManager, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not mgr.ready:
        assert time.monotonic() < end, "manager never became ready"
        time.sleep(0.01)


def test_warmup_runs_once_per_worker_before_ready_and_leaves_no_job(tmp_path: Path) -> None:
    worker = GatedWorker()
    mgr = make_manager(tmp_path, worker, warmup="on")
    try:
        assert worker.step_reached.acquire(timeout=20)            # the warm-up generation is running
        time.sleep(0.1)
        assert not mgr.ready
        worker.gate.set()
        wait_ready(mgr)
        assert worker.runs == 1 and sum(mgr.store.count_by_state().values()) == 0
        job = mgr.submit(png(), GenerateOptions())               # real jobs run normally afterwards
        wait_state(mgr, job.id, "succeeded")
        assert worker.runs == 2
    finally:
        worker.gate.set()
        mgr.stop()


def test_failed_warmup_is_not_fatal_and_auto_skips_relief(tmp_path: Path) -> None:
    class Broken(GatedWorker):
        def run(self, image, options, progress):
            self.runs += 1
            raise RuntimeError("no GPU today")

    worker = Broken()
    mgr = make_manager(tmp_path / "on", worker, warmup="on")
    try:
        wait_ready(mgr)
        assert worker.runs == 1
    finally:
        mgr.stop()
    auto = GatedWorker(open_gate=True)
    mgr = make_manager(tmp_path / "auto", auto)                  # default "auto": relief needs no warm-up
    try:
        wait_ready(mgr)
        assert auto.runs == 0
    finally:
        mgr.stop()


def test_store_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    """A state change and its event commit together: never a SUCCEEDED row without its 'finished' event."""
    from propforge_server.store import Event

    store = SQLiteJobStore(tmp_path)
    store.insert_job(JobRecord(id="ab12", state="running", options={}, backend="relief", image_sha256="0"))
    with pytest.raises(OSError, match="disk full"):
        with store.transaction():
            store.update_job("ab12", state="succeeded")
            store.append_events([Event(1, "ab12", time.time(), "finished", {})])   # nested: joins the outer
            raise OSError("disk full")
    assert store.get_job("ab12").state == "running" and store.events_after("ab12", 0) == []
    with store.transaction():
        store.update_job("ab12", state="succeeded")
        store.append_events([Event(1, "ab12", time.time(), "finished", {})])
    assert store.get_job("ab12").state == "succeeded" and store.last_sequence("ab12") == 1


def test_watching_a_finished_job_replays_and_stops(tmp_path: Path) -> None:
    mgr = make_manager(tmp_path, GatedWorker(open_gate=True))
    try:
        job = mgr.submit(png(), GenerateOptions())
        wait_state(mgr, job.id, "succeeded")
        assert [e.kind for e in mgr.iter_events(job.id, after=1, timeout=0.5)][-1] == "finished"
        assert list(mgr.iter_events(job.id, after=10_000, timeout=0.5)) == []   # no wait, no TimeoutError
    finally:
        mgr.stop()
