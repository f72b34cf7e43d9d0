"""The Khronos glTF validator (npm `gltf-validator`), called through node on GLB bytes or files.

Used by the test-suite on every GLB we emit, and available to users (`propforge validate`).
The node project lives in tools/gltf_validator (``npm install`` there, done by .ci/run).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_TOOL_DIR = Path(os.environ.get("PROPFORGE_GLTF_VALIDATOR_DIR",
                                Path(__file__).resolve().parents[2] / "tools" / "gltf_validator"))


@dataclass
class ValidationReport:
    num_errors: int
    num_warnings: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.num_errors == 0


def validator_available() -> bool:
    return shutil.which("node") is not None and (_TOOL_DIR / "node_modules" / "gltf-validator").is_dir()


def validate_files(paths: list[str | os.PathLike]) -> list[ValidationReport]:
    if not validator_available():
        raise RuntimeError(f"glTF validator not installed: run `npm install` in {_TOOL_DIR}")
    proc = subprocess.run(["node", str(_TOOL_DIR / "validate.js"), *map(str, paths)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"glTF validator failed: {proc.stderr.strip()}")
    out = []
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        out.append(ValidationReport(d["numErrors"], d["numWarnings"], d["errors"], d["warnings"], d.get("info") or {}))
    return out


def validate_glb(data: bytes) -> ValidationReport:
    with tempfile.NamedTemporaryFile(suffix=".glb") as f:
        f.write(data)
        f.flush()
        return validate_files([f.name])[0]
