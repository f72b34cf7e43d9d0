"""`propforge validate FILE.glb ...`: run the Khronos glTF validator on files we (or others) wrote."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("validate", help="check GLB/glTF files with the Khronos glTF validator",
                              description="Check GLB/glTF files with the Khronos glTF validator "
                                          "(needs node and `npm install` in tools/gltf_validator). "
                                          "Exit code 1 if any file has errors.")
    p.add_argument("files", nargs="+", metavar="FILE", help=".glb or .gltf file(s)")
    p.add_argument("--json", action="store_true", help="print one JSON report per line on stdout")
    p.add_argument("--warnings", action="store_true", help="also list warnings")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from propforge.errors import BackendUnavailable, InputError
    from propforge.validate import validate_files, validator_available

    for f in args.files:
        path = Path(f)
        if not path.is_file():
            raise InputError(f"{f}: file not found" if not path.exists() else f"{f}: not a file")
    if not validator_available():
        raise BackendUnavailable("the glTF validator is not installed: run `npm install` in tools/gltf_validator")
    try:
        reports = validate_files(args.files)
    except RuntimeError as e:          # node itself failed: say so in one line
        raise BackendUnavailable(str(e)) from None
    bad = 0
    for f, rep in zip(args.files, reports):
        bad += not rep.ok
        if args.json:
            print(json.dumps({"file": f, "ok": rep.ok, "errors": rep.num_errors, "warnings": rep.num_warnings,
                              "messages": rep.errors + (rep.warnings if args.warnings else [])}))
            continue
        status = "ok" if rep.ok else "INVALID"
        print(f"{status}: {f} ({rep.num_errors} errors, {rep.num_warnings} warnings)")
        for msg in rep.errors + (rep.warnings if args.warnings else []):
            print(f"  {msg}")
    if bad and not args.json:
        print(f"propforge: {bad} of {len(reports)} files have errors", file=sys.stderr)
    return 1 if bad else 0
