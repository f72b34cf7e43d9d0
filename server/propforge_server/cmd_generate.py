"""`propforge generate`: images -> engine-ready GLB files, locally or through a PropForge server.

One image writes OUT as a .glb; several write OUT/<name>.glb. A failed image is reported and the
rest still run; the exit code is 2 if any image failed. On a terminal a progress bar with the stage
names is drawn on stderr; ``--json`` prints one JSON event per line on stdout instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from propforge.errors import BackendUnavailable, Cancelled, ModelLoadError, PropForgeError
from propforge.options import COLLISION_KINDS, TEXTURE_FORMATS, ExportOptions, GenerateOptions
from propforge.progress import ProgressEvent

HELP = """Generate engine-ready GLB props (PBR textures, +Y up, metres, pivot at the bottom centre).

Backends:
  relief    2.5D relief: inflates the image silhouette into a closed, thick, double-sided slab;
            NOT a 3D reconstruction. Runs on any CPU in seconds, no model weights.
  trellis2  TRELLIS.2 image-to-3D (full 3D shape and PBR materials); needs a CUDA GPU and the model.
  auto      trellis2 when a CUDA GPU and the model are available, else relief (the default).

Inputs are RGBA cut-outs, or images on a plain background (it is keyed out)."""

EXAMPLES = """examples:
  propforge generate chair.png -o chair.glb
  propforge generate *.png -o props/ --faces 10000 --texture-size 512
  propforge generate chair.png -o chair.glb --lods 2 --collision convex
  propforge generate chair.png -o chair.glb --json | jq .
  propforge generate chair.png -o chair.glb --server localhost:50051 --token $TOKEN"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate", help="image(s) -> GLB (relief: 2.5D, not a 3D reconstruction; trellis2: full 3D on GPU)",
        description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ExportOptions()
    p.add_argument("images", nargs="+", metavar="IMAGE", help="input image file(s): PNG, WebP, JPEG, ...")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output .glb for one image, or a folder for several (created if missing)")
    p.add_argument("--backend", choices=("auto", "relief", "trellis2"), default="auto",
                   help="generator (default: auto; see above)")
    p.add_argument("--faces", type=int, default=d.faces, metavar="N", help=f"face budget (default {d.faces})")
    p.add_argument("--texture-size", type=int, default=d.texture_size, metavar="N",
                   help=f"texture side in pixels, a power of two 128..4096 (default {d.texture_size})")
    p.add_argument("--texture-format", choices=TEXTURE_FORMATS, default=d.texture_format,
                   help="png (default), jpeg, or webp (with a PNG fallback for engines without WebP)")
    p.add_argument("--height", type=float, default=d.height, metavar="METRES",
                   help=f"real-world height of the asset in metres (default {d.height:g})")
    p.add_argument("--lods", type=int, default=d.lods, metavar="N",
                   help="extra levels of detail, 0-4, each about half the faces of the one before, "
                        "sharing one texture set (nodes <name>_LOD0.._LODN; default 0)")
    p.add_argument("--collision", choices=COLLISION_KINDS, default=d.collision,
                   help="collision mesh: none (default), convex (hull, at most 255 faces; node "
                        "<name>-convcolonly) or mesh (decimated copy, about 1500 faces; node <name>-colonly)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON event per line on stdout")
    p.add_argument("--server", metavar="HOST:PORT", help="run on a PropForge gRPC server instead of locally")
    p.add_argument("--token", metavar="T", default=os.environ.get("PROPFORGE_TOKEN"),
                   help="server access token (default: $PROPFORGE_TOKEN)")
    p.add_argument("--model", metavar="ID_OR_PATH", default="",
                   help="trellis2 model: Hugging Face id or local folder with pipeline.json")
    p.add_argument("--pipeline-type", metavar="T", default="",
                   help="trellis2 pipeline: 512, 1024, 1024_cascade or 1536_cascade (default: the model's)")
    p.set_defaults(func=run)
    p.error = _one_line_error(p)  # type: ignore[method-assign]
    return p


def _one_line_error(parser: argparse.ArgumentParser) -> Callable[[str], None]:
    """argparse prints usage + message; we print one line naming the problem (exit code 2)."""
    def error(message: str) -> None:
        print(f"propforge generate: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)
    return error


def build_options(args: argparse.Namespace) -> GenerateOptions:
    """Command-line values -> validated GenerateOptions (InputError names the bad value)."""
    export = ExportOptions(faces=args.faces, texture_size=args.texture_size,
                           texture_format=args.texture_format, height=args.height, lods=args.lods,
                           collision=args.collision)
    return GenerateOptions(backend=args.backend, seed=args.seed, pipeline_type=args.pipeline_type,
                           model=args.model, export=export).validate()


def plan_outputs(images: list[str], output: str) -> list[Path]:
    """One output path per image: OUT itself for one image (or OUT/<stem>.glb if OUT is a folder)."""
    from propforge.errors import InputError

    out = Path(output)
    as_folder = len(images) > 1 or out.is_dir() or output.endswith(("/", os.sep))
    if not as_folder:
        if out.suffix.lower() != ".glb":
            raise InputError(f"output {output!r} must end in .glb (or be a folder)")
        return [out]
    if out.suffix.lower() == ".glb":
        raise InputError(f"with {len(images)} images, -o must be a folder, not {output!r}")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {output!r} exists and is not a folder")
    paths: list[Path] = []
    used: set[str] = set()
    for img in images:
        stem, k = Path(img).stem or "image", 1
        name = f"{stem}.glb"
        while name in used:
            k += 1
            name = f"{stem}_{k}.glb"
        used.add(name)
        paths.append(out / name)
    return paths


# --------------------------------------------------------------------------------------------------
# Progress rendering


class Reporter:
    """Renders progress and results: a bar on a terminal, JSON lines with --json, quiet otherwise."""

    def __init__(self, as_json: bool, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> None:
        self.as_json = as_json
        self.out, self.err = stdout, stderr
        self.bar = not as_json and stderr.isatty()
        self._last = 0.0
        self._stage = ""

    def emit(self, event: dict[str, Any]) -> None:
        print(json.dumps(event, sort_keys=False), file=self.out, flush=True)

    def progress(self, image: str, backend: str) -> Callable[[ProgressEvent], None]:
        def cb(ev: ProgressEvent) -> None:
            if self.as_json:
                self.emit({"event": "progress", "image": image, "backend": backend, **ev.to_dict()})
            elif self.bar:
                now = time.monotonic()   # redraw on every new stage, else at most 10 times a second
                if ev.stage != self._stage or now - self._last >= 0.1 or ev.fraction >= 1.0:
                    self._last, self._stage = now, ev.stage
                    self._draw(image, backend, ev)
        return cb

    def _draw(self, image: str, backend: str, ev: ProgressEvent) -> None:
        width = 24
        fill = int(round(ev.fraction * width))
        steps = f" {ev.step}/{ev.total}" if ev.step is not None and ev.total else ""
        line = (f"\r{backend} {Path(image).name[:28]:<28} [{'#' * fill}{'.' * (width - fill)}] "
                f"{ev.fraction * 100:3.0f}% {ev.stage}{steps} {ev.message[:30]}")
        self.err.write(line.ljust(110)[:110])
        self.err.flush()

    def clear_bar(self) -> None:
        if self.bar:
            self.err.write("\r" + " " * 110 + "\r")
            self.err.flush()

    def done(self, image: str, output: Path, glb: bytes, sha: str, backend: str, seconds: float,
             notes: str = "") -> None:
        self.clear_bar()
        if self.as_json:
            self.emit({"event": "done", "image": image, "output": str(output), "sha256": sha,
                       "bytes": len(glb), "backend": backend, "seconds": round(seconds, 3), "notes": notes})
        else:
            kind = " (2.5D relief, not a 3D reconstruction)" if backend == "relief" else ""
            print(f"wrote {output}  [{len(glb) / 1e6:.2f} MB, backend {backend}{kind}, {seconds:.1f} s]",
                  file=self.out, flush=True)

    def failed(self, image: str, message: str) -> None:
        self.clear_bar()
        if self.as_json:
            self.emit({"event": "error", "image": image, "message": message})
        print(f"propforge: error: {message}", file=self.err, flush=True)


# --------------------------------------------------------------------------------------------------
# Running jobs


@dataclass
class Outcome:
    glb: bytes
    backend: str
    sha256: str
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def one_line(message: str) -> str:
    """Error texts from libraries can span lines; the CLI promises one line per problem."""
    return " ".join(message.split())


def _quiet_weight_loading() -> None:
    """transformers draws its own 'Loading weights' bar on stderr, through ours; hub downloads keep theirs."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _trellis2_hint() -> str:
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return " (pass --model with a local folder or hub id holding pipeline.json and the weights)"
    return (" (no CUDA GPU here: trellis2 needs an NVIDIA GPU and the TRELLIS.2 weights; "
            "use --backend relief for the CPU 2.5D relief)")


class LocalRunner:
    """Runs propforge.api.generate_glb in this process, loading the generator once for all images."""

    def __init__(self, options: GenerateOptions) -> None:
        from propforge.generators import backend_and_kwargs, load_generator

        self.options = options
        name, kwargs = backend_and_kwargs(options.backend, options.model)
        if name == "trellis2":
            _quiet_weight_loading()
        try:
            self.generator = load_generator(name, **kwargs)
        except (BackendUnavailable, ModelLoadError) as e:
            if name != "trellis2":
                raise
            raise BackendUnavailable(f"backend trellis2 is not usable here: {one_line(str(e))}{_trellis2_hint()}") from None
        self.backend = self.generator.name

    def run(self, data: bytes, image: str, progress: Callable[[ProgressEvent], None]) -> Outcome:
        from propforge.api import generate_glb
        from propforge.image import load_image

        img = load_image(data, name=image)
        res = generate_glb(img, self.options, progress=progress, generator=self.generator, source_bytes=data)
        return Outcome(res.glb, res.backend, res.sha256, notes=res.metadata.get("notes", ""))


class RemoteRunner:
    """Sends each image to a PropForge server through the gRPC client."""

    def __init__(self, options: GenerateOptions, address: str, token: str | None) -> None:
        from propforge.errors import BackendUnavailable

        try:
            from propforge_server.client import PropForgeClient
        except ImportError as e:
            raise BackendUnavailable(f"the gRPC client is not available in this build ({e})") from None
        self.options = options
        self.client = PropForgeClient(address, token=token)
        self.backend = options.backend

    def run(self, data: bytes, image: str, progress: Callable[[ProgressEvent], None]) -> Outcome:
        import hashlib

        glb, job = self.client.generate(data, self.options, progress=progress, name=Path(image).name)
        job = dict(job or {})
        backend = str(job.get("backend") or self.options.backend)
        return Outcome(glb, backend, hashlib.sha256(glb).hexdigest(), notes=str(job.get("notes", "")),
                       extra={"job_id": job.get("id") or job.get("job_id")})


def run(args: argparse.Namespace) -> int:
    """Run the job; a closed stdout (``propforge generate ... --json | head``) stops it quietly."""
    try:
        return _run(args)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)      # keep Python's exit-time flush from failing
        os.dup2(devnull, sys.stdout.fileno())
        return 141                                      # 128 + SIGPIPE, as shells report it


def _run(args: argparse.Namespace) -> int:
    """Validate everything that can be checked up front, then process the images one by one."""
    from propforge.fileio import write_atomic
    from propforge.image import read_source

    options = build_options(args)
    outputs = plan_outputs(args.images, args.output)
    rep = Reporter(args.json)
    runner = RemoteRunner(options, args.server, args.token) if args.server else LocalRunner(options)
    failures = internal = 0
    for image, out in zip(args.images, outputs):
        t0 = time.monotonic()
        backend = runner.backend
        if args.json:
            rep.emit({"event": "start", "image": image, "output": str(out), "backend": backend})
        try:
            data = read_source(image, image)
            res = runner.run(data, image, rep.progress(image, backend))
            write_atomic(out, res.glb)
        except Cancelled:
            rep.clear_bar()
            raise
        except PropForgeError as e:
            failures += 1
            msg = one_line(str(e))
            rep.failed(image, msg if msg.startswith(image) else f"{image}: {msg}")
            continue
        except (KeyboardInterrupt, SystemExit, BrokenPipeError):
            rep.clear_bar()
            raise
        except Exception as e:  # noqa: BLE001 - a bug on one image must not drop the others
            failures += 1
            internal += 1
            rep.failed(image, f"{image}: internal error: {type(e).__name__}: {one_line(str(e))}")
            if os.environ.get("PROPFORGE_DEBUG"):
                traceback.print_exc()
            continue
        rep.done(image, out, res.glb, res.sha256, res.backend, time.monotonic() - t0, res.notes)
    if failures and len(args.images) > 1:
        print(f"propforge: {failures} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if internal else (2 if failures else 0)
