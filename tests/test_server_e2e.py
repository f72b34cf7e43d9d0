"""Real servers on loopback (port 0), real clients (grpcio, aiohttp), the relief backend end to end."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from _server_util import SLOW, SMALL, cutout_png, form, read_sse, run
from propforge.errors import BackendUnavailable, InputError, PropForgeError
from propforge_server._proto import propforge_pb2 as pb
from propforge_server._proto import propforge_pb2_grpc as pb_grpc
from propforge_server.client import AuthError, PropForgeClient
from propforge_server.jobs import JobNotFound, QueueFull, ResultNotReady
from propforge_server.server import ServerConfig, ThreadedServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = ServerConfig(host="127.0.0.1", grpc_port=0, http_port=0, backend="relief", workers=2,
                       store=tmp_path_factory.mktemp("store"))
    with ThreadedServer(cfg) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with PropForgeClient(server.grpc_address) as c:
        yield c


def wait_for(client: PropForgeClient, job_id: str, kind: str) -> dict:
    for ev in client.watch(job_id):
        if ev["kind"] == kind:
            return ev
    raise AssertionError(f"job {job_id} ended without a {kind!r} event")


def test_health_says_serving(server, client) -> None:
    assert client.health() == "SERVING"
    assert client.health("propforge.v1.PropForge") == "SERVING"

    async def http():
        async with aiohttp.ClientSession() as s:
            for path in ("/v2/health/live", "/v2/health/ready"):
                async with s.get(server.http_url + path) as r:
                    assert r.status == 200, path
    run(http())


def test_twenty_jobs_from_five_concurrent_clients(server, assert_valid_glb) -> None:
    """3 gRPC clients and 2 HTTP clients, 4 jobs each, all at once; every GLB valid, every hash right."""
    results: dict[str, tuple[bytes, str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def grpc_client(c: int) -> None:
        with PropForgeClient(server.grpc_address) as cl:
            for j in range(4):
                seen: list = []
                glb, job = cl.generate(cutout_png(seed=10 * c + j, shape="disc" if j % 2 else "L"),
                                       {**SMALL, "seed": j}, progress=seen.append, name=f"g{c}-{j}.png")
                assert job["state"] == "succeeded" and seen, job
                with lock:
                    results[job["id"]] = (glb, job["result_sha256"])

    async def http_client(c: int) -> None:
        async with aiohttp.ClientSession() as s:
            for j in range(4):
                async with s.post(server.http_url + "/v1/jobs",
                                  data=form(cutout_png(seed=10 * c + j), {**SMALL, "seed": str(j), "hasSeed": True})) as r:
                    assert r.status == 202, await r.text()
                    job = await r.json()
                async with s.get(f"{server.http_url}/v1/jobs/{job['id']}/events") as r:
                    events = await read_sse(r)
                assert [e["id"] for e in events] == list(range(1, len(events) + 1))
                assert events[-1]["event"] == "finished", events[-1]
                async with s.get(f"{server.http_url}/v1/jobs/{job['id']}/result") as r:
                    assert r.status == 200 and r.content_type == "model/gltf-binary"
                    glb = await r.read()
                    sha = r.headers["X-Content-SHA256"]
                    assert r.headers["ETag"] == f'"{sha}"'
                with lock:
                    results[job["id"]] = (glb, sha)

    def guard(fn, *a):
        try:
            fn(*a)
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=guard, args=(grpc_client, c)) for c in range(3)]
    threads += [threading.Thread(target=guard, args=(lambda c: run(http_client(c)), c)) for c in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors:
        raise errors[0]
    assert len(results) == 20
    for glb, sha in results.values():
        assert hashlib.sha256(glb).hexdigest() == sha
    for glb in {sha: glb for glb, sha in results.values()}.values():
        assert_valid_glb(glb)


def test_sse_reconnect_with_last_event_id_loses_nothing(server, client) -> None:
    job = client.submit(cutout_png(seed=101), {**SMALL, "textureSize": 256})
    url = f"{server.http_url}/v1/jobs/{job['id']}/events"

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                head = await read_sse(r, limit=2)          # then drop the connection mid-job
            last = head[-1]["id"]
            async with s.get(url, headers={"Last-Event-ID": str(last)}) as r:
                tail = await read_sse(r)
            async with s.get(url) as r:                     # the whole feed, replayed after the end
                full = await read_sse(r)
            return head, tail, full
    head, tail, full = run(go())
    assert [e["id"] for e in head + tail] == list(range(1, len(full) + 1))
    assert head + tail == full
    assert full[-1]["event"] == "finished"
    assert all(e["data"]["sequence"] == str(e["id"]) for e in full)
    kinds = [e["event"] for e in full]
    assert kinds[0] == "queued" and "stage_started" in kinds and "progress" in kinds


def test_range_requests_resume_a_download(server, client) -> None:
    glb, job = client.generate(cutout_png(seed=202), SMALL)
    url = f"{server.http_url}/v1/jobs/{job['id']}/result"
    size = len(glb)

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(url, headers={"Range": "bytes=0-999"}) as r:
                assert r.status == 206 and r.headers["Content-Range"] == f"bytes 0-999/{size}"
                first = await r.read()
            async with s.get(url, headers={"Range": "bytes=1000-"}) as r:
                assert r.status == 206 and int(r.headers["Content-Length"]) == size - 1000
                rest = await r.read()
            async with s.get(url, headers={"Range": f"bytes={size}-"}) as r:
                assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{size}"
            async with s.get(url, headers={"Range": "bytes=-16"}) as r:
                tail = await r.read()
            return first, rest, tail
    first, rest, tail = run(go())
    assert first + rest == glb and tail == glb[-16:]
    assert hashlib.sha256(first + rest).hexdigest() == job["result_sha256"]


def test_grpc_result_stream_resumes_at_offset(server, client) -> None:
    glb, job = client.generate(cutout_png(seed=303), SMALL)
    stub = pb_grpc.PropForgeStub(client._channel)
    chunks = list(stub.GetResult(pb.GetResultRequest(id=job["id"], offset=1234)))
    assert chunks[0].offset == 1234 and chunks[0].total_size == len(glb)
    assert b"".join(c.data for c in chunks) == glb[1234:]
    assert all(len(c.data) <= 1 << 20 for c in chunks) and chunks[0].sha256 == job["result_sha256"]
    assert client.download(job["id"]) == glb


def test_unknown_job_id(server, client) -> None:
    for call in (client.get, client.cancel, client.download):
        with pytest.raises(JobNotFound, match="no job"):
            call("0123456789abcdef")
    with pytest.raises(JobNotFound):
        list(client.watch("0123456789abcdef"))

    async def go():
        async with aiohttp.ClientSession() as s:
            for method, suffix in (("GET", ""), ("GET", "/events"), ("GET", "/result"), ("DELETE", "")):
                async with s.request(method, f"{server.http_url}/v1/jobs/nosuchjob{suffix}") as r:
                    assert r.status == 404, (method, suffix)
                    assert r.content_type == "application/problem+json"
                    body = await r.json()
                    assert body["code"] == "NOT_FOUND" and "nosuchjob" in body["detail"]
    run(go())


def test_corrupt_image_is_a_clear_400(server, client) -> None:
    bad = cutout_png()[:60]  # a truncated PNG
    with pytest.raises(InputError, match="(?i)image"):
        client.submit(bad, SMALL)

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.http_url + "/v1/jobs", data=form(b"not an image at all", SMALL)) as r:
                assert r.status == 400
                body = await r.json(content_type="application/problem+json")
                assert body["code"] == "INVALID_ARGUMENT" and "image" in body["detail"].lower()
            async with s.post(server.http_url + "/v1/jobs", data=aiohttp.FormData({"options": "{}"})) as r:
                assert r.status == 400 and "image" in (await r.json(content_type=None))["detail"]
    run(go())


def test_bad_options_name_the_field(server, client) -> None:
    with pytest.raises(InputError, match="options.faces"):
        client.submit(cutout_png(), {"faces": 5})
    with pytest.raises(BackendUnavailable, match="trellis2.*not available"):  # CI has no GPU
        client.submit(cutout_png(), {"backend": "trellis2"})

    async def go():
        async with aiohttp.ClientSession() as s:
            for options, field in (({"textureSize": 100}, "texture_size"), ({"textureSizee": 256}, "textureSizee"),
                                   ({"quality": "ultra"}, "quality"), ({"faces": -3}, "faces"),
                                   ({"backend": "trellis2"}, "not available")):
                async with s.post(server.http_url + "/v1/jobs", data=form(cutout_png(), options)) as r:
                    assert r.status == 400, options
                    body = await r.json(content_type=None)
                    assert field in body["detail"] and body["status"] == 400, body
    run(go())


def test_result_of_unfinished_job_is_409_then_cancel(server, client) -> None:
    job = client.submit(cutout_png(seed=404), SLOW)
    with pytest.raises(ResultNotReady):
        client.download(job["id"])

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{server.http_url}/v1/jobs/{job['id']}/result") as r:
                assert r.status == 409
            async with s.delete(f"{server.http_url}/v1/jobs/{job['id']}") as r:
                assert r.status == 200
                return await r.json()
    cancelled = run(go())
    assert cancelled["state"] == "JOB_STATE_CANCELLED"
    assert [e["kind"] for e in client.watch(job["id"])][-1] == "cancelled"


def test_backends_and_metrics(server, client) -> None:
    info = client.backends()
    relief = next(b for b in info["backends"] if b["name"] == "relief")
    assert relief["available"] and info["default_backend"] == "relief"
    client.generate(cutout_png(seed=505), SMALL)

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(server.http_url + "/metrics") as r:
                return r.status, await r.text()
    status, text = run(go())
    assert status == 200
    assert "propforge_queue_length 0" in text
    succeeded = int(next(l for l in text.splitlines() if l.startswith('propforge_jobs{state="succeeded"}')).split()[-1])
    assert succeeded >= 1
    assert 'propforge_stage_duration_seconds_count{stage="bake"}' in text


def test_queue_full_and_cancel_mid_job_frees_the_worker(tmp_path: Path) -> None:
    cfg = ServerConfig(grpc_port=0, http_port=0, backend="relief", workers=1, max_queue=1, store=tmp_path)
    with ThreadedServer(cfg) as srv, PropForgeClient(srv.grpc_address) as c:
        a = c.submit(cutout_png(seed=1, size=128), SLOW)
        wait_for(c, a["id"], "stage_started")
        b = c.submit(cutout_png(seed=2), SMALL)
        assert c.get(b["id"])["queue_position"] == 1
        with pytest.raises(QueueFull, match="queue is full"):
            c.submit(cutout_png(seed=3), SMALL)

        async def http_full():
            async with aiohttp.ClientSession() as s:
                async with s.post(srv.http_url + "/v1/jobs", data=form(cutout_png(seed=4), SMALL)) as r:
                    return r.status, await r.json(content_type=None)
        status, body = run(http_full())
        assert status == 429 and body["code"] == "RESOURCE_EXHAUSTED"
        t_cancel = time.time()
        assert c.cancel(a["id"])["state"] == "cancelled"
        done = wait_for(c, b["id"], "finished")
        assert done["result_size"] > 0
        b_job = c.get(b["id"])
        assert b_job["started_at"] >= t_cancel and b_job["state"] == "succeeded"
        a_job = c.get(a["id"])
        assert a_job["state"] == "cancelled" and a_job["result_size"] == 0
        kinds = [e["kind"] for e in c.watch(a["id"])]
        assert kinds.count("cancelled") == 1 and "finished" not in kinds


def test_token_upload_and_pixel_limits(tmp_path: Path) -> None:
    cfg = ServerConfig(grpc_port=0, http_port=0, backend="relief", workers=1, store=tmp_path, token="s3cret",
                       max_upload_bytes=64 << 10, max_pixels=96 * 96)
    big = bytes(200 << 10)
    with ThreadedServer(cfg) as srv:
        with PropForgeClient(srv.grpc_address, token="wrong") as bad:
            with pytest.raises(AuthError, match="token"):
                bad.submit(cutout_png(), SMALL)
            with pytest.raises(AuthError):
                list(bad.watch("0123"))
            assert bad.health() == "SERVING"               # probes need no token
        with PropForgeClient(srv.grpc_address, token="") as anon:
            with pytest.raises(AuthError, match="needs a bearer token"):
                anon.get("0123")
        with PropForgeClient(srv.grpc_address, token="s3cret") as good:
            with pytest.raises(InputError, match="larger than max"):
                good.submit(big, SMALL)
            with pytest.raises(InputError, match="pixels"):
                good.submit(cutout_png(size=128), SMALL)
            glb, job = good.generate(cutout_png(size=64), SMALL)
            assert job["state"] == "succeeded" and glb[:4] == b"glTF"

        async def http():
            out = {}
            async with aiohttp.ClientSession() as s:
                async with s.get(srv.http_url + "/v1/backends") as r:
                    out["missing"] = (r.status, await r.json(content_type=None), r.headers.get("WWW-Authenticate"))
                async with s.get(srv.http_url + "/v1/backends", headers={"Authorization": "Bearer nope"}) as r:
                    out["wrong"] = (r.status, await r.json(content_type=None))
                async with s.get(srv.http_url + "/v2/health/ready") as r:
                    out["health"] = r.status
                auth = {"Authorization": "Bearer s3cret"}
                async with s.post(srv.http_url + "/v1/jobs", data=form(big, SMALL), headers=auth) as r:
                    out["big"] = (r.status, await r.json(content_type=None))
                async with s.get(srv.http_url + "/metrics", headers=auth) as r:
                    out["metrics"] = r.status
            return out
        out = run(http())
        assert out["missing"][0] == 401 and out["missing"][1]["code"] == "UNAUTHENTICATED" and out["missing"][2]
        assert out["wrong"][0] == 401 and "wrong" in out["wrong"][1]["detail"]
        assert out["health"] == 200 and out["metrics"] == 200
        assert out["big"][0] == 413 and "limit" in out["big"][1]["detail"], out["big"]


def test_sse_sends_keepalive_comments_while_idle(tmp_path: Path) -> None:
    cfg = ServerConfig(grpc_port=0, http_port=0, backend="relief", workers=1, store=tmp_path, sse_keepalive=0.05)
    with ThreadedServer(cfg) as srv, PropForgeClient(srv.grpc_address) as c:
        job = c.submit(cutout_png(seed=9, size=128), SLOW)

        async def go():
            lines = []
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{srv.http_url}/v1/jobs/{job['id']}/events") as r:
                    async for raw in r.content:
                        lines.append(raw.decode().rstrip("\n"))
            return lines
        lines = run(go())
    assert ": keepalive" in lines                     # the bake stage is silent for longer than 50 ms
    assert lines[-3] == "event: finished" and lines[-2].startswith("data: ") and lines[-1] == ""


def test_deadline_fails_a_real_job_over_http(server) -> None:
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.http_url + "/v1/jobs",
                              data=form(cutout_png(seed=606, size=128), SLOW, deadline=0.3)) as r:
                job = await r.json()
            async with s.get(f"{server.http_url}/v1/jobs/{job['id']}/events") as r:
                events = await read_sse(r)
            async with s.get(f"{server.http_url}/v1/jobs/{job['id']}") as r:
                return events, await r.json()
    events, job = run(go())
    assert events[-1]["event"] == "failed"
    failed = events[-1]["data"]["failed"]
    assert failed["code"] == "DEADLINE_EXCEEDED" and "deadline" in failed["reason"]
    assert job["state"] == "JOB_STATE_FAILED" and job["errorCode"] == "DEADLINE_EXCEEDED"


def test_client_detects_a_corrupted_result(server, client) -> None:
    glb, job = client.generate(cutout_png(seed=707), {**SMALL, "seed": 707})
    path = server.manager.store.result_path(job["result_sha256"])
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF                                      # bit rot on the server's disk
    path.write_bytes(bytes(data))
    try:
        with pytest.raises(PropForgeError, match="corrupt"):
            client.download(job["id"])
    finally:
        path.write_bytes(glb)


def test_client_generate_raises_on_failure_and_cancel(server, client) -> None:
    from propforge.errors import Cancelled
    from propforge_server.client import JobFailed

    with pytest.raises(JobFailed, match="deadline") as info:
        client.generate(cutout_png(seed=808, size=128), SLOW, deadline_seconds=0.3)
    assert info.value.code == "DEADLINE_EXCEEDED" and info.value.job["state"] == "failed"

    seen: list = []

    def cancel_when_running(ev) -> None:
        seen.append(ev)
        if ev.stage not in ("queued",) and len(seen) == 2:
            client.cancel(job_ids[-1])

    job_ids: list[str] = []
    real_submit = client.submit

    def submit(*a, **k):
        job = real_submit(*a, **k)
        job_ids.append(job["id"])
        return job
    client.submit = submit                       # to learn the id generate() gets back
    try:
        with pytest.raises(Cancelled, match="cancelled"):
            client.generate(cutout_png(seed=809, size=128), SLOW, progress=cancel_when_running)
    finally:
        del client.submit
    assert client.get(job_ids[-1])["state"] == "cancelled"


def test_internal_errors_are_problem_json_and_grpc_internal(tmp_path: Path) -> None:
    cfg = ServerConfig(grpc_port=0, http_port=0, backend="relief", workers=1, store=tmp_path)
    with ThreadedServer(cfg) as srv, PropForgeClient(srv.grpc_address) as c:
        job = c.generate(cutout_png(seed=1), SMALL)[1]
        srv.manager.store._db.close()              # the database goes away under the server

        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{srv.http_url}/v1/jobs/{job['id']}") as r:
                    return r.status, await r.json(content_type=None)
        status, body = run(go())
        assert status == 500 and body["code"] == "INTERNAL" and "Traceback" not in body["detail"]
        with pytest.raises(PropForgeError, match="INTERNAL"):
            c.get(job["id"])
