"""The exact HTTP sequence of the Godot plugin (engine_plugins/godot/addons/propforge/README.md,
"HTTP sequence"), replayed with aiohttp against a real `propforge serve` (relief backend), asserting
every field the plugins read. If the bridge changes shape, this fails before a designer's editor does.
A second test keeps the plugin honest: the request lines used here must be the ones in its GDScript."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, make_cutout
from PIL import Image
from plugin_server import propforge_serve

ADDON = ROOT / "engine_plugins" / "godot" / "addons" / "propforge"
TOKEN = "godot-token"
BOUNDARY = "PropForge1234567890"
OPTIONS = {"quality": "draft", "faces": 1000, "textureSize": 256, "height": 1.25, "seed": "42", "hasSeed": True,
           "backend": "relief"}
# (request fragment as written in the GDScript, file) -- what the plugin sends, verbatim.
PLUGIN_REQUESTS = [
    ('"/v2/health/ready"', "dock.gd"),
    ('"/v1/backends"', "dock.gd"),
    ('"/v1/jobs"', "propforge_job.gd"),
    ('"Content-Type: multipart/form-data; boundary=" + boundary', "propforge_job.gd"),
    ('"Accept: application/json"', "propforge_job.gd"),
    ('"/v1/jobs/%s/events"', "propforge_job.gd"),
    ('"Accept: text/event-stream"', "propforge_job.gd"),
    ('"Last-Event-ID: %d"', "propforge_job.gd"),
    ('"/v1/jobs/%s/result"', "propforge_job.gd"),
    ('"Range: bytes=%d-"', "propforge_job.gd"),
    ('"/v1/jobs/%s"', "propforge_job.gd"),
    ("HTTPClient.METHOD_DELETE", "propforge_job.gd"),
    ('"Authorization: Bearer "', "propforge_client.gd"),
    ('form-data; name="image"; filename="%s"', "propforge_client.gd"),
    ('form-data; name="options"', "propforge_client.gd"),
]
PLUGIN_READS = {  # response fields the GDScript reads (ev.get / d.get / headers.get), by file
    "propforge_job.gd": ["id", "sequence", "position", "stage", "step", "total", "fraction", "etaSeconds",
                         "message", "resultSize", "resultSha256", "cached", "reason", "code", "stageStarted",
                         "content-range", "content-length", "x-content-sha256", "etag", "state", "error",
                         "errorCode", "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"],
    "dock.gd": ["backends", "available", "name", "defaultBackend"],
    "propforge_client.gd": ["detail", "title"],
}


def godot_multipart(image: bytes, file_name: str, options_json: str) -> bytes:
    """Byte-for-byte what propforge_client.gd's multipart_body() builds."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{file_name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode()
    tail = (f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="options"\r\n'
            f"Content-Type: application/json\r\n\r\n{options_json}\r\n--{BOUNDARY}--\r\n").encode()
    return head + image + tail


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class SseReader:
    """Mirrors sse_parser.gd: split raw bytes on CR/LF, dispatch on blank lines."""

    def __init__(self) -> None:
        self.buf = b""
        self.cur: dict[str, Any] = {}
        self.data: list[str] = []

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self.buf += chunk
        out = []
        *lines, self.buf = re.split(rb"\r\n|\r|\n", self.buf)
        for raw in lines:
            line = raw.decode("utf-8")
            if not line:
                if self.data:
                    out.append({"id": self.cur.get("id", ""), "event": self.cur.get("event", "message"),
                                "data": json.loads("\n".join(self.data))})
                self.cur, self.data = {}, []
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if key == "data":
                    self.data.append(value)
                else:
                    self.cur[key] = value
        return out


async def read_events(s: aiohttp.ClientSession, base: str, job_id: str, after: int = 0,
                      stop_after: int | None = None) -> list[dict[str, Any]]:
    headers = {"Accept": "text/event-stream"}
    if after:
        headers["Last-Event-ID"] = str(after)
    events: list[dict[str, Any]] = []
    async with s.get(f"{base}/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        reader = SseReader()
        async for chunk in r.content.iter_any():
            for ev in reader.feed(chunk):
                events.append(ev)
                if stop_after is not None and len(events) >= stop_after:
                    return events  # drop the connection mid-stream, like a network blip
    return events


def check_event_fields(ev: dict[str, Any], job_id: str) -> None:
    """Every field sse_parser.gd / propforge_job.gd and the C# JobEvent read, with the types they expect."""
    d = ev["data"]
    assert int(ev["id"]) == int(d["sequence"]) and d["jobId"] == job_id
    kind = ev["event"]
    body = d[{"stage_started": "stageStarted"}.get(kind, kind)]
    if kind == "queued":
        assert isinstance(body["position"], int)
    elif kind == "stage_started":
        assert isinstance(body["stage"], str) and body["stage"]
    elif kind == "progress":
        assert isinstance(body["stage"], str)
        step, total = body["step"], body["total"]
        assert isinstance(step, int) and isinstance(total, int) and (total == 0 or 1 <= step <= total)
        assert 0.0 <= body["fraction"] <= 1.0 and isinstance(body["etaSeconds"], float)
        assert isinstance(body["message"], str)
    elif kind == "finished":
        assert int(body["resultSize"]) > 0 and re.fullmatch(r"[0-9a-f]{64}", body["resultSha256"])
        assert isinstance(body["cached"], bool)
    elif kind == "failed":
        assert body["reason"] and body["code"]
    elif kind == "cancelled":
        assert isinstance(body["reason"], str)
    else:
        raise AssertionError(f"unknown event {kind}")


async def download_like_godot(s: aiohttp.ClientSession, base: str, job_id: str) -> tuple[bytes, dict]:
    """First GET breaks off half-way; the second resumes with Range like propforge_job.gd."""
    part = b""
    async with s.get(f"{base}/v1/jobs/{job_id}/result") as r:
        assert r.status == 200 and r.content_type == "model/gltf-binary"
        total = int(r.headers["Content-Length"])
        part = await r.content.readexactly(total // 2)
    async with s.get(f"{base}/v1/jobs/{job_id}/result", headers={"Range": f"bytes={len(part)}-"}) as r:
        assert r.status == 206
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", r.headers["Content-Range"])
        assert m and int(m.group(1)) == len(part) and int(m.group(3)) == total
        headers = {k.lower(): v for k, v in r.headers.items()}
        rest = await r.read()
        assert int(r.headers["Content-Length"]) == len(rest)
    # A range past the end (a stale .part file): 416, so the plugin starts over.
    async with s.get(f"{base}/v1/jobs/{job_id}/result", headers={"Range": f"bytes={total}-"}) as r:
        assert r.status == 416
    return part + rest, headers


def test_godot_sequence_against_real_server(tmp_path: Path) -> None:
    async def go(base: str) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as anon:
            async with anon.get(f"{base}/v2/health/ready") as r:  # "Check connection", no token needed
                assert r.status == 200
            async with anon.get(f"{base}/v1/backends") as r:  # ...but the token is checked here
                assert r.status == 401 and r.content_type == "application/problem+json"
                assert (await r.json(content_type=None))["detail"]
        async with aiohttp.ClientSession(headers=auth) as s:
            async with s.get(f"{base}/v1/backends") as r:
                backends = await r.json()
            assert backends["defaultBackend"] == "relief"
            assert any(b["name"] == "relief" and b["available"] is True for b in backends["backends"])

            # Submit exactly as the plugin does.
            body = godot_multipart(png(make_cutout(96, "L", seed=5)), "crate.png", json.dumps(OPTIONS))
            hdr = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Accept": "application/json"}
            async with s.post(f"{base}/v1/jobs", data=body, headers=hdr) as r:
                assert r.status == 202
                job = await r.json()
            job_id = job["id"]
            assert job_id and job["options"]["seed"] == "42" and job["options"]["faces"] == 1000
            assert job["imageName"] == "crate.png"

            # Events: drop the stream after 3 events, resume with Last-Event-ID, no gap, no repeat.
            first = await read_events(s, base, job_id, stop_after=3)
            rest = await read_events(s, base, job_id, after=int(first[-1]["id"]))
            events = first + rest
            assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
            for ev in events:
                check_event_fields(ev, job_id)
            assert events[-1]["event"] == "finished"
            assert {"queued", "stage_started", "progress"} <= {e["event"] for e in events}
            fin = events[-1]["data"]["finished"]
            # Re-attached with every event seen: an empty stream, then GET /v1/jobs/{id} gives the outcome.
            assert await read_events(s, base, job_id, after=len(events)) == []
            async with s.get(f"{base}/v1/jobs/{job_id}") as r:
                record = await r.json()
            assert record["state"] == "JOB_STATE_SUCCEEDED" and record["cached"] is False
            assert record["resultSize"] == fin["resultSize"] and record["resultSha256"] == fin["resultSha256"]

            glb, headers = await download_like_godot(s, base, job_id)
            sha = hashlib.sha256(glb).hexdigest()
            assert len(glb) == int(fin["resultSize"]) and sha == fin["resultSha256"]
            assert headers["x-content-sha256"] == sha and headers["etag"].strip('"') == sha
            assert glb[:4] == b"glTF"

            # Cancel (DELETE) a queued job behind a slower one; its feed ends with "cancelled".
            slow = dict(OPTIONS, faces=20000, textureSize=1024, seed="7")
            async with s.post(f"{base}/v1/jobs", data=godot_multipart(png(make_cutout(128, seed=7)), "slow.png",
                              json.dumps(slow)), headers=hdr) as r:
                blocker = await r.json()
            async with s.post(f"{base}/v1/jobs", data=godot_multipart(png(make_cutout(96, seed=8)), "c.png",
                              json.dumps(dict(OPTIONS, seed="8"))), headers=hdr) as r:
                victim = await r.json()
            async with s.delete(f"{base}/v1/jobs/{victim['id']}") as r:
                assert r.status == 200 and (await r.json())["state"] == "JOB_STATE_CANCELLED"
            cancelled = await read_events(s, base, victim["id"])
            check_event_fields(cancelled[-1], victim["id"])
            assert cancelled[-1]["event"] == "cancelled"
            async with s.delete(f"{base}/v1/jobs/{blocker['id']}") as r:
                assert r.status == 200

            # A job that fails during generation (fully transparent image): "failed" with reason + code.
            clear = png(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))
            async with s.post(f"{base}/v1/jobs", data=godot_multipart(clear, "clear.png", json.dumps(OPTIONS)),
                              headers=hdr) as r:
                failing = await r.json()
            failed = await read_events(s, base, failing["id"])
            check_event_fields(failed[-1], failing["id"])
            assert failed[-1]["event"] == "failed" and "transparent" in failed[-1]["data"]["failed"]["reason"]
            async with s.get(f"{base}/v1/jobs/{failing['id']}") as r:
                record = await r.json()
            assert record["state"] == "JOB_STATE_FAILED" and "transparent" in record["error"] and record["errorCode"]

            # Errors the dock shows verbatim: problem JSON "detail".
            bad = dict(OPTIONS, textureSize=300)
            async with s.post(f"{base}/v1/jobs", data=godot_multipart(clear, "x.png", json.dumps(bad)),
                              headers=hdr) as r:
                assert r.status == 400 and "texture" in (await r.json(content_type=None))["detail"].lower()
            async with s.get(f"{base}/v1/jobs/nope/events", headers={"Accept": "text/event-stream"}) as r:
                assert r.status == 404 and (await r.json(content_type=None))["detail"]
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer wrong"}) as s:
            async with s.post(f"{base}/v1/jobs", data=body, headers=hdr) as r:
                assert r.status == 401 and (await r.json(content_type=None))["detail"]

    with propforge_serve(tmp_path / "store", token=TOKEN, workers=1) as srv:
        asyncio.run(go(srv["url"]))


def test_plugin_sends_and_reads_what_this_test_checks() -> None:
    sources = {p.name: p.read_text() for p in ADDON.glob("*.gd")}
    for fragment, name in PLUGIN_REQUESTS:
        assert fragment in sources[name], f"{name} no longer sends {fragment}: update this test and the README"
    for name, fields in PLUGIN_READS.items():
        for field in fields:
            assert f'"{field}"' in sources[name], f"{name} no longer reads {field!r}"
    readme = (ADDON / "README.md").read_text()
    for step in ("GET /v2/health/ready", "GET /v1/backends", "POST /v1/jobs", "GET /v1/jobs/{id}/events",
                 "Last-Event-ID", "GET /v1/jobs/{id}/result", "Range: bytes=", "DELETE /v1/jobs/{id}"):
        assert step in readme, f"README's HTTP sequence lacks {step}"
