"""Helpers for the server tests: small PNG inputs, an aiohttp SSE reader, a relief server fixture."""
from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp

from conftest import make_cutout

#: small, fast relief jobs (about half a second each on one core)
SMALL = {"backend": "relief", "faces": 500, "textureSize": 128}
#: a relief job of a few seconds, long enough to cancel or kill mid-way
SLOW = {"backend": "relief", "faces": 4000, "textureSize": 1024}


def cutout_png(seed: int = 0, size: int = 64, shape: str = "disc") -> bytes:
    buf = io.BytesIO()
    make_cutout(size, shape, seed).save(buf, "PNG")
    return buf.getvalue()


def form(image: bytes, options: dict[str, Any] | None = None, name: str = "in.png",
         deadline: float | None = None) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("image", image, filename=name, content_type="image/png")
    if options is not None:
        data.add_field("options", json.dumps(options), content_type="application/json")
    if deadline is not None:
        data.add_field("deadlineSeconds", str(deadline))
    return data


async def read_sse(resp: aiohttp.ClientResponse, limit: int | None = None) -> list[dict[str, Any]]:
    """Parse text/event-stream into [{"id", "event", "data"}]; stops after ``limit`` events or at EOF."""
    events: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if cur:
                events.append(cur)
                cur = {}
                if limit is not None and len(events) >= limit:
                    break
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        cur[key] = json.loads(value) if key == "data" else int(value) if key == "id" else value
    return events


def run(coro: Any) -> Any:
    return asyncio.run(coro)
