"""docs/http-api.md, driven step by step against a real server, the way the editor plugins use it."""
from __future__ import annotations

import hashlib
import json

import aiohttp
import pytest

from _server_util import SMALL, cutout_png, form, read_sse, run
from propforge_server.server import ServerConfig, ThreadedServer

TOKEN = "plugin-token"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    cfg = ServerConfig(grpc_port=0, http_port=0, backend="relief", workers=1, token=TOKEN,
                       store=tmp_path_factory.mktemp("store"))
    with ThreadedServer(cfg) as srv:
        yield srv.http_url


def test_documented_sequence(base: str, assert_valid_glb) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def go():
        async with aiohttp.ClientSession(headers=auth) as s:
            # POST /v1/jobs: multipart image + options JSON -> 202, Job, Location
            options = {"backend": "relief", "quality": "standard", "faces": 500, "textureSize": 128,
                       "textureFormat": "TEXTURE_FORMAT_PNG", "height": 1.5, "seed": "42", "hasSeed": True}
            async with s.post(f"{base}/v1/jobs", data=form(cutout_png(seed=7), options, "crate.png", 600)) as r:
                assert r.status == 202 and r.content_type == "application/json"
                job = await r.json()
                assert r.headers["Location"] == f"/v1/jobs/{job['id']}"
            assert job["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING")
            assert job["imageName"] == "crate.png" and job["options"]["seed"] == "42"
            assert job["options"]["height"] == 1.5 and job["options"]["pipelineType"] == "1024_cascade"
            assert set(job) >= {"id", "state", "options", "backend", "queuePosition", "stage", "fraction", "error",
                                "createdAt", "resultSize", "resultSha256", "imageSha256", "cached", "errorCode"}
            # GET /v1/jobs/{id}/events: SSE until the terminal event, then the stream closes
            async with s.get(f"{base}/v1/jobs/{job['id']}/events") as r:
                assert r.status == 200 and r.content_type == "text/event-stream"
                events = await read_sse(r)
            names = {"queued", "stage_started", "progress", "finished", "failed", "cancelled"}
            for e in events:
                assert e["event"] in names
                camel = {"stage_started": "stageStarted"}.get(e["event"], e["event"])
                assert camel in e["data"] and e["data"]["jobId"] == job["id"]
            assert events[-1]["event"] == "finished"
            fin = events[-1]["data"]["finished"]
            progress = [e["data"]["progress"] for e in events if e["event"] == "progress"]
            assert progress and all(0.0 <= p["fraction"] <= 1.0 for p in progress)
            assert [p["fraction"] for p in progress] == sorted(p["fraction"] for p in progress)
            # GET /v1/jobs/{id}
            async with s.get(f"{base}/v1/jobs/{job['id']}") as r:
                done = await r.json()
            assert done["state"] == "JOB_STATE_SUCCEEDED" and done["fraction"] == 1.0
            assert done["resultSize"] == fin["resultSize"] and isinstance(done["resultSize"], str)
            # GET /v1/jobs/{id}/result
            async with s.get(f"{base}/v1/jobs/{job['id']}/result") as r:
                assert r.status == 200 and r.content_type == "model/gltf-binary"
                assert r.headers["Accept-Ranges"] == "bytes"
                glb = await r.read()
                assert int(r.headers["Content-Length"]) == len(glb) == int(done["resultSize"])
                assert r.headers["ETag"] == f'"{done["resultSha256"]}"' == f'"{r.headers["X-Content-SHA256"]}"'
            assert hashlib.sha256(glb).hexdigest() == done["resultSha256"]
            # DELETE on a finished job: unchanged
            async with s.delete(f"{base}/v1/jobs/{job['id']}") as r:
                assert r.status == 200 and (await r.json())["state"] == "JOB_STATE_SUCCEEDED"
            # the same request again is answered from the cache
            async with s.post(f"{base}/v1/jobs", data=form(cutout_png(seed=7), options, "crate.png")) as r:
                again = await r.json()
            assert again["state"] == "JOB_STATE_SUCCEEDED" and again["cached"] is True
            assert again["resultSha256"] == done["resultSha256"]
            # GET /v1/backends
            async with s.get(f"{base}/v1/backends") as r:
                backends = await r.json()
            assert backends["defaultBackend"] == "relief"
            assert any(b["name"] == "relief" and b["available"] for b in backends["backends"])
            # GET /metrics
            async with s.get(f"{base}/metrics") as r:
                assert r.status == 200 and r.content_type == "text/plain"
                assert "propforge_queue_length" in await r.text()
        async with aiohttp.ClientSession() as anon:
            for path in ("/v2/health/live", "/v2/health/ready"):
                async with anon.get(base + path) as r:
                    assert r.status == 200
            async with anon.get(f"{base}/v1/jobs/{job['id']}") as r:
                assert r.status == 401 and r.content_type == "application/problem+json"
                problem = await r.json(content_type=None)
            assert set(problem) == {"type", "title", "status", "detail", "code"} and problem["status"] == 401
        return glb
    assert_valid_glb(run(go()))


def test_cancel_a_queued_job_over_http(base: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def go():
        async with aiohttp.ClientSession(headers=auth) as s:
            jobs = []
            for seed in (11, 12):
                async with s.post(f"{base}/v1/jobs", data=form(cutout_png(seed=seed), {**SMALL, "seed": str(seed)})) as r:
                    jobs.append(await r.json())
            async with s.delete(f"{base}/v1/jobs/{jobs[1]['id']}") as r:
                cancelled = await r.json()
            async with s.get(f"{base}/v1/jobs/{jobs[1]['id']}/events") as r:
                events = await read_sse(r)
            async with s.get(f"{base}/v1/jobs/{jobs[1]['id']}/result") as r:
                status, body = r.status, await r.json(content_type=None)
            async with s.get(f"{base}/v1/jobs/{jobs[0]['id']}/events") as r:
                first = await read_sse(r)
            return cancelled, events, status, body, first
    cancelled, events, status, body, first = run(go())
    assert cancelled["state"] == "JOB_STATE_CANCELLED"
    assert events[-1]["event"] == "cancelled" and events[-1]["data"]["cancelled"]["reason"]
    assert status == 409 and body["code"] == "FAILED_PRECONDITION" and "cancelled" in body["detail"]
    assert first[-1]["event"] == "finished"
