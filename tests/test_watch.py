"""Watch mode end to end: real watchdog observers on temp Unity and Godot project trees, the real
relief generator (tiny images, small budgets so CI stays fast), the Khronos validator on the GLBs.

Every test also checks that the watcher never touched a source image (bytes and mtime).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path

import pytest

from conftest import make_cutout
from propforge_server.watch import WatchConfig, Watcher, project_layout, read_status, stable_guid

FAST = {"backend": "relief", "export": {"faces": 300, "texture_size": 128}}


def png(seed: int, size: int = 48, shape: str = "disc") -> bytes:
    buf = io.BytesIO()
    make_cutout(size, shape=shape, seed=seed).save(buf, "PNG")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(pred, timeout: float = 60.0, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Project:
    """A temp game project plus the watchers started on it, and a record of every dropped source."""

    def __init__(self, root: Path, engine: str) -> None:
        if engine == "unity":
            (root / "Assets").mkdir(parents=True)
            (root / "ProjectSettings").mkdir()
        else:
            root.mkdir(parents=True)
            (root / "project.godot").write_text("config_version=5\n")
        self.layout = project_layout(root)
        self.watchers: list[Watcher] = []
        self.sources: dict[Path, tuple[str, int]] = {}

    def start(self, observe: bool = True, **config) -> Watcher:
        cfg = dict(options=FAST, settle_s=0.2, incomplete_timeout_s=2.0, retry_base_s=0.2)
        cfg.update(config)
        w = Watcher(self.layout, WatchConfig(**cfg)).start(observe=observe)
        self.watchers.append(w)
        return w

    def drop(self, rel: str, data: bytes) -> Path:
        """Write a file into the drop folder the way a file manager copy does (open, write, close)."""
        path = self.layout.drop / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.record(path)
        return path

    def record(self, path: Path) -> None:
        self.sources[path] = (sha(path.read_bytes()), path.stat().st_mtime_ns)

    def out(self, rel: str) -> Path:
        return self.layout.output_path(rel)

    def status(self, rel: str) -> dict:
        return read_status(self.out(rel)) or {}

    def wait_state(self, rel: str, states=("done", "failed"), timeout: float = 90.0) -> dict:
        return wait_for(lambda: self.status(rel) if self.status(rel).get("state") in states else None,
                        timeout, f"{rel} to reach {states}")

    def runs(self, w: Watcher, rel: str | None = None, kind: str | None = None) -> list[dict]:
        return [r for r in w.db.runs(rel) if kind is None or r["kind"] == kind]

    def check_sources_untouched(self) -> None:
        for path, (digest, mtime) in self.sources.items():
            if path.exists():
                assert sha(path.read_bytes()) == digest, f"{path} was modified"
                assert path.stat().st_mtime_ns == mtime, f"{path} mtime changed"

    def close(self) -> None:
        for w in self.watchers:
            w.stop()


@pytest.fixture
def project(tmp_path):
    made: list[Project] = []

    def make(engine: str = "unity", name: str = "game") -> Project:
        p = Project(tmp_path / name, engine)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
    for p in made:
        p.check_sources_untouched()


def validate_all(paths: list[Path], assert_valid_glb) -> None:
    """One validator run for many files (node start-up is the slow part)."""
    from propforge.validate import validate_files

    assert_valid_glb(paths[0])
    for path, rep in zip(paths, validate_files(paths)):
        assert rep.num_errors == 0, f"{path}: {rep.errors}"


# ---------------------------------------------------------------------------------------------
def test_unity_drop_makes_valid_glb_meta_first_and_status_done(project, assert_valid_glb):
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    p = project("unity")
    w = p.start(progress_interval_s=0.0)
    seen: list[str] = []            # order of appearance in the output folder
    states: list[str] = []          # status states read back as the file was replaced
    fractions: list[float] = []     # progress of the "running" ones
    problems: list[str] = []

    class Spy(FileSystemEventHandler):
        def on_any_event(self, ev):
            path = Path(os.fsdecode(getattr(ev, "dest_path", "") or ev.src_path))
            if ev.event_type not in ("created", "moved") or path.name.startswith("."):
                return
            seen.append(path.name)
            if path.name == "barrel.glb" and not path.with_name("barrel.glb.meta").exists():
                problems.append("GLB appeared before its .meta")
            if path.name.endswith(".status.json"):
                try:
                    doc = json.loads(path.read_text())
                    states.append(doc["state"])
                    if doc["state"] == "running":
                        fractions.append(doc["progress"]["fraction"])
                except FileNotFoundError:
                    pass
                except ValueError:
                    problems.append("half-written status file")

    spy = Observer()
    spy.schedule(Spy(), str(p.layout.output), recursive=True)
    spy.start()
    try:
        data = png(1)
        p.drop("barrel.png", data)
        st = p.wait_state("barrel.png")
        # watchdog holds a rename back up to 0.5 s to pair its two inotify halves (longer under load):
        # wait for the GLB's and the final status's events instead of a fixed sleep
        deadline = time.monotonic() + 15
        while not ("barrel.glb" in seen and "done" in states) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        spy.stop()
        spy.join()
    assert st["state"] == "done", st
    out = p.out("barrel.png")
    assert_valid_glb(out)
    assert st["source"] == "Assets/PropForge/Drop/barrel.png"
    assert st["output"] == "Assets/PropForge/Generated/barrel.glb"
    assert st["source_sha256"] == sha(data) and st["output_sha256"] == sha(out.read_bytes())
    assert st["backend"] == "relief" and st["options"]["export"]["faces"] == 300
    meta = out.with_name("barrel.glb.meta").read_text()
    assert f"guid: {stable_guid('Assets/PropForge/Generated/barrel.glb')}" in meta
    assert not problems, problems
    # The ordering proof is the check made when the GLB's event arrives (problems above); the
    # .meta's own event can be coalesced by inotify under load, so it is only compared when seen.
    assert "barrel.glb" in seen, seen
    if "barrel.glb.meta" in seen:
        assert seen.index("barrel.glb.meta") < seen.index("barrel.glb"), seen
    order = {"queued": 0, "running": 1, "done": 2}
    assert states and states[-1] == "done" and "failed" not in states, states
    assert [order[s] for s in states] == sorted(order[s] for s in states), states
    assert fractions and fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0, fractions
    assert len(p.runs(w, "barrel.png", "generated")) == 1


def test_godot_nested_folders_are_mirrored_without_meta(project, assert_valid_glb):
    p = project("godot")
    w = p.start()
    p.drop("props/crates/crate.png", png(2, shape="L"))
    p.drop("notes.txt", b"not an image")
    st = p.wait_state("props/crates/crate.png")
    assert st["state"] == "done" and st["output"] == "propforge/generated/props/crates/crate.glb"
    assert_valid_glb(p.out("props/crates/crate.glb"))
    assert not list(p.layout.output.rglob("*.meta"))
    assert (p.layout.root / ".godot" / "propforge" / "watch.db").is_file()
    assert not (p.layout.output / "notes.glb").exists()
    assert w.stats["generated"] == 1
    # a folder of images moved in from elsewhere (one rename event for the folder)
    outside = p.layout.root.parent / "incoming"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "m.png").write_bytes(png(24))
    (outside / "deep" / "crate.png").write_bytes(png(2, shape="L"))     # same bytes as crate.png
    outside.rename(p.layout.drop / "incoming")
    for rel in ("incoming/deep/m.png", "incoming/deep/crate.png"):
        p.record(p.layout.drop / rel)
    assert p.wait_state("incoming/deep/m.png")["state"] == "done"
    assert p.wait_state("incoming/deep/crate.png")["deduplicated_from"] == "props/crates/crate.png"
    # m.jpg would also become m.glb: refused, and m.png's status is left alone
    buf = io.BytesIO()
    make_cutout(48, seed=25).convert("RGB").save(buf, "JPEG")
    p.drop("incoming/deep/m.jpg", buf.getvalue())
    wait_for(lambda: w.db.runs("incoming/deep/m.jpg"), 30, "m.jpg to be refused")
    assert w.wait_idle(30)
    clash = [r for r in w.db.runs("incoming/deep/m.jpg")]
    assert [r["kind"] for r in clash] == ["failed"] and "rename one of the two" in clash[0]["error"]
    st = p.status("incoming/deep/m.png")
    assert st["source"] == "propforge/drop/incoming/deep/m.png" and st["state"] == "done"


def test_burst_of_30(project, assert_valid_glb, caplog):
    caplog.set_level(logging.INFO, logger="propforge.watch")
    p = project("unity")
    w = p.start(workers=2)
    names = [f"burst/img_{i:02d}.png" for i in range(30)]
    for i, name in enumerate(names):
        p.drop(name, png(100 + i, size=40))
    p.drop("burst/readme.txt", b"hello")
    (p.layout.drop / "burst/readme.txt").write_bytes(b"hello again")   # still one log line
    p.record(p.layout.drop / "burst/readme.txt")
    for name in names:
        assert p.wait_state(name, timeout=180)["state"] == "done", name
    assert w.wait_idle(30)
    validate_all([p.out(n) for n in names], assert_valid_glb)
    runs = p.runs(w, kind="generated")
    assert sorted(r["source"] for r in runs) == names          # each exactly once
    ignored = [r for r in caplog.records if "ignoring" in r.getMessage() and "readme.txt" in r.getMessage()]
    assert len(ignored) == 1


def test_partial_writes_wait_for_the_whole_file(project):
    p = project("godot")
    w = p.start(settle_s=0.15, incomplete_timeout_s=5.0)
    one, two = png(7, size=64), png(8, size=64)
    a, b = p.layout.drop / "slow_one_handle.png", p.layout.drop / "slow_reopened.png"
    chunks = 4
    with open(a, "wb") as fa:
        for k in range(chunks):
            lo, hi = len(one) * k // chunks, len(one) * (k + 1) // chunks
            fa.write(one[lo:hi])
            fa.flush()
            os.fsync(fa.fileno())
            lo, hi = len(two) * k // chunks, len(two) * (k + 1) // chunks
            with open(b, "ab") as fb:      # a writer that reopens for every chunk
                fb.write(two[lo:hi])
            time.sleep(0.5)                # longer than settle_s: size is "stable" between chunks
    p.record(a)
    p.record(b)
    for rel, data in (("slow_one_handle.png", one), ("slow_reopened.png", two)):
        st = p.wait_state(rel)
        assert st["state"] == "done" and st["source_sha256"] == sha(data), st
        assert [r["kind"] for r in p.runs(w, rel)] == ["generated"]


def test_duplicate_images_make_one_job(project):
    p = project("unity")
    w = p.start()
    data = png(3)
    p.drop("a.png", data)
    assert p.wait_state("a.png")["state"] == "done"
    p.drop("copy_of_a.png", data)
    p.drop("sub/a.png", data)
    assert p.wait_state("copy_of_a.png")["deduplicated_from"] == "a.png"
    assert p.wait_state("sub/a.png")["state"] == "done"
    glb = p.out("a.png").read_bytes()
    assert p.out("copy_of_a.png").read_bytes() == glb == p.out("sub/a.png").read_bytes()
    # dropping the same bytes again (overwrite) is not a new job either
    mtime = p.out("a.png").stat().st_mtime_ns
    p.drop("a.png", data)
    wait_for(lambda: w.stats["skipped"] >= 1, 20, "the re-dropped image to be skipped")
    assert w.wait_idle(20)
    assert len(p.runs(w, kind="generated")) == 1 and len(p.runs(w, kind="copied")) == 2
    assert p.out("a.png").stat().st_mtime_ns == mtime


def test_sidecar_edits_regenerate(project):
    p = project("godot")
    w = p.start()
    p.drop("props/a.png", png(4))
    p.drop("props/b.png", png(5))
    first = p.wait_state("props/a.png")
    p.wait_state("props/b.png")
    # per-image sidecar: only a.png reruns, with the new face budget
    (p.layout.drop / "props/a.png.propforge.json").write_text(json.dumps({"export": {"faces": 150}}))
    st = wait_for(lambda: p.status("props/a.png") if p.status("props/a.png").get("options_sha256") !=
                  first["options_sha256"] and p.status("props/a.png")["state"] == "done" else None,
                  60, "a.png to be regenerated")
    assert st["options"]["export"]["faces"] == 150 and st["output_sha256"] != first["output_sha256"]
    # folder sidecar: every image of the folder reruns
    (p.layout.drop / "props/propforge.json").write_text(json.dumps({"seed": 9}))
    wait_for(lambda: all(p.status(r).get("options", {}).get("seed") == 9 and p.status(r)["state"] == "done"
                         for r in ("props/a.png", "props/b.png")), 60, "the folder to be regenerated")
    assert [r["kind"] for r in p.runs(w, "props/a.png")] == ["generated"] * 3
    assert [r["kind"] for r in p.runs(w, "props/b.png")] == ["generated"] * 2
    # rewriting a sidecar with the same content changes nothing
    (p.layout.drop / "props/propforge.json").write_text(json.dumps({"seed": 9}))
    time.sleep(1.0)
    assert w.wait_idle(30)
    assert len(p.runs(w, kind="generated")) == 5


def test_stop_mid_burst_and_restart_does_each_image_once(project, assert_valid_glb):
    p = project("unity")
    w = p.start()
    names = [f"img_{i}.png" for i in range(10)]
    for i, name in enumerate(names):
        p.drop(name, png(200 + i, size=40))
    wait_for(lambda: len(p.runs(w, kind="generated")) >= 2, 120, "two images done")
    w.stop()
    done_first = {n for n in names if p.status(n).get("state") == "done"}
    assert 2 <= len(done_first) < len(names), "the burst should be cut in the middle"
    for n in names:      # nothing half-made: a GLB exists only for images whose status is done
        assert p.out(n).exists() == (n in done_first), n
        assert p.status(n).get("state") in ("done", "queued", None), p.status(n)   # None: not decided yet
    mtimes = {n: p.out(n).stat().st_mtime_ns for n in done_first}

    w2 = p.start()
    for n in names:
        assert p.wait_state(n, timeout=120)["state"] == "done"
    assert w2.wait_idle(30)
    runs = p.runs(w2, kind="generated")
    assert sorted(r["source"] for r in runs) == sorted(names), "every image generated exactly once"
    assert {n: p.out(n).stat().st_mtime_ns for n in done_first} == mtimes
    validate_all([p.out(n) for n in names], assert_valid_glb)


def test_bad_inputs_fail_with_reason_and_the_watcher_keeps_going(project):
    p = project("godot")
    w = p.start(incomplete_timeout_s=1.5)
    p.drop("garbage.png", os.urandom(3000))
    p.drop("cut_off.png", png(6, size=64)[:700])
    p.drop("bad_options.png", png(11))
    (p.layout.drop / "bad_options.png.propforge.json").write_text('{"export": {"faces": 3}}')
    p.drop("fine.png", png(12))
    assert p.wait_state("fine.png")["state"] == "done"
    g = p.wait_state("garbage.png")
    assert g["state"] == "failed" and "not an image" in g["error"] and g["attempt"] == 1
    c = p.wait_state("cut_off.png", timeout=30)
    assert c["state"] == "failed" and "truncated" in c["error"]
    b = p.wait_state("bad_options.png")
    assert b["state"] == "failed" and "faces" in b["error"] and "bad_options.png.propforge.json" in b["error"]
    assert not p.out("garbage.png").exists() and not p.out("cut_off.png").exists()
    # fixing the sidecar fixes the image
    (p.layout.drop / "bad_options.png.propforge.json").write_text('{"export": {"faces": 200}}')
    assert p.wait_state("bad_options.png", ("done",))["options"]["export"]["faces"] == 200
    # break it again, then go back to the last good options: made again (the failure is not "done")
    (p.layout.drop / "bad_options.png.propforge.json").write_text('{"export": {"faces": 1}}')
    assert p.wait_state("bad_options.png", ("failed",))["error"]
    (p.layout.drop / "bad_options.png.propforge.json").write_text('{"export": {"faces": 200}}')
    assert p.wait_state("bad_options.png", ("done",))["options"]["export"]["faces"] == 200
    assert w.stats["failed"] >= 3


def test_server_down_is_retried_with_backoff_then_failed(project):
    import socket

    from propforge_server.watch import RemoteRunner

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                     # nothing listens there
    p = project("godot")
    w = Watcher(p.layout, WatchConfig(options=FAST, settle_s=0.2, retry_base_s=0.2, max_attempts=3),
                RemoteRunner(f"127.0.0.1:{port}"))
    p.watchers.append(w.start())
    p.drop("a.png", png(13))
    st = p.wait_state("a.png", ("failed",), timeout=60)
    assert st["attempt"] == 3 and "cannot reach the propforge server" in st["error"], st
    assert [r["kind"] for r in p.runs(w, "a.png")] == ["failed"]


def test_output_io_errors_are_retried_then_failed_and_the_watcher_survives(project):
    p = project("godot")
    w = p.start(max_attempts=2, retry_base_s=0.2)
    p.out("blocked.png").mkdir(parents=True)          # a folder squats the GLB's name: rename fails
    p.drop("blocked.png", png(27))
    st = p.wait_state("blocked.png", ("failed",), timeout=60)
    assert st["attempt"] == 2 and "I/O error" in st["error"], st
    assert not list(p.layout.output.glob(".*.tmp")), "temp file left behind"
    p.drop("fine.png", png(28))
    assert p.wait_state("fine.png")["state"] == "done"
    p.out("blocked.png").rmdir()
    p.drop("blocked.png", png(29))                     # a new version of the image: made this time
    assert p.wait_state("blocked.png", ("done",))["source_sha256"] == sha(png(29))
    assert w.stats["failed"] == 1


def test_a_late_event_during_a_scheduled_retry_does_not_start_a_second_chain(project, caplog):
    """An event for unchanged bytes (an editor re-opening the file) while a retry waits is covered
    by that retry (it queued a second attempt-1 chain, which raced the test above in CI)."""
    caplog.set_level(logging.INFO, logger="propforge.watch")
    p = project("godot")
    p.start(max_attempts=3, retry_base_s=1.5)
    p.out("late.png").mkdir(parents=True)             # rename onto a folder fails: an I/O error
    src = p.drop("late.png", png(30))
    wait_for(lambda: p.status("late.png").get("retry_in_s"), 30, "the first retry to be scheduled")
    with open(src, "ab"):                              # open for writing, write nothing: a close event
        pass
    assert p.wait_state("late.png", ("failed",), timeout=60)["attempt"] == 3
    time.sleep(1.0)                                    # a second chain would still be failing now
    assert tries(caplog, "late.png") == [1, 2], "a second chain of attempts ran"
    with open(src, "ab"):                              # and after the failure: these bytes failed
        pass
    time.sleep(1.0)
    assert tries(caplog, "late.png") == [1, 2], "unchanged bytes that failed were run again"
    # new bytes while a retry waits: the retry is dropped and the new version starts at attempt 1
    p.drop("late.png", png(31))
    wait_for(lambda: tries(caplog, "late.png") == [1, 2, 1], 30, "the new version's first attempt")
    p.drop("late.png", png(32))
    assert p.wait_state("late.png", ("failed",), timeout=60)["attempt"] == 3
    time.sleep(1.0)
    assert tries(caplog, "late.png") == [1, 2, 1, 1, 2]
    p.out("late.png").rmdir()
    p.drop("late.png", png(33))
    assert p.wait_state("late.png", ("done",))["source_sha256"] == sha(png(33))


def tries(caplog, rel: str) -> list[int]:
    """The attempt numbers of the retried failures logged for ``rel``, in order."""
    return [int(m.split()[1].split("/")[0]) for m in (r.getMessage() for r in caplog.records)
            if m.startswith("attempt ") and f" failed for {rel}:" in m]


def test_deleting_or_renaming_a_source_keeps_outputs(project):
    p = project("unity")
    w = p.start()
    p.drop("a.png", png(14))
    p.drop("b.png", png(15))
    p.wait_state("a.png")
    p.wait_state("b.png")
    a_glb = p.out("a.png").read_bytes()
    (p.layout.drop / "a.png").unlink()
    wait_for(lambda: p.status("a.png").get("source_deleted"), 20, "a.png's status to note the deletion")
    assert p.out("a.png").read_bytes() == a_glb and p.out("a.png").with_name("a.glb.meta").exists()
    p.drop("a.png", png(14))                                          # it comes back: nothing to redo
    wait_for(lambda: not p.status("a.png").get("source_deleted"), 20, "the deletion note to go")
    assert p.status("a.png")["state"] == "done" and p.out("a.png").read_bytes() == a_glb
    (p.layout.drop / "b.png").rename(p.layout.drop / "c.png")
    p.record(p.layout.drop / "c.png")
    assert p.wait_state("c.png")["deduplicated_from"] == "b.png"     # a rename costs no generation
    assert p.out("b.png").exists()
    assert len(p.runs(w, kind="generated")) == 2


def test_status_is_repaired_after_a_crash_between_glb_and_status(project):
    from propforge_server.watch.status import write_status

    p = project("godot")
    w = p.start()
    p.drop("a.png", png(19))
    done = p.wait_state("a.png")
    w.stop()
    # what a crash right after the GLB rename leaves behind: GLB in place, status still "running"
    write_status(p.out("a.png"), "running", source=done["source"], progress={"stage": "write", "fraction": 0.99})
    w2 = p.start()
    st = p.wait_state("a.png", ("done",), timeout=20)
    assert st["output_sha256"] == done["output_sha256"] == sha(p.out("a.png").read_bytes())
    assert w2.wait_idle(20) and w2.stats["generated"] == 0 and w2.stats["skipped"] == 1


def test_lost_state_db_is_rebuilt_from_status_files(project):
    """A fresh clone or a cleared Library/ has the GLBs and status files but no watch.db."""
    import shutil

    p = project("unity")
    w = p.start()
    p.drop("a.png", png(20))
    p.drop("b/c.png", png(21))
    p.wait_state("a.png")
    p.wait_state("b/c.png")
    w.stop()
    shutil.rmtree(p.layout.state)
    w2 = p.start()
    assert w2.wait_idle(30)
    assert w2.stats == {"generated": 0, "copied": 0, "failed": 0, "skipped": 2}
    assert w2.db.get("b/c.png").state == "done"


def test_delete_outputs_when_configured(project):
    p = project("unity")
    p.start(delete_outputs=True)
    p.drop("a.png", png(16))
    p.wait_state("a.png")
    out = p.out("a.png")
    (p.layout.drop / "a.png").unlink()
    wait_for(lambda: not out.exists(), 20, "the output to be removed")
    wait_for(lambda: not out.with_name("a.glb.meta").exists() and not out.with_name("a.glb.status.json").exists(),
             20, "meta and status to be removed")
    # a whole folder moved out of the drop folder (to the trash, say)
    p.drop("set/b.png", png(32))
    p.drop("set/c.png", png(33))
    p.wait_state("set/b.png")
    p.wait_state("set/c.png")
    (p.layout.drop / "set").rename(p.layout.root / "trash")
    wait_for(lambda: not p.out("set/b.png").exists() and not p.out("set/c.png").exists(), 20,
             "the folder's outputs to be removed")
    assert sorted(x.name for x in (p.layout.root / "trash").iterdir()) == ["b.png", "c.png"]   # sources intact


def test_polling_observer(project):
    p = project("godot")
    p.start(polling=True)
    p.drop("polled.png", png(26))
    assert p.wait_state("polled.png", timeout=60)["state"] == "done"


def test_rescan_catches_what_no_event_reported(project):
    """No observer at all: the periodic stat-only re-scan alone finds new, changed and deleted images."""
    p = project("unity")
    w = p.start(observe=False, rescan_s=0.3)
    p.drop("a.png", png(30))
    first = p.wait_state("a.png", timeout=30)
    assert first["state"] == "done"
    p.drop("a.png", png(31))                                   # changed
    wait_for(lambda: p.status("a.png").get("source_sha256") == sha(png(31)) and
             p.status("a.png")["state"] == "done", 30, "the changed image to be remade")
    (p.layout.drop / "a.png").unlink()                         # deleted
    wait_for(lambda: p.status("a.png").get("source_deleted"), 30, "the deletion to be noticed")
    time.sleep(1.0)                                            # several re-scans: nothing more happens
    assert [r["kind"] for r in p.runs(w, "a.png")] == ["generated", "generated"]


def test_run_once_waits_for_every_image(project):
    """`--once` on images dropped while no watcher ran: returns only when all are made."""
    p = project("godot")
    path = p.drop("old.png", png(40))
    os.utime(path, (time.time() - 60, time.time() - 60))
    p.record(path)
    stats = Watcher(p.layout, WatchConfig(options=FAST)).run_once(timeout=120)
    assert stats == {"generated": 1, "copied": 0, "failed": 0, "skipped": 0}
    assert p.status("old.png")["state"] == "done"


def test_second_watcher_on_same_project_is_refused(project):
    from propforge.errors import PropForgeError

    p = project("godot")
    p.start()
    with pytest.raises(PropForgeError, match="already running"):
        Watcher(p.layout, WatchConfig(options=FAST)).start()


def test_stopped_and_killed_watcher_resume_and_do_each_image_once(project, tmp_path):
    """SIGTERM mid-burst, restart, kill -9 mid-burst (no clean-up at all), then `--once`:
    every image done exactly once."""
    import signal
    import subprocess
    import sys

    from propforge_server.watch import StateDB

    p = project("godot")
    names = [f"k{i}.png" for i in range(10)]
    for i, name in enumerate(names):
        p.drop(name, png(300 + i, size=40))
    cmd = [sys.executable, "-m", "propforge_server.cli", "watch", str(p.layout.root),
           "--backend", "relief", "--faces", "300", "--texture-size", "128", "--settle", "0.2"]
    # SIGTERM (service stop): a clean exit, the interrupted image goes back to "queued"
    term = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(p.status(n).get("state") == "done" for n in names), 120, "one image done")
    finally:
        term.send_signal(signal.SIGTERM)
        out, _ = term.communicate(timeout=60)
    assert term.returncode == 0 and "stopping" in out and "Traceback" not in out, out
    assert all(p.status(n).get("state") in ("done", "queued", None) for n in names)
    with open(tmp_path / "watch.log", "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: sum(p.status(n).get("state") == "done" for n in names) >= 3, 120, "three images done")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    done_first = {n for n in names if p.status(n).get("state") == "done"}
    assert len(done_first) < len(names), "the burst should be cut in the middle"
    for n in names:
        assert p.out(n).exists() == (n in done_first) or p.status(n).get("state") == "running", n
    broken = p.drop("broken.png", b"\x89PNG\r\n\x1a\n not really")
    os.utime(broken, (time.time() - 60, time.time() - 60))     # dropped a while ago: no reason to wait
    p.record(broken)
    again = subprocess.run(cmd + ["--once"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stderr                      # exit 1: an image failed
    assert "1 failed" in again.stderr and "broken.png" in again.stderr and "Traceback" not in again.stderr
    db = StateDB(p.layout.state / "watch.db")
    try:
        assert sorted(r["source"] for r in db.runs() if r["kind"] == "generated") == names
    finally:
        db.close()
    assert all(p.status(n)["state"] == "done" for n in names)


def test_server_mode_generates_through_propforge_serve(project, tmp_path, assert_valid_glb):
    """--server: a real `propforge serve` (gRPC on loopback, relief); a wrong token fails at once."""
    from propforge_server.server import ServerConfig, ThreadedServer
    from propforge_server.watch import RemoteRunner

    cfg = ServerConfig(host="127.0.0.1", grpc_port=0, http_port=-1, backend="relief", workers=1,
                       store=tmp_path / "store", token="s3cret")
    with ThreadedServer(cfg) as srv:
        p = project("unity")
        w = Watcher(p.layout, WatchConfig(options=FAST, settle_s=0.2, retry_base_s=0.2),
                    RemoteRunner(srv.grpc_address, token="s3cret"))
        p.watchers.append(w.start())
        p.drop("remote.png", png(22))
        st = p.wait_state("remote.png")
        assert st["state"] == "done", st
        assert_valid_glb(p.out("remote.png"))
        assert st["output_sha256"] == sha(p.out("remote.png").read_bytes())
        assert p.out("remote.png").with_name("remote.glb.meta").exists()
        w.stop()

        q = project("godot", name="other")
        bad = Watcher(q.layout, WatchConfig(options=FAST, settle_s=0.2, retry_base_s=0.2),
                      RemoteRunner(srv.grpc_address, token="wrong"))
        q.watchers.append(bad.start())
        q.drop("a.png", png(23))
        st = q.wait_state("a.png")
        assert st["state"] == "failed" and st["attempt"] == 1 and "token" in st["error"].lower(), st
