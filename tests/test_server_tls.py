"""Both front ends over TLS with a self-signed certificate (made with the openssl CLI)."""
from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from _server_util import SMALL, cutout_png, run
from propforge_server.client import PropForgeClient, ServerUnavailable
from propforge_server.server import ServerConfig, ThreadedServer


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def test_tls_on_grpc_and_http(cert, tmp_path: Path) -> None:
    cert_pem, key_pem = cert
    cfg = ServerConfig(grpc_port=0, http_port=0, backend="relief", workers=1, store=tmp_path,
                       tls_cert=cert_pem, tls_key=key_pem, token="t")
    with ThreadedServer(cfg) as srv:
        port = srv.server.grpc_port
        with PropForgeClient(f"localhost:{port}", token="t", root_certificates=cert_pem.read_bytes()) as c:
            glb, job = c.generate(cutout_png(seed=3), SMALL)
            assert glb[:4] == b"glTF" and job["state"] == "succeeded"
        with PropForgeClient(f"localhost:{port}", token="t", timeout=5, retries=0) as plain:
            with pytest.raises(ServerUnavailable):
                plain.get(job["id"])                     # plaintext to a TLS port does not connect

        async def http():
            ctx = ssl.create_default_context(cafile=str(cert_pem))
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer t"}) as s:
                async with s.get(f"https://localhost:{srv.server.http_port}/v1/jobs/{job['id']}/result", ssl=ctx) as r:
                    return r.status, await r.read()
        status, body = run(http())
        assert status == 200 and body == glb
