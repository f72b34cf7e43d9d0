"""Durable job state: SQLite (stdlib) for jobs, events and the result cache; files for images and GLBs.

Why files beside the database: a GLB can be tens of MiB and is streamed in chunks, and the input image
must survive a crash so an interrupted job can be re-run. Both are written atomically
(``propforge.fileio.write_atomic``) and named by their sha256, so identical inputs and cached results
share one file. The manager talks to the ``JobStore`` interface only, so a studio farm can swap in a
shared store (e.g. Postgres + object storage) without touching the workers or front ends.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from contextlib import contextmanager
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from propforge.fileio import write_atomic

#: job states, in the order a job moves through them
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
#: event kinds (the proto's JobEvent oneof)
EVENT_KINDS = ("queued", "stage_started", "progress", "finished", "failed", "cancelled")
TERMINAL_EVENTS = frozenset({"finished", "failed", "cancelled"})


@dataclass
class JobRecord:
    """One job as stored. ``options`` is ``GenerateOptions.to_dict()`` with server defaults applied."""

    id: str
    state: str
    options: dict[str, Any]
    backend: str
    image_sha256: str
    image_name: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    stage: str = ""
    fraction: float = 0.0
    error: str = ""
    error_code: str = ""
    result_size: int = 0
    result_sha256: str = ""
    cached: bool = False
    deadline: float = 0.0          # absolute unix time; 0 = none
    attempts: int = 0              # times a worker started it (restart recovery counts these)
    cache_key: str = ""
    queue_position: int = 0        # not stored: filled in by the manager

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Event:
    """One entry of a job's event feed; ``data`` holds the fields of the proto sub-message ``kind``."""

    sequence: int
    job_id: str
    time: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_EVENTS

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: sequence, job_id, time, kind, then the sub-message fields."""
        return {"sequence": self.sequence, "job_id": self.job_id, "time": self.time, "kind": self.kind, **self.data}


class JobStore(Protocol):
    """What the job manager needs from storage (SQLite here; a shared database on a farm)."""

    def put_image(self, sha256: str, data: bytes) -> None: ...
    def get_image(self, sha256: str) -> bytes | None: ...
    def put_result(self, sha256: str, data: bytes) -> Path: ...
    def result_path(self, sha256: str) -> Path | None: ...
    def insert_job(self, job: JobRecord) -> None: ...
    def update_job(self, job_id: str, **changes: Any) -> None: ...
    def get_job(self, job_id: str) -> JobRecord | None: ...
    def jobs_in_states(self, *states: str) -> list[JobRecord]: ...
    def count_by_state(self) -> dict[str, int]: ...
    def append_events(self, events: list[Event]) -> None: ...
    def events_after(self, job_id: str, after: int) -> list[Event]: ...
    def last_sequence(self, job_id: str) -> int: ...
    def cache_get(self, key: str) -> tuple[str, int] | None: ...
    def cache_put(self, key: str, sha256: str, size: int) -> None: ...
    def purge(self, cutoff: float) -> dict[str, int]: ...
    def transaction(self) -> Any:
        """Context manager: the calls inside commit together (a state change and its event)."""
        ...


_JOB_COLUMNS = [f.name for f in fields(JobRecord) if f.name != "queue_position"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, state TEXT NOT NULL, options TEXT NOT NULL, backend TEXT NOT NULL,
  image_sha256 TEXT NOT NULL, image_name TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
  started_at REAL NOT NULL DEFAULT 0, finished_at REAL NOT NULL DEFAULT 0, stage TEXT NOT NULL DEFAULT '',
  fraction REAL NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', error_code TEXT NOT NULL DEFAULT '',
  result_size INTEGER NOT NULL DEFAULT 0, result_sha256 TEXT NOT NULL DEFAULT '',
  cached INTEGER NOT NULL DEFAULT 0, deadline REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  cache_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL, sequence INTEGER NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL,
  data TEXT NOT NULL, PRIMARY KEY (job_id, sequence)
);
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
  used_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SCHEMA_VERSION = "1"


class SQLiteJobStore:
    """A store in one folder: ``jobs.sqlite3``, ``images/<sha256>``, ``results/<sha256>.glb``.

    One connection guarded by a lock: writes are short, and WAL mode with synchronous=NORMAL keeps
    every committed row across a process crash (what a SIGKILLed server needs).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "results").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise RuntimeError(f"job store {self.root} has schema {row[0]}, this server needs {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all; nests (inner blocks join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            self._db.execute("COMMIT")

    # -- files ------------------------------------------------------------------------------------
    def put_image(self, sha256: str, data: bytes) -> None:
        """Temp file + rename (atomic) without fsync: the job row that points here is committed with
        synchronous=NORMAL, which survives a process crash but not power loss, and so does this file;
        an fsync would add ~10 ms to every submit without making the pair more durable."""
        path = self.root / "images" / sha256
        if not path.exists():
            tmp = path.with_name(f".{sha256}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def get_image(self, sha256: str) -> bytes | None:
        path = self.root / "images" / sha256
        return path.read_bytes() if path.exists() else None

    def put_result(self, sha256: str, data: bytes) -> Path:
        """fsync'd (write_atomic) before the job is marked SUCCEEDED: a finished result never vanishes."""
        path = self.root / "results" / f"{sha256}.glb"
        if not path.exists():
            write_atomic(path, data)
        return path

    def result_path(self, sha256: str) -> Path | None:
        path = self.root / "results" / f"{sha256}.glb"
        return path if sha256 and path.exists() else None

    # -- jobs -------------------------------------------------------------------------------------
    def insert_job(self, job: JobRecord) -> None:
        row = self._row(asdict(job))
        cols = ", ".join(row)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def update_job(self, job_id: str, **changes: Any) -> None:
        row = self._row(changes)
        if not row:
            return
        sets = ", ".join(f"{k}=?" for k in row)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*row.values(), job_id))

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id=?", (job_id,))
            row = cur.fetchone()
        return self._record(row) if row else None

    def jobs_in_states(self, *states: str) -> list[JobRecord]:
        marks = ", ".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE state IN ({marks}) "
                                    "ORDER BY created_at, rowid", states).fetchall()
        return [self._record(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return dict(rows)

    # -- events -----------------------------------------------------------------------------------
    def append_events(self, events: list[Event]) -> None:
        """All or nothing, in one transaction."""
        rows = [(e.job_id, e.sequence, e.time, e.kind, json.dumps(e.data)) for e in events]
        with self.transaction():
            self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)

    def events_after(self, job_id: str, after: int) -> list[Event]:
        with self._lock:
            rows = self._db.execute("SELECT sequence, time, kind, data FROM events WHERE job_id=? AND sequence>? "
                                    "ORDER BY sequence", (job_id, after)).fetchall()
        return [Event(seq, job_id, t, kind, json.loads(data)) for seq, t, kind, data in rows]

    def last_sequence(self, job_id: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(sequence) FROM events WHERE job_id=?", (job_id,)).fetchone()
        return int(row[0] or 0)

    # -- result cache -----------------------------------------------------------------------------
    def cache_get(self, key: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._db.execute("SELECT sha256, size FROM cache WHERE key=?", (key,)).fetchone()
            if row is not None:
                self._db.execute("UPDATE cache SET used_at=? WHERE key=?", (time.time(), key))
        if row is None or self.result_path(row[0]) is None:
            return None
        return row[0], int(row[1])

    def cache_put(self, key: str, sha256: str, size: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", (key, sha256, size, time.time()))

    # -- retention --------------------------------------------------------------------------------
    def purge(self, cutoff: float) -> dict[str, int]:
        """Forget terminal jobs finished before ``cutoff`` and cache entries unused since, then delete
        image/result files nothing refers to any more (only files older than ``cutoff``, so a job being
        submitted right now never loses its freshly written image)."""
        terminal = tuple(TERMINAL)
        marks = ", ".join("?" * len(terminal))
        with self._lock:
            old = f"SELECT id FROM jobs WHERE state IN ({marks}) AND finished_at < ?"
            with self.transaction():
                self._db.execute(f"DELETE FROM events WHERE job_id IN ({old})", (*terminal, cutoff))
                jobs = self._db.execute(f"DELETE FROM jobs WHERE id IN ({old})", (*terminal, cutoff)).rowcount
                cache = self._db.execute("DELETE FROM cache WHERE used_at < ?", (cutoff,)).rowcount
            images = {r[0] for r in self._db.execute("SELECT image_sha256 FROM jobs")}
            results = {r[0] for r in self._db.execute("SELECT result_sha256 FROM jobs")}
            results |= {r[0] for r in self._db.execute("SELECT sha256 FROM cache")}
        removed = 0
        for folder, keep, suffix in ((self.root / "images", images, ""), (self.root / "results", results, ".glb")):
            for path in folder.iterdir():
                name = path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.name
                if path.name.startswith(".") or name in keep or (suffix and not path.name.endswith(suffix)):
                    continue
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return {"jobs": jobs, "cache_entries": cache, "files": removed}

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _row(d: dict[str, Any]) -> dict[str, Any]:
        unknown = set(d) - set(_JOB_COLUMNS) - {"queue_position"}
        if unknown:
            raise KeyError(f"not job columns: {sorted(unknown)}")
        row = {k: v for k, v in d.items() if k in _JOB_COLUMNS}
        if "options" in row:
            row["options"] = json.dumps(row["options"], sort_keys=True)
        if "cached" in row:
            row["cached"] = int(bool(row["cached"]))
        return row

    @staticmethod
    def _record(row: tuple) -> JobRecord:
        d = dict(zip(_JOB_COLUMNS, row))
        d["options"] = json.loads(d["options"])
        d["cached"] = bool(d["cached"])
        return JobRecord(**d)


#: result chunk size of both front ends (gRPC ResultChunk, HTTP download writes): 1 MiB
CHUNK = 1 << 20


def iter_file(path: Path, offset: int = 0, chunk: int = CHUNK) -> Iterator[bytes]:
    """Read ``path`` from ``offset`` in chunks (results are streamed, never loaded whole by the server)."""
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            data = f.read(chunk)
            if not data:
                return
            yield data


def close_chunks(gen: Any) -> None:
    """Close a file-chunk generator; if a read is still running in the executor, GC closes it later."""
    try:
        gen.close()
    except ValueError:  # "generator already executing"
        pass


async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the default executor (the front ends' way to reach SQLite, files and the manager)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
