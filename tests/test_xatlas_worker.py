"""xatlas in pooled child processes: same answer as in-process, and a stuck, killed or failing
child costs one replacement, never the caller's process."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import pytest

from propforge.mesh import xatlas_worker as xw


def sphere(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A UV-sphere-like closed-ish grid mesh, (vertices, faces)."""
    th, ph = np.meshgrid(np.linspace(0.05, np.pi - 0.05, n), np.linspace(0, 2 * np.pi, 2 * n, endpoint=False),
                         indexing="ij")
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    idx = np.arange(n * 2 * n).reshape(n, 2 * n)
    a, b = idx[:-1], np.roll(idx, -1, 1)[:-1]
    c, d = idx[1:], np.roll(idx, -1, 1)[1:]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    return v.astype(np.float32), f.astype(np.int64)


def check_atlas(v, f, result) -> None:
    vmap, nf, uv = result
    assert nf.shape == f.shape and (vmap >= 0).all() and (vmap < len(v)).all()
    np.testing.assert_array_equal(vmap[nf], f)                # every face keeps its corners
    assert uv.shape == (len(vmap), 2) and uv.min() >= 0 and uv.max() <= 1


def pooled_pids() -> set[int]:
    with xw._lock:
        return {c.proc.pid for c in xw._idle}


def test_child_gives_the_in_process_answer():
    v, f = sphere()
    got = xw.pack(v, f, None, 512, 2)
    check_atlas(v, f, got)
    arrays, atlas = xw.run_atlas(v, f, None, 512, 2)        # the same call without a child
    del atlas
    for a, b in zip(got, arrays):
        np.testing.assert_array_equal(a, b)


def test_child_stuck_after_answering_is_replaced_and_its_answer_kept(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=xw.__name__)
    monkeypatch.setattr(xw, "READY_TIMEOUT_S", 0.5)
    xw.shutdown()
    v, f = sphere(16)
    check_atlas(v, f, xw.pack(v, f, None, 256, 2, stall_after_s=60))   # answers, then hangs
    (stuck,) = pooled_pids()
    check_atlas(v, f, xw.pack(v, f, None, 256, 2))
    assert stuck not in pooled_pids() and len(pooled_pids()) == 1
    assert any("did not get ready" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_killed_children_are_replaced(caplog):
    caplog.set_level(logging.WARNING, logger=xw.__name__)
    v, f = sphere(16)
    xw.shutdown()
    xw.pack(v, f, None, 256, 2)
    (idle,) = pooled_pids()
    os.kill(idle, signal.SIGKILL)                               # killed while idle: a new one
    check_atlas(v, f, xw.pack(v, f, None, 256, 2))
    (busy,) = pooled_pids()
    assert busy != idle

    big_v, big_f = sphere(140)                                  # killed mid-job (charting ~80 k
    result: list = []                                           # faces takes seconds): tried again
    t = threading.Thread(target=lambda: result.append(xw.pack(big_v, big_f, None, 1024, 2)))
    t.start()
    time.sleep(0.4)
    os.kill(busy, signal.SIGKILL)
    t.join(300)
    assert result, "the job was lost with its child"
    check_atlas(big_v, big_f, result[0])
    assert any("died during a job" in r.getMessage() for r in caplog.records)
    assert busy not in pooled_pids()


def test_xatlas_errors_are_raised_and_the_child_kept():
    v, f = sphere(8)
    xw.pack(v, f, None, 256, 2)
    before = pooled_pids()
    with pytest.raises(RuntimeError, match="xatlas failed: .*[Ii]ndex"):
        xw.pack(v, f + len(v), None, 256, 2)                    # every index out of range
    assert pooled_pids() == before


@pytest.mark.parametrize("why", ["no interpreter", "frozen app"])
def test_without_a_worker_process_xatlas_runs_in_process(monkeypatch, caplog, why):
    caplog.set_level(logging.WARNING, logger=xw.__name__)
    xw.shutdown()
    monkeypatch.setattr(xw, "_in_process", False)
    if why == "frozen app":
        monkeypatch.setattr(xw.sys, "frozen", True, raising=False)
    else:
        monkeypatch.setattr(xw.sys, "executable", "/nonexistent/python")
    v, f = sphere(8)
    check_atlas(v, f, xw.pack(v, f, None, 256, 2))
    assert xw._in_process and not pooled_pids()
    assert any("runs in this process" in r.getMessage() for r in caplog.records)
