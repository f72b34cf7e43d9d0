"""Per-image status files (``<output>.status.json``) that the editor plugins read.

Always written atomically (temp + rename), so a plugin polling the file never parses half of it.
Schema (version 1) is documented in docs/watch-mode.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from propforge.fileio import write_atomic

SCHEMA_VERSION = 1
STATES = ("queued", "running", "done", "failed")


def status_path(output: Path) -> Path:
    return output.with_name(output.name + ".status.json")


def utc_iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def write_status(output: Path, state: str, /, **fields: Any) -> dict[str, Any]:
    """Replace the status file of ``output`` with ``state`` + ``fields`` (None values dropped)."""
    if state not in STATES:
        raise ValueError(f"bad status state {state!r}")
    doc = {"schema": SCHEMA_VERSION, "state": state, "updated": utc_iso(time.time())}
    doc.update({k: v for k, v in fields.items() if v is not None})
    write_atomic(status_path(output), (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    return doc


def read_status(output: Path) -> Optional[dict[str, Any]]:
    """The status document, or None when missing or unreadable (e.g. edited by hand)."""
    try:
        d = json.loads(status_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
