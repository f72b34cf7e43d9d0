"""`propforge serve` as a real process: SIGKILL it mid-job, restart on the same store, nothing is lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from _server_util import SLOW, SMALL, cutout_png
from propforge_server import cli
from propforge_server.client import PropForgeClient


def start_server(store: Path, port_file: Path, log: Path, grpc_port: int = 0,
                 http_port: int = 0) -> tuple[subprocess.Popen, dict]:
    port_file.unlink(missing_ok=True)
    env = {**os.environ, "PROPFORGE_TOKEN": ""}
    proc = subprocess.Popen([sys.executable, "-m", "propforge_server.cli", "serve", "--grpc-port", str(grpc_port),
                             "--http-port", str(http_port), "--backend", "relief", "--workers", "1",
                             "--store", str(store), "--port-file", str(port_file)],
                            stdout=subprocess.PIPE, stderr=open(log, "ab"), env=env, text=True)
    line = proc.stdout.readline()  # serve prints its ports as one JSON line once it is serving
    if not line:
        proc.wait(10)
        pytest.fail(f"propforge serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
    ports = json.loads(line)
    assert json.loads(port_file.read_text()) == ports
    return proc, ports


def test_kill_mid_job_and_restart_on_the_same_store(tmp_path: Path) -> None:
    store, port_file, log = tmp_path / "store", tmp_path / "ports.json", tmp_path / "serve.log"
    proc, ports = start_server(store, port_file, log)
    # an editor watching job B through the crash: it reconnects (resuming after the last event it saw)
    survivor = PropForgeClient(f"127.0.0.1:{ports['grpc_port']}", retries=12)
    seen: list[dict] = []
    try:
        with PropForgeClient(f"127.0.0.1:{ports['grpc_port']}") as c:
            glb_a, job_a = c.generate(cutout_png(seed=1), SMALL)
            job_b = c.submit(cutout_png(seed=2, size=128), SLOW)
            for ev in c.watch(job_b["id"]):
                if ev["kind"] == "progress" and ev["stage"] not in ("queued", "prepare"):
                    break
            assert c.get(job_b["id"])["state"] == "running"
        watcher = threading.Thread(target=lambda: seen.extend(survivor.watch(job_b["id"])), daemon=True)
        watcher.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, ports = start_server(store, port_file, log, ports["grpc_port"], ports["http_port"])
    try:
        watcher.join(120)
        survivor.close()
        assert seen and seen[-1]["kind"] == "finished", seen[-3:]
        assert [e["sequence"] for e in seen] == list(range(1, len(seen) + 1))
        with PropForgeClient(f"127.0.0.1:{ports['grpc_port']}") as c:
            assert c.download(job_a["id"]) == glb_a                      # finished result survives
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['http_port']}/v1/jobs/{job_a['id']}/result") as r:
                assert r.read() == glb_a
            events = list(c.watch(job_b["id"]))                          # the whole feed, old + new
            assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
            requeued = [e for e in events if e["kind"] == "queued" and "re-queued" in e["message"]]
            assert requeued, [e["kind"] for e in events]
            b = c.get(job_b["id"])
            assert b["state"] == "succeeded" and events[-1]["kind"] == "finished", (b, events[-1])
            assert b["attempts"] == 2
            glb_b = c.download(job_b["id"])
            assert glb_b[:4] == b"glTF" and len(glb_b) == b["result_size"]
        proc.send_signal(signal.SIGTERM)                                 # clean stop: exit code 0
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_refuses_bad_flags_with_one_line(capsys, tmp_path: Path) -> None:
    assert cli.main(["serve", "--store", str(tmp_path), "--tls-cert", str(tmp_path / "c.pem")]) == 2
    assert "--tls-cert and --tls-key" in capsys.readouterr().err
    assert cli.main(["serve", "--store", str(tmp_path), "--max-queue", "0"]) == 2
    assert "--max-queue" in capsys.readouterr().err


def test_serve_reports_a_port_in_use(capsys, tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag in ("--grpc-port", "--http-port"):
            other = "--http-port" if flag == "--grpc-port" else "--grpc-port"
            rc = cli.main(["serve", "--store", str(tmp_path), "--backend", "relief", flag, str(port), other, "0"])
            err = capsys.readouterr().err
            assert rc == 2 and "cannot listen" in err and str(port) in err, err
