"""`propforge make-tiny-checkpoint DIR`: a random TRELLIS.2 checkpoint in the hub layout.

For tests and CI (``--preset tiny``, seconds on a CPU) and GPU benchmarks (``--preset full``: the
released configs with random weights, ~16 GB). Use it with ``--backend trellis2 --model DIR``.
The output is noise-shaped, not a real asset: it exercises loading and every pipeline stage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "make-tiny-checkpoint", help="write a random TRELLIS.2 checkpoint (hub layout) for tests/benchmarks",
        description="Write pipeline.json, ckpts/*.json + *.safetensors and a DINOv3 folder with random "
                    "weights in the exact layout of microsoft/TRELLIS.2-4B, so `--backend trellis2 --model DIR` "
                    "runs without a download. Outputs are noise, not real assets.")
    p.add_argument("dir", metavar="DIR", help="output folder (created; must be empty or absent)")
    p.add_argument("--preset", choices=("tiny", "full"), default="tiny",
                   help="tiny: small widths, CPU-friendly (default); full: released sizes (~16 GB, use a GPU)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps in pipeline.json (tiny 3, full 12)")
    p.add_argument("--ss-tokens", type=int, default=None,
                   help="target occupied 32^3 cells of the structure stage (tiny 32, full 8192)")
    p.add_argument("--device", default=None, help="where to draw the weights (default: cuda if present)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from propforge.errors import InputError
    from propforge.trellis2.tiny import write_checkpoint

    out = Path(args.dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; choose a new one")
    if args.steps is not None and not (1 <= args.steps <= 100):
        raise InputError(f"--steps must be between 1 and 100, got {args.steps}")
    if args.ss_tokens is not None and not (1 <= args.ss_tokens <= 32768):
        raise InputError(f"--ss-tokens must be between 1 and 32768, got {args.ss_tokens}")
    root = write_checkpoint(out, args.preset, seed=args.seed, device=args.device, steps=args.steps,
                            ss_tokens=args.ss_tokens)
    print(f"wrote {args.preset} TRELLIS.2 checkpoint to {root}", file=sys.stderr)
    print(root)
    return 0
