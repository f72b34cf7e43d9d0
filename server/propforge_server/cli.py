"""`propforge` command line. Each sub-command lives in its own module exposing
``add_parser(subparsers)`` (which sets ``func``); this file only dispatches and turns user errors
into one clear line and a non-zero exit code (never a traceback)."""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module; a module that is not there yet is skipped.
COMMANDS = {
    "generate": "propforge_server.cmd_generate",
    "serve": "propforge_server.cmd_serve",
    "watch": "propforge_server.cmd_watch",
    "validate": "propforge_server.cmd_validate",
    "make-tiny-checkpoint": "propforge_server.cmd_tiny_checkpoint",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="propforge", description="Image -> engine-ready 3D props (GLB with PBR materials).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, mod_name in COMMANDS.items():
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from propforge.errors import PropForgeError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PropForgeError as e:
        print(f"propforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("propforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
