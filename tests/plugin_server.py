"""A real `propforge serve` subprocess on loopback (port 0) for the editor-plugin contract tests."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def server_available() -> None:
    """Skip only when the server package itself is absent (a checkout without the server)."""
    try:
        import propforge_server.cmd_serve  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("propforge_server"):
            pytest.skip(f"propforge_server is not installed ({e.name} missing)")
        raise


@contextmanager
def propforge_serve(store: Path, token: str = "", workers: int = 1, timeout: float = 60.0) -> Iterator[dict]:
    """Start `propforge serve --backend relief` on free ports; yields {"url", "http_port", "token", "proc"}."""
    server_available()
    cmd = [sys.executable, "-m", "propforge_server.cli", "serve", "--host", "127.0.0.1", "--grpc-port", "0",
           "--http-port", "0", "--backend", "relief", "--workers", str(workers), "--store", str(store),
           "--log-level", "WARNING"]
    env = dict(os.environ)
    env.pop("PROPFORGE_TOKEN", None)
    if token:
        cmd += ["--token", token]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        ports = _read_ports(proc, timeout)
        _wait_ready(f"http://127.0.0.1:{ports['http_port']}", proc, timeout)
        yield {"url": f"http://127.0.0.1:{ports['http_port']}", "http_port": ports["http_port"],
               "token": token, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Serving is not ready until every worker has loaded its backend (slow on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"propforge serve at {url} did not become ready within {timeout} s")


def _read_ports(proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"propforge serve exited with {proc.returncode}: {err[-2000:]}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.strip().startswith("{"):
                return json.loads(line)
    proc.kill()
    raise RuntimeError(f"propforge serve did not report its ports within {timeout} s")
