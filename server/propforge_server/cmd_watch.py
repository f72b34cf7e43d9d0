"""`propforge watch PROJECT_DIR`: turn images dropped into a game project into imported GLB props."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from propforge.errors import InputError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "watch", help="watch a Unity/Godot project's drop folder and generate a GLB for every image",
        description="Watch a game project: images dropped into the drop folder become GLB props in the "
                    "generated folder (Godot: propforge/drop -> propforge/generated; Unity: "
                    "Assets/PropForge/Drop -> Assets/PropForge/Generated), each with a "
                    "<name>.glb.status.json. Per-image options: <image>.propforge.json; per folder: "
                    "propforge.json. See docs/watch-mode.md.")
    p.add_argument("project", metavar="PROJECT_DIR", help="Unity or Godot project root")
    p.add_argument("--server", metavar="HOST:PORT", help="send jobs to `propforge serve` over gRPC "
                   "instead of generating in this process")
    p.add_argument("--token", help="server token (or set PROPFORGE_TOKEN)")
    p.add_argument("--backend", choices=("auto", "relief", "trellis2"), default=None,
                   help="generator (default auto: trellis2 with a GPU and weights, else relief)")
    p.add_argument("--faces", type=int, help="face budget of each GLB")
    p.add_argument("--texture-size", type=int, help="texture side in pixels (128..4096, power of two)")
    p.add_argument("--texture-format", choices=("png", "jpeg", "webp"), help="texture encoding")
    p.add_argument("--height", type=float, help="real-world height of each prop in metres")
    p.add_argument("--lods", type=int, help="extra levels of detail per GLB, 0-4 (nodes <name>_LOD1..)")
    p.add_argument("--collision", choices=("none", "convex", "mesh"), help="collision mesh per GLB")
    p.add_argument("--seed", type=int, help="generation seed")
    p.add_argument("--engine", choices=("unity", "godot"), help="skip engine detection")
    p.add_argument("--once", action="store_true",
                   help="process what is in the drop folder now, then exit (exit code 1 if any image failed)")
    p.add_argument("--workers", type=int, default=0, help="jobs at once (default 1 in-process, 2 with --server)")
    p.add_argument("--retries", type=int, default=3, help="attempts per image for transient errors (default 3)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds a file must stay unchanged before it is read (default 0.5)")
    p.add_argument("--delete-outputs", action="store_true",
                   help="deleting a source image also deletes its GLB (default: outputs are kept)")
    p.add_argument("--polling", action="store_true",
                   help="poll the folder instead of OS events (network drives, container mounts)")
    p.add_argument("--rescan", type=float, default=30.0, metavar="SECONDS",
                   help="also re-scan the drop folder (stat only) this often, for events the OS "
                        "dropped; 0 = never (default 30)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every decision")
    p.set_defaults(func=run)


def base_options(args: argparse.Namespace) -> dict:
    """CLI flags -> a GenerateOptions dict; flags not given keep the library defaults."""
    opts: dict = {}
    if args.backend:
        opts["backend"] = args.backend
    if args.seed is not None:
        opts["seed"] = args.seed
    export = {k: v for k, v in (("faces", args.faces), ("texture_size", args.texture_size),
                                 ("texture_format", args.texture_format), ("height", args.height),
                                 ("lods", args.lods), ("collision", args.collision))
              if v is not None}
    if export:
        opts["export"] = export
    return opts


def run(args: argparse.Namespace) -> int:
    import os

    from propforge_server.watch import WatchConfig, Watcher, project_layout

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S")
    if args.retries < 1 or args.workers < 0 or args.settle < 0 or args.rescan < 0:
        raise InputError("--retries must be >= 1; --workers, --settle and --rescan >= 0")
    layout = project_layout(args.project, args.engine)
    config = WatchConfig(options=base_options(args), workers=args.workers, settle_s=args.settle,
                         max_attempts=args.retries, delete_outputs=args.delete_outputs, polling=args.polling,
                         rescan_s=args.rescan)
    runner = None
    if args.server:
        from propforge_server.watch import RemoteRunner
        runner = RemoteRunner(args.server, token=args.token or os.environ.get("PROPFORGE_TOKEN") or None)
    watcher = Watcher(layout, config, runner)
    where = f"server {args.server}" if args.server else "this process"
    print(f"propforge watch: {layout.engine} project {layout.root}\n"
          f"  drop images into {layout.drop}\n  GLBs appear in   {layout.output}\n  generating in {where}",
          file=sys.stderr)
    if args.once:
        stats = watcher.run_once()
        print("propforge watch: " + ", ".join(f"{v} {k}" for k, v in stats.items()), file=sys.stderr)
        return 1 if stats["failed"] else 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watcher.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    print("propforge watch: stopping (unfinished images resume on the next start)", file=sys.stderr)
    watcher.stop()
    return 0
