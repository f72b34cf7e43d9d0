"""Mapping between the proto messages and the library/server records, in one place.

JobOptions (wire, zero = server default) <-> GenerateOptions (library, validated); JobRecord/Event
(server) -> Job/JobEvent (wire) -> plain dicts (Python client). Validation errors name the field.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from google.protobuf import json_format

from propforge.errors import InputError
from propforge.options import QUALITY_PRESETS, ExportOptions, GenerateOptions

from ._proto import propforge_pb2 as pb
from .store import Event, JobRecord

_FORMATS = {"png": pb.TEXTURE_FORMAT_PNG, "jpeg": pb.TEXTURE_FORMAT_JPEG, "webp": pb.TEXTURE_FORMAT_WEBP}
_FORMAT_NAMES = {v: k for k, v in _FORMATS.items()}
_STATES = {"queued": pb.JOB_STATE_QUEUED, "running": pb.JOB_STATE_RUNNING, "succeeded": pb.JOB_STATE_SUCCEEDED,
           "failed": pb.JOB_STATE_FAILED, "cancelled": pb.JOB_STATE_CANCELLED}
_STATE_NAMES = {v: k for k, v in _STATES.items()}
_JOB_OPTION_FIELDS = {f.name for f in pb.JobOptions.DESCRIPTOR.fields} | \
    {f.json_name for f in pb.JobOptions.DESCRIPTOR.fields}


# -- options ---------------------------------------------------------------------------------------
def options_from_proto(o: pb.JobOptions) -> GenerateOptions:
    """Wire options -> validated GenerateOptions; InputError("options.<field>: ...") on a bad value."""
    if o.quality and o.quality not in QUALITY_PRESETS:
        raise InputError(f"options.quality: must be one of {', '.join(QUALITY_PRESETS)}, got {o.quality!r}")
    if o.texture_format not in _FORMAT_NAMES and o.texture_format != pb.TEXTURE_FORMAT_UNSPECIFIED:
        raise InputError(f"options.texture_format: unknown value {o.texture_format}")
    export = ExportOptions()
    changes: dict[str, Any] = {}
    if o.faces:
        changes["faces"] = o.faces
    if o.texture_size:
        changes["texture_size"] = o.texture_size
    if o.texture_format:
        changes["texture_format"] = _FORMAT_NAMES[o.texture_format]
    if o.height:
        changes["height"] = float(o.height)
    if o.alpha_mode:
        changes["alpha_mode"] = o.alpha_mode
    if o.lods:
        changes["lods"] = int(o.lods)
    if o.collision:
        changes["collision"] = o.collision
    for name, value in changes.items():  # one at a time so the error names the field
        try:
            replace(export, **{name: value}).validate()
        except InputError as e:
            raise InputError(f"options.{name}: {e}") from None
    top = {"backend": o.backend or "auto", "seed": int(o.seed) if o.has_seed else 0,
           "pipeline_type": o.pipeline_type or (QUALITY_PRESETS[o.quality] if o.quality else "")}
    for name, value in top.items():
        try:
            GenerateOptions(**{name: value}).validate()
        except InputError as e:
            raise InputError(f"options.{name}: {e}") from None
    return GenerateOptions(**top, export=replace(export, **changes)).validate()


def options_to_proto(options: GenerateOptions | dict[str, Any]) -> pb.JobOptions:
    """GenerateOptions (or its ``to_dict()``) -> wire options; every value is sent explicitly."""
    if isinstance(options, dict):
        options = GenerateOptions.from_dict(options)
    e = options.export
    return pb.JobOptions(backend=options.backend, pipeline_type=options.pipeline_type, faces=e.faces,
                         texture_size=e.texture_size, texture_format=_FORMATS.get(e.texture_format, 0),
                         height=e.height, seed=int(options.seed), has_seed=True, alpha_mode=e.alpha_mode,
                         lods=e.lods, collision=e.collision)


def options_from_json(data: dict[str, Any] | str) -> pb.JobOptions:
    """JobOptions in the proto3 JSON mapping (HTTP bridge); unknown fields are an error naming them."""
    try:
        msg = pb.JobOptions()
        if isinstance(data, str):
            json_format.Parse(data, msg)
        else:
            json_format.ParseDict(data, msg)
        return msg
    except json_format.ParseError as e:
        raise InputError(f"options: {e}") from None


def options_dict_to_proto(d: dict[str, Any]) -> pb.JobOptions:
    """Client convenience: a flat JobOptions dict (snake or camel case) or a GenerateOptions dict."""
    if set(d) <= _JOB_OPTION_FIELDS and "model" not in d:
        d = dict(d)
        if isinstance(d.get("texture_format", d.get("textureFormat")), str):
            key = "texture_format" if "texture_format" in d else "textureFormat"
            name = d[key]
            d[key] = name if name.startswith("TEXTURE_FORMAT_") else f"TEXTURE_FORMAT_{name.upper()}"
        if ("seed" in d) and "has_seed" not in d and "hasSeed" not in d:
            d["has_seed"] = True
        return options_from_json(d)
    opts = GenerateOptions.from_dict(d)
    if opts.model:
        raise InputError("options.model: the server chooses the model weights; leave model empty")
    return options_to_proto(opts)


# -- jobs and events -------------------------------------------------------------------------------
def job_to_proto(job: JobRecord) -> pb.Job:
    opts = GenerateOptions.from_dict(job.options)
    return pb.Job(id=job.id, state=_STATES[job.state], options=options_to_proto(opts), backend=job.backend,
                  queue_position=job.queue_position, stage=job.stage, fraction=job.fraction, error=job.error,
                  created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                  result_size=job.result_size, result_sha256=job.result_sha256, image_sha256=job.image_sha256,
                  cached=job.cached, image_name=job.image_name, error_code=job.error_code,
                  attempts=job.attempts)


def event_to_proto(ev: Event) -> pb.JobEvent:
    """Built once per event and shared by every watcher (100 watchers = 1 conversion, not 100)."""
    cached = ev.__dict__.get("_proto")
    if cached is None:
        cached = ev.__dict__["_proto"] = _event_to_proto(ev)
    return cached


def event_to_sse(ev: Event) -> bytes:
    """The event as one Server-Sent Events record; also built once per event."""
    cached = ev.__dict__.get("_sse")
    if cached is None:
        data = json.dumps(to_json(event_to_proto(ev)), separators=(",", ":"))
        cached = ev.__dict__["_sse"] = f"id: {ev.sequence}\nevent: {ev.kind}\ndata: {data}\n\n".encode()
    return cached


def _event_to_proto(ev: Event) -> pb.JobEvent:
    msg = pb.JobEvent(sequence=ev.sequence, job_id=ev.job_id, time=ev.time)
    getattr(msg, ev.kind).SetInParent()
    for k, v in ev.data.items():
        setattr(getattr(msg, ev.kind), k, v)
    return msg


def to_json(msg: Any) -> dict[str, Any]:
    """proto3 JSON mapping with every field present (plugins need not guess defaults)."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


def job_to_dict(job: pb.Job) -> dict[str, Any]:
    """Client-side job dict: snake_case keys, state as "queued"/"running"/..., options as a flat dict."""
    d = json_format.MessageToDict(job, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
    d["state"] = _STATE_NAMES.get(job.state, "unspecified")
    d["result_size"] = int(job.result_size)
    opts = d["options"]
    opts["seed"] = int(job.options.seed)
    opts["texture_format"] = _FORMAT_NAMES.get(job.options.texture_format, "")
    return d


def event_to_dict(ev: pb.JobEvent) -> dict[str, Any]:
    """Client-side event dict, flat: sequence, job_id, time, kind, then the kind's fields."""
    kind = ev.WhichOneof("kind") or ""
    d: dict[str, Any] = {"sequence": int(ev.sequence), "job_id": ev.job_id, "time": ev.time, "kind": kind}
    if kind:
        sub = getattr(ev, kind)
        for f in sub.DESCRIPTOR.fields:
            d[f.name] = getattr(sub, f.name)
    return d


def backends_to_proto(infos: list[dict[str, Any]], default_backend: str) -> pb.ListBackendsResponse:
    names = {f.name for f in pb.Backend.DESCRIPTOR.fields}
    return pb.ListBackendsResponse(backends=[pb.Backend(**{k: v for k, v in i.items() if k in names}) for i in infos],
                                   default_backend=default_backend)

