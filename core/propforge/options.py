"""Option records with validation. One place defines the limits the CLI, gRPC, HTTP and watch mode share."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Integral
from typing import Any

from .errors import InputError

TEXTURE_FORMATS = ("png", "jpeg", "webp")
PIPELINE_TYPES = ("512", "1024", "1024_cascade", "1536_cascade")
QUALITY_PRESETS = {"draft": "512", "standard": "1024_cascade", "high": "1536_cascade"}
COLLISION_KINDS = ("none", "convex", "mesh")
MAX_LODS = 4
#: export fields added after the first release, left out of option dicts while at their defaults:
#: option hashes (result cache, watch mode) and GLB metadata of plain jobs stay what they were
LATER_EXPORT_DEFAULTS = {"lods": 0, "collision": "none"}


@dataclass
class ExportOptions:
    """How an O-Voxel becomes a GLB (spec §4, adapted for engine-ready assets)."""

    faces: int = 20000                 # face budget after decimation
    texture_size: int = 1024           # square texture side, power of two
    texture_format: str = "png"        # png | jpeg | webp (webp also embeds a PNG fallback)
    height: float = 1.0                # real-world height in metres of the exported asset
    alpha_mode: str = "auto"           # auto | OPAQUE | MASK | BLEND
    lods: int = 0                      # extra levels of detail (LOD1..LODn), each about half the faces
    collision: str = "none"            # none | convex (hull, <= 255 faces) | mesh (decimated copy)

    def validate(self) -> "ExportOptions":
        if not (100 <= self.faces <= 2_000_000):
            raise InputError(f"faces must be between 100 and 2000000, got {self.faces}")
        ts = self.texture_size
        if ts not in (128, 256, 512, 1024, 2048, 4096):
            raise InputError(f"texture size must be one of 128, 256, 512, 1024, 2048, 4096, got {ts}")
        if self.texture_format not in TEXTURE_FORMATS:
            raise InputError(f"texture format must be one of {', '.join(TEXTURE_FORMATS)}, got {self.texture_format!r}")
        if not (0.01 <= self.height <= 1000.0):
            raise InputError(f"height must be between 0.01 and 1000 metres, got {self.height}")
        if self.alpha_mode not in ("auto", "OPAQUE", "MASK", "BLEND"):
            raise InputError(f"alpha mode must be auto, OPAQUE, MASK or BLEND, got {self.alpha_mode!r}")
        if isinstance(self.lods, bool) or not isinstance(self.lods, Integral) or not (0 <= self.lods <= MAX_LODS):
            raise InputError(f"lods must be an integer between 0 and {MAX_LODS}, got {self.lods!r}")
        if self.collision not in COLLISION_KINDS:
            raise InputError(f"collision must be one of {', '.join(COLLISION_KINDS)}, got {self.collision!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name, default in LATER_EXPORT_DEFAULTS.items():
            if d.get(name) == default:
                del d[name]
        return d


@dataclass
class GenerateOptions:
    """Everything a job asks for: backend + generator settings + export settings."""

    backend: str = "auto"              # auto | relief | trellis2
    seed: int = 0
    pipeline_type: str = ""            # trellis2 only; "" = the model's default
    model: str = ""                    # trellis2 only: hub id or local folder
    export: ExportOptions = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.export is None:
            self.export = ExportOptions()
        elif isinstance(self.export, dict):
            self.export = ExportOptions(**self.export)

    def validate(self) -> "GenerateOptions":
        if self.backend not in ("auto", "relief", "trellis2"):
            raise InputError(f"unknown backend {self.backend!r}; choose relief, trellis2 or auto")
        if not (0 <= int(self.seed) < 2**63):
            raise InputError(f"seed must be a non-negative 64-bit integer, got {self.seed}")
        if self.pipeline_type and self.pipeline_type not in PIPELINE_TYPES:
            raise InputError(f"pipeline type must be one of {', '.join(PIPELINE_TYPES)}, got {self.pipeline_type!r}")
        self.export.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["export"] = self.export.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenerateOptions":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls(**d)
