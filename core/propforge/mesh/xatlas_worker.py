"""xatlas in a child process: ``pack(...)`` here, ``python -m propforge.mesh.xatlas_worker`` there.

Why not in-process: the xatlas binding holds the GIL for the whole charting/packing (a second thread
stalled 0.65 s at 261 k faces, 4.9 s at 1 M: benchmarks/uv_gil_bench.py), and xatlas's TaskScheduler
destructor can lose a worker's wake-up and join it forever (seen once in CI, gdb: Destroy ->
~TaskScheduler -> thread::join), which in-process hangs everything. Here the parent waits on a pipe
(GIL released), the child answers *before* it destroys its Atlas and then says "ready"; a child that
does not get ready in ``READY_TIMEOUT_S`` is killed and replaced, and the answer it gave is kept. A
job whose child dies is tried once more in a new one (``ChildDied`` if that dies too). Idle children
are reused (start-up ~0.3 s); where none can start, xatlas runs in-process.
"""
from __future__ import annotations

import atexit
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 10.0     # an Atlas is destroyed in milliseconds; longer means a stuck xatlas
START_TIMEOUT_S = 120.0    # interpreter + numpy + xatlas import, on a loaded machine
_HEADER = struct.Struct("<Q")


# ------------------------------------------------------------------ both sides: framed pickles
def _send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv(stream: BinaryIO) -> Any:
    """The next message, or None at end of stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    size = _HEADER.unpack(head)[0]
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


# ------------------------------------------------------------------ child side: the xatlas call
def _options(texture_size: int, padding: int, use_input_uvs: bool):
    import xatlas

    # Charting tuned for speed: no chart-optimisation passes, a tighter merge cost. Measured on a
    # 20k-face decimated 512³ asset: ~2.6x less CPU than the defaults, ~4x more (smaller) charts,
    # equal or better atlas utilisation. With ``use_input_uvs`` xatlas only packs the given charts.
    co = xatlas.ChartOptions()
    co.max_iterations = 0
    co.max_cost = 0.5
    co.use_input_mesh_uvs = use_input_uvs
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    pack.rotate_charts = True
    return co, pack


def run_atlas(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None, texture_size: int,
              padding: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], Any]:
    """Chart (or, given ``uvs``, only pack) one mesh; returns the arrays and the live Atlas, which the
    caller drops only after the arrays are safe (its destructor is the part that can hang)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32),
                   None, None if uvs is None else np.ascontiguousarray(uvs, np.float32))
    atlas.generate(*_options(texture_size, padding, uvs is not None))
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas produced {atlas.atlas_count} atlases; expected one")
    vmap, new_faces, out_uvs = atlas[0]
    return (np.asarray(vmap, np.int64), np.asarray(new_faces, np.int32),
            np.clip(np.asarray(out_uvs, np.float32), 0.0, 1.0)), atlas


def main() -> None:
    """Serve requests from stdin until it closes. fd 1 is pointed at stderr so that nothing but
    answers reaches the parent (a stray print or C-level write would corrupt the stream)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl+C is the parent's; we end with its pipe
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    import xatlas  # noqa: F401  (import errors surface before "ready")
    _send(out, ("ready", None))
    while True:
        req = _recv(inp)
        if req is None:
            return
        atlas = None
        try:
            arrays, atlas = run_atlas(**req["args"])
            _send(out, ("ok", arrays))
        except Exception as e:  # noqa: BLE001  (reported to the parent, which raises)
            _send(out, ("error", f"{type(e).__name__}: {e}"))
        if req.get("stall_after_s"):            # tests: a child that never gets ready again
            threading.Event().wait(req["stall_after_s"])
        del atlas                               # may hang in xatlas; the parent then replaces us
        _send(out, ("ready", None))


# ------------------------------------------------------------------ parent side: one child
class ChildDied(RuntimeError):
    """The worker process ended during a job (a crash in xatlas, or killed)."""


class ChildUnavailable(RuntimeError):
    """No worker process could be started (no usable interpreter at ``sys.executable``, say)."""


class _Child:
    def __init__(self) -> None:
        import propforge
        root = str(Path(propforge.__file__).resolve().parents[1])   # importable however we were
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen([sys.executable, "-m", "propforge.mesh.xatlas_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._inbox: queue.Queue = queue.Queue()
        self._ready = False
        self._reader = threading.Thread(target=self._read, name=f"xatlas-child-{self.proc.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            msg = _recv(self.proc.stdout)
            self._inbox.put(msg)
            if msg is None:
                return

    def _next(self, timeout: float | None) -> Any:
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return "timeout"

    def wait_ready(self, timeout: float) -> bool:
        if not self._ready:
            msg = self._next(timeout)
            self._ready = msg == ("ready", None)
        return self._ready

    def call(self, request: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._ready = False
        try:
            _send(self.proc.stdin, request)
        except OSError:                         # gone between the check and the request
            pass
        msg = self._next(None)
        if msg is None:
            code = self.proc.wait()
            raise ChildDied(f"the xatlas worker process died while unwrapping (exit code {code})")
        kind, value = msg
        if kind == "error":
            raise RuntimeError(f"xatlas failed: {value}")
        return value

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.close()     # the child's loop ends at end of input
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------ parent side: the pool
_idle: list[_Child] = []
_lock = threading.Lock()
_in_process = False     # set when no worker process can be started here


def _acquire() -> _Child:
    with _lock:
        child = _idle.pop() if _idle else None
    if child is not None:
        if child.proc.poll() is None and child.wait_ready(READY_TIMEOUT_S):
            return child
        log.warning("xatlas worker %d did not get ready in %.0f s (stuck in xatlas, or gone); replacing it",
                    child.proc.pid, READY_TIMEOUT_S)
        child.close(kill=True)
    if getattr(sys, "frozen", False):   # a frozen app's executable is the app, not a Python
        raise ChildUnavailable(f"{sys.executable} is a frozen application")
    try:
        child = _Child()
    except OSError as e:
        raise ChildUnavailable(f"cannot start {sys.executable}: {e}") from e
    if not child.wait_ready(START_TIMEOUT_S):
        child.close(kill=True)
        raise ChildUnavailable(f"{sys.executable} -m {__name__} did not get ready")
    return child


def _release(child: _Child) -> None:
    with _lock:
        keep = child.proc.poll() is None and len(_idle) < (os.cpu_count() or 2)
        if keep:
            _idle.append(child)
    if not keep:
        child.close()


def shutdown() -> None:
    """Close the idle children (they also exit on their own when this process ends)."""
    with _lock:
        children, _idle[:] = list(_idle), []
    for child in children:
        child.close()


def pack(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None, texture_size: int,
         padding: int, *, stall_after_s: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``run_atlas`` in a pooled child process: (vertex map, faces, uvs in [0, 1]).

    A child that dies during the job is replaced and the job tried once more (a pooled child may
    have been killed while idle); a second death is reported as ``ChildDied``."""
    global _in_process
    args = {"vertices": np.ascontiguousarray(vertices, np.float32), "faces": np.ascontiguousarray(faces, np.uint32),
            "uvs": None if uvs is None else np.ascontiguousarray(uvs, np.float32),
            "texture_size": int(texture_size), "padding": int(padding)}
    for attempt in (1, 2):
        try:
            child = _acquire() if not _in_process else None
        except ChildUnavailable as e:
            log.warning("xatlas runs in this process from now on (no worker process: %s)", e)
            _in_process = True
            child = None
        if child is None:   # the GIL is held throughout and the rare destructor hang is not contained
            arrays, atlas = run_atlas(**args)
            del atlas
            return arrays
        try:
            return child.call({"args": args, "stall_after_s": stall_after_s})
        except ChildDied:
            child.close()
            if attempt == 2:
                raise
            log.warning("xatlas worker %d died during a job; trying once more in a new one", child.proc.pid)
        finally:
            if child.proc.poll() is None:
                _release(child)
    raise AssertionError("unreachable")


atexit.register(shutdown)


if __name__ == "__main__":
    main()
