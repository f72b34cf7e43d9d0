"""Watcher state in SQLite: what each drop image last produced, and a log of every job run.

One file per project (``<state dir>/watch.db``). It makes restarts cheap (an image already done
with the same content hash and options hash is skipped) and lets identical images share one job.
Losing it is harmless: the status files next to the outputs carry the same hashes.
"""
from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from propforge.errors import PropForgeError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    source TEXT PRIMARY KEY,          -- drop-relative path (POSIX)
    output TEXT NOT NULL,             -- output-relative path of the GLB
    state TEXT NOT NULL,              -- queued | running | done | failed
    source_sha256 TEXT,
    options_sha256 TEXT,
    output_sha256 TEXT,
    output_size INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_key ON images (source_sha256, options_sha256);
CREATE TABLE IF NOT EXISTS runs (     -- one row per finished job: generated, copied (dedupe) or failed
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    source_sha256 TEXT,
    options_sha256 TEXT,
    output_sha256 TEXT,
    seconds REAL,
    error TEXT,
    finished REAL NOT NULL
);
"""


@dataclass
class ImageRow:
    source: str
    output: str
    state: str
    source_sha256: Optional[str]
    options_sha256: Optional[str]
    output_sha256: Optional[str]
    output_size: Optional[int]
    attempts: int
    error: Optional[str]
    updated: float


class StateDB:
    """Thread-safe (one lock) wrapper over one SQLite connection in autocommit + WAL mode."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, source: str) -> Optional[ImageRow]:
        with self._lock:
            r = self._db.execute("SELECT * FROM images WHERE source = ?", (source,)).fetchone()
        return ImageRow(*r) if r else None

    def all(self) -> list[ImageRow]:
        with self._lock:
            return [ImageRow(*r) for r in self._db.execute("SELECT * FROM images ORDER BY source")]

    def by_output(self, output: str) -> list[ImageRow]:
        with self._lock:
            return [ImageRow(*r) for r in self._db.execute("SELECT * FROM images WHERE output = ?", (output,))]

    def done_with_key(self, source_sha256: str, options_sha256: str) -> list[ImageRow]:
        """Finished images with this content + options: candidates to copy instead of regenerating."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM images WHERE source_sha256 = ? AND options_sha256 = ? AND state = 'done'",
                (source_sha256, options_sha256)).fetchall()
        return [ImageRow(*r) for r in rows]

    def upsert(self, source: str, output: str, state: str, *, source_sha256: str | None = None,
               options_sha256: str | None = None, output_sha256: str | None = None,
               output_size: int | None = None, attempts: int | None = None, error: str | None = None) -> None:
        """Insert or update; hash/attempt fields left as None keep their stored value."""
        with self._lock:
            self._db.execute(
                """INSERT INTO images (source, output, state, source_sha256, options_sha256, output_sha256,
                                       output_size, attempts, error, updated)
                   VALUES (?, ?, ?, ?, ?, ?, ?, COALESCE(?, 0), ?, ?)
                   ON CONFLICT(source) DO UPDATE SET
                     output = excluded.output, state = excluded.state,
                     source_sha256 = COALESCE(excluded.source_sha256, source_sha256),
                     options_sha256 = COALESCE(excluded.options_sha256, options_sha256),
                     output_sha256 = COALESCE(excluded.output_sha256, output_sha256),
                     output_size = COALESCE(excluded.output_size, output_size),
                     attempts = COALESCE(?, attempts),
                     error = excluded.error, updated = excluded.updated""",
                (source, output, state, source_sha256, options_sha256, output_sha256, output_size,
                 attempts, error, time.time(), attempts))

    def delete(self, source: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM images WHERE source = ?", (source,))

    def log_run(self, source: str, kind: str, *, source_sha256: str | None = None,
                options_sha256: str | None = None, output_sha256: str | None = None,
                seconds: float | None = None, error: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (source, kind, source_sha256, options_sha256, output_sha256, seconds, error, finished)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (source, kind, source_sha256, options_sha256, output_sha256, seconds, error, time.time()))

    def runs(self, source: str | None = None) -> list[dict]:
        """The job log (oldest first), optionally for one source."""
        q = "SELECT source, kind, source_sha256, options_sha256, output_sha256, seconds, error, finished FROM runs"
        args: tuple = ()
        if source is not None:
            q, args = q + " WHERE source = ?", (source,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        keys = ("source", "kind", "source_sha256", "options_sha256", "output_sha256", "seconds", "error", "finished")
        return [dict(zip(keys, r)) for r in rows]


class ProjectLock:
    """One watcher per project: an OS file lock on ``<state>/watch.lock`` (released if the process dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            if sys.platform == "win32":
                import msvcrt
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
            except OSError:
                holder = "another process"
            fh.close()
            raise PropForgeError(f"another `propforge watch` is already running on this project ({holder}); "
                                 f"stop it first (lock: {self.path})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()    # closing drops the lock
            self._fh = None
